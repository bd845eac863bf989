/**
 * Group commit on one Redis node (src/quota/groupCommit.ts): reservations and settlements made while
 * one is in flight go together as one RESERVE_MANY or SETTLE_MANY. What must not change: a limit
 * admits exactly what fits; each call charged once,
 * each with its own entry and event in the chain, the audit passing; a call whose script raises
 * fails alone; a batch lost to an outage is replayed and still counts once. Each test has a private
 * redis-server, so its command counts are this store's alone.
 */
import { createClient } from '@keyv/redis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lineKeys } from '../../src/policy/budgets.js';
import { GroupCommit } from '../../src/quota/groupCommit.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { captureLog } from '../helpers/log.js';
import { startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';
import { journalOf } from './journal-helpers.js';

const HOUR = 3600_000;
const TTL = 60_000;

describe('reservations and settlements grouped on one Redis node', () => {
  let redis: PrivateRedis;
  let raw: ReturnType<typeof createClient>;
  let store: RedisQuotaStore;
  const prefix = uniquePrefix('groupcommit');
  const start = Math.floor(Date.now() / HOUR) * HOUR;
  const line = (budgetId: string, subject: string, amount: number): LedgerLine => ({
    budgetId,
    subject,
    limit: 1_000_000,
    amount,
    expiresAt: start + 2 * HOUR,
    ...lineKeys(prefix, budgetId, subject, [start], start),
  });
  const lines = (i: number, amount: number) => [line('team', 'ml', amount), line('user', `u${i % 5}`, amount)];
  const event = (id: string): DecisionRecord => ({ event: 'tollgate.decision', 'request.id': id, outcome: 'success', 'user.id': 'ada', 'gen_ai.usage.input_tokens': 3, 'gen_ai.usage.output_tokens': 4 });
  const evalshaCalls = async (): Promise<number> => {
    const stats = await raw.info('commandstats');
    return Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  };

  beforeEach(async () => {
    redis = await startPrivateRedis();
    raw = createClient({ url: redis.url });
    await raw.connect();
    store = new RedisQuotaStore({ url: redis.url, prefix, commandTimeoutMs: 300, logger: captureLog().logger, sweepIntervalMs: 0 });
  });

  afterEach(async () => {
    await store.close();
    raw.destroy();
    await redis.stop();
  });

  it('settles 60 concurrent calls in a few commands: each charged once, with its own entry and event, and the audit passes', async () => {
    const n = 60;
    for (let i = 0; i < n; i++) expect(await store.reserve(`c${i}`, lines(i, 50), TTL, { user: 'ada' }, { dispatching: true })).toEqual({ ok: true });
    const before = await evalshaCalls();
    await Promise.all(Array.from({ length: n }, (_, i) => store.settle(`c${i}`, lines(i, i + 1), event(`c${i}`))));
    const scripts = (await evalshaCalls()) - before;
    // One settlement goes alone; the 59 that come while it is in flight go in batches of at most 32.
    expect(scripts).toBeLessThanOrEqual(10);
    expect(scripts).toBeGreaterThanOrEqual(2);

    const total = (n * (n + 1)) / 2;
    expect(await store.read([line('team', 'ml', 0)])).toEqual([{ used: total, reserved: 0 }]);
    let perUser = 0;
    for (let u = 0; u < 5; u++) perUser += (await store.read([line('user', `u${u}`, 0)]))[0]!.used;
    expect(perUser).toBe(total);
    const settles = (await journalOf({ url: redis.url }, prefix)).map((e) => e.entry);
    expect(settles.map((e) => e.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(new Set(settles.map((e) => e.body.id)).size).toBe(n);
    for (const e of settles) expect(e.body.event?.['request.id']).toBe(e.body.id);
    expect((await store.verify()).ok).toBe(true);
  });

  it('reserves 40 concurrent calls against room for 25 in a few commands: exactly 25 admitted, 15 refused with what they saw', async () => {
    const tight = (amount: number): LedgerLine => ({ ...line('user', 'tight', amount), limit: 25 * 40 });
    const before = await evalshaCalls();
    const outcomes = await Promise.all(Array.from({ length: 40 }, (_, i) => store.reserve(`r${i}`, [line('team', 'ml', 40), tight(40)], TTL, undefined, { dispatching: true })));
    const scripts = (await evalshaCalls()) - before;
    expect(scripts).toBeLessThanOrEqual(8);
    expect(outcomes.filter((o) => o.ok)).toHaveLength(25);
    const refused = outcomes.filter((o) => !o.ok);
    expect(refused).toHaveLength(15);
    for (const r of refused) expect(r).toMatchObject({ ok: false, budgetId: 'user', subject: 'tight', used: 0, reserved: 1000, limit: 1000, requested: 40 });
    expect(await store.read([tight(0), line('team', 'ml', 0)])).toEqual([
      { used: 0, reserved: 1000 },
      { used: 0, reserved: 1000 },
    ]);
  });

  it('reserves and settles one call at a time with RESERVE and SETTLE alone: one command each, as before', async () => {
    const before = await evalshaCalls();
    for (let i = 0; i < 5; i++) await store.reserve(`s${i}`, lines(i, 10), TTL, undefined, { dispatching: true });
    for (let i = 0; i < 5; i++) await store.settle(`s${i}`, lines(i, 2), event(`s${i}`));
    expect((await evalshaCalls()) - before).toBe(10);
    expect((await store.verify()).ok).toBe(true);
  });

  it('a call whose script raises fails alone; the others in its batch are charged and journaled', async () => {
    for (let i = 0; i < 4; i++) await store.reserve(`w${i}`, [line('user', `w${i}`, 10)], TTL, undefined, { dispatching: true });
    // w2's usage counter is a hash: its INCRBY raises WRONGTYPE inside the batch.
    await raw.hSet(line('user', 'w2', 0).usageKey, 'x', '1');
    const settled = await Promise.allSettled([0, 1, 2, 3].map((i) => store.settle(`w${i}`, [line('user', `w${i}`, 5)], event(`w${i}`))));
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(String((settled[2] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    for (const i of [0, 1, 3]) expect(await store.read([line('user', `w${i}`, 0)])).toEqual([{ used: 5, reserved: 0 }]);
    expect((await journalOf({ url: redis.url }, prefix)).map((e) => e.entry.body.id)).toEqual(['w0', 'w1', 'w3']);
  });

  it('a batch lost to a frozen server is replayed and counts once', async () => {
    const n = 12;
    for (let i = 0; i < n; i++) await store.reserve(`f${i}`, lines(i, 20), TTL, undefined, { dispatching: true });
    redis.freeze();
    // Every settle times out (300 ms) and is queued for replay; the scripts sent may still run once the server wakes.
    await Promise.all(Array.from({ length: n }, (_, i) => store.settle(`f${i}`, lines(i, 3), event(`f${i}`))));
    expect(store.pendingReplays()).toBeGreaterThan(0);
    redis.thaw();
    await store.flushReplays();
    expect(store.pendingReplays()).toBe(0);
    expect(await store.read([line('team', 'ml', 0)])).toEqual([{ used: 3 * n, reserved: 0 }]);
    const entries = (await journalOf({ url: redis.url }, prefix)).map((e) => e.entry.body.id);
    expect(entries.sort()).toEqual(Array.from({ length: n }, (_, i) => `f${i}`).sort());
    expect((await store.verify()).ok).toBe(true);
  });
});

describe('GroupCommit', () => {
  it('sends the first at once, the rest together after it, and keeps each reply with its call', async () => {
    const sent: number[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const batcher = new GroupCommit(async (batch) => {
      sent.push(batch.map((b) => Number(b.args[0])));
      if (sent.length === 1) await gate;
      return batch.map((b) => (b.args[0] === 4 ? new Error('ERR four') : `ok ${String(b.args[0])}`));
    }, { maxBatch: 3 });
    const replies = [1, 2, 3, 4, 5, 6].map((i) => batcher.submit([], [i]));
    expect(sent).toEqual([[1]]);
    expect(batcher.waiting).toBe(5);
    release();
    const settled = await Promise.allSettled(replies);
    expect(sent).toEqual([[1], [2, 3, 4], [5, 6]]);
    expect(settled.map((s) => (s.status === 'fulfilled' ? s.value : String(s.reason)))).toEqual(['ok 1', 'ok 2', 'ok 3', 'Error: ERR four', 'ok 5', 'ok 6']);
  });

  it('fails every call of a batch that fails, and goes on with the next', async () => {
    let calls = 0;
    const batcher = new GroupCommit(async (batch) => {
      calls++;
      if (calls === 2) throw new Error('connection lost');
      return batch.map(() => 'ok');
    });
    const replies = [1, 2, 3].map((i) => batcher.submit([], [i]));
    const later = batcher.submit([], [4]);
    const settled = await Promise.allSettled([...replies, later]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected']);
    expect(await batcher.submit([], [5])).toBe('ok');
  });

  it('fails the calls still waiting at once when a batch fails with an outage (they were never sent)', async () => {
    const sent: number[][] = [];
    const outage = new Error('unreachable');
    const batcher = new GroupCommit(
      async (batch) => {
        sent.push(batch.map((b) => Number(b.args[0])));
        if (sent.length === 1) throw outage;
        return batch.map(() => 'ok');
      },
      { maxBatch: 2, failsQueue: (err) => err === outage },
    );
    const settled = await Promise.allSettled([1, 2, 3, 4].map((i) => batcher.submit([], [i])));
    expect(sent).toEqual([[1]]);
    expect(settled.map((s) => (s.status === 'rejected' ? s.reason : s.value))).toEqual([outage, outage, outage, outage]);
    expect(await batcher.submit([], [5])).toBe('ok');
  });

  it('rejects a batch answered with the wrong number of replies instead of mismatching them', async () => {
    const batcher = new GroupCommit(async () => ['only one']);
    const first = batcher.submit([], [1]);
    const rest = [batcher.submit([], [2]), batcher.submit([], [3])];
    expect(await first).toBe('only one');
    for (const r of await Promise.allSettled(rest)) expect(r.status).toBe('rejected');
  });
});
