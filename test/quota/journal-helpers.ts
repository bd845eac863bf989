/** Reading a Redis ledger's journal back in tests, through a store of its own. */
import { pino } from 'pino';
import type { EntryBody, JournalEntry } from '../../src/quota/journal.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';

const silent = pino({ level: 'silent' });

/** Every entry under `prefix`, with the stream it sits in, stream by stream in order. */
export async function journalOf(target: { url?: string; clusterNodes?: string[] }, prefix: string): Promise<{ stream: string; streamId: string; entry: JournalEntry }[]> {
  const store = new RedisQuotaStore({ ...target, prefix, logger: silent, sweepIntervalMs: 0 });
  try {
    const out: { stream: string; streamId: string; entry: JournalEntry }[] = [];
    for await (const e of store.journalEntries()) out.push(e);
    return out;
  } finally {
    await store.close();
  }
}

export async function journalBodies(target: { url?: string; clusterNodes?: string[] }, prefix: string): Promise<EntryBody[]> {
  return (await journalOf(target, prefix)).map((e) => e.entry.body);
}
