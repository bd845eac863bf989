import { describe } from 'vitest';
import { chained, GENESIS, type EntryBody, type JournalEntry } from '../../src/quota/journal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { quotaStoreContract } from './store-contract.js';

/** A journal writer that keeps its entries in memory, chained as the file journal chains them. */
class ArrayJournal {
  readonly entries: JournalEntry[] = [];
  append(body: EntryBody): JournalEntry {
    const e = chained(this.entries.length + 1, this.entries[this.entries.length - 1]?.link ?? GENESIS, body);
    this.entries.push(e);
    return e;
  }
  async close(): Promise<void> {}
}

describe('MemoryQuotaStore', () => {
  let n = 0;
  quotaStoreContract({
    // One process, one ledger: every "replica" is the same store.
    open: (now, count) => {
      const store = new MemoryQuotaStore(now);
      return Array.from({ length: count }, () => store);
    },
    prefix: () => `mem${++n}:`,
  });
});

describe('MemoryQuotaStore with a journal', () => {
  let n = 0;
  let journal = new ArrayJournal();
  quotaStoreContract({
    open: (now, count) => {
      journal = new ArrayJournal();
      const store = new MemoryQuotaStore(now, journal);
      return Array.from({ length: count }, () => store);
    },
    prefix: () => `memj${++n}:`,
    journal: async () => journal.entries.map((e) => e.body),
    reserveEntries: true,
    keepsExpiredReservations: true,
  });
});
