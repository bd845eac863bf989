/**
 * The drill from issue 16: Redis is SIGKILLed while calls hold reservations and restarted with its
 * AOF, so every acknowledged reservation comes back. Releases and refusals made during the outage
 * must be kept by the store and written once Redis is back: no reservation stays pinned until its
 * TTL, and every decision event reaches the journal and then the listeners, once.
 */
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { hourLine, startPrivateRedis, uniquePrefix, untilReachable, type PrivateRedis } from '../helpers/redis.js';

/** Far longer than the test: a reservation that is still there at the end was pinned, not expired. */
const TTL = 10 * 60_000;
const silent = pino({ level: 'silent' });

describe('RedisQuotaStore when Redis is killed and restarted with its AOF', () => {
  let redis: PrivateRedis;
  let prefix: string;
  const stores: RedisQuotaStore[] = [];
  const open = () => {
    const store = new RedisQuotaStore({ url: redis.url, prefix, commandTimeoutMs: 500, logger: silent });
    stores.push(store);
    return store;
  };
  const line = (amount: number, limit = 1000): LedgerLine => hourLine(prefix, amount, limit);
  /** Waits until the store answers again, without opening a new store. */
  const reachable = (store: RedisQuotaStore) => untilReachable(store, line(0));

  beforeEach(async () => {
    redis = await startPrivateRedis({ appendonly: true });
    prefix = uniquePrefix('aof');
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await redis.stop();
  });

  it('writes releases made while Redis was down once it is back, so no reservation stays pinned', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    for (const id of ['c1', 'c2', 'c3', 'c4']) expect(await store.reserve(id, [line(100)], TTL)).toEqual({ ok: true });
    await store.settle('c4', [line(60)], { 'request.id': 'c4', outcome: 'success' });

    await redis.kill();
    // The three calls end while Redis is down: their releases (with their events) are kept.
    for (const id of ['c1', 'c2', 'c3']) await store.release(id, { 'request.id': id, outcome: 'failed' });
    expect(store.pendingReplays()).toBe(3);
    expect(heard.map((e) => e['request.id'])).toEqual(['c4']);

    await redis.restart();
    await reachable(store);
    await store.flushReplays();

    expect(store.pendingReplays()).toBe(0);
    // The AOF brought back c1..c3's reservations; the replayed releases dropped them.
    expect(await store.read([line(0)])).toEqual([{ used: 60, reserved: 0 }]);
    expect(heard.map((e) => e['request.id'])).toEqual(['c4', 'c1', 'c2', 'c3']);
  });
});
