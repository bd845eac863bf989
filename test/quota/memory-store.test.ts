import { describe, expect, it } from 'vitest';
import { chained, GENESIS, type EntryBody, type JournalEntry } from '../../src/quota/journal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { LedgerLine } from '../../src/quota/store.js';
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

describe('MemoryQuotaStore settled ids', () => {
  const NOW = Date.parse('2026-11-30T10:00:00Z');
  const line: LedgerLine = { budgetId: 'weekly', subject: 'alice', usageKey: 'm:{weekly|alice}:u:1', readKeys: ['m:{weekly|alice}:u:1'], reservedKey: 'm:{weekly|alice}:r', limit: 1e9, amount: 1, expiresAt: NOW + 86_400_000 };
  const used = async (store: MemoryQuotaStore) => (await store.read([line]))[0]!.used;

  it('remembers the newest settledMax settled ids and no more: a repeat of an older one is charged again', async () => {
    const store = new MemoryQuotaStore(() => NOW, undefined, { settledMax: 100 });
    for (let i = 0; i < 250; i++) await store.settle(`r${i}`, [line]);
    await store.settle('r249', [line]);
    await store.settle('r150', [line]);
    expect(await used(store)).toBe(250);
    await store.settle('r149', [line]);
    expect(await used(store)).toBe(251);
    // id, remembered until: 100 ids, the newest, oldest first.
    const settled = store.snapshot().settled as unknown[];
    expect([settled.length, settled[0], settled.at(-2)]).toEqual([200, 'r151', 'r149']);
  });

  it('keeps the newest settledMax ids of a snapshot written under a larger bound', () => {
    const store = new MemoryQuotaStore(() => NOW, undefined, { settledMax: 2 });
    store.restore([{ kind: 'snapshot', id: 'snapshot-1', at: NOW, state: { settled: ['a', NOW + 1, 'b', NOW + 2, 'c', NOW + 3] } }]);
    expect(store.snapshot().settled).toEqual(['b', NOW + 2, 'c', NOW + 3]);
  });
});
