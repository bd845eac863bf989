/**
 * Faults an operator meets on the Redis under the ledger, each on a private redis-server: a key of
 * another application on one of the ledger's names, and a Redis that comes back without the
 * ledger's keys (restarted without persistence, or flushed).
 */
import { createClient } from '@keyv/redis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine } from '../../src/quota/store.js';
import { captureLog } from '../helpers/log.js';
import { hourLine, startPrivateRedis, uniquePrefix, untilReachable, type PrivateRedis } from '../helpers/redis.js';

const TTL = 60_000;

describe('RedisQuotaStore against faults of its Redis', () => {
  const servers: PrivateRedis[] = [];
  const stores: RedisQuotaStore[] = [];
  let prefix: string;
  let log: ReturnType<typeof captureLog>;

  const serve = async (opts: { appendonly?: boolean; args?: string[] } = {}) => {
    const redis = await startPrivateRedis(opts);
    servers.push(redis);
    return redis;
  };
  const open = (redis: PrivateRedis) => {
    const store = new RedisQuotaStore({ url: redis.url, prefix, commandTimeoutMs: 500, logger: log.logger, sweepIntervalMs: 0 });
    stores.push(store);
    return store;
  };
  const line = (amount: number, limit = 100): LedgerLine => hourLine(prefix, amount, limit);
  /** Waits until the store answers again, without opening a new store. */
  const reachable = (store: RedisQuotaStore) => untilReachable(store, line(0));
  const logged = async (event: string) => {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const found = log.entries.find((e) => e.event === event);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 25));
    }
    return undefined;
  };
  const raw = async (redis: PrivateRedis) => {
    const client = createClient({ url: redis.url });
    await client.connect();
    return client;
  };

  beforeEach(() => {
    prefix = uniquePrefix('faults');
    log = captureLog();
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await Promise.all(servers.splice(0).map((r) => r.stop()));
  });

  it("refuses a reservation, naming the key, when another application's hash sits on a budget's usage counter", async () => {
    const redis = await serve();
    const store = open(redis);
    const client = await raw(redis);
    try {
      await client.hSet(line(0).usageKey, 'owner', 'someone else');
      // Refused, not read as 0 (a counter read as 0 admits a spent budget again); the read says so too.
      for (const attempt of [() => store.reserve('c1', [line(10)], TTL), () => store.read([line(0)])]) {
        const err = await attempt().then(
          () => undefined,
          (e: unknown) => e as Error,
        );
        expect(err).toBeInstanceOf(Error);
        expect(err!.message).toContain(`"${line(0).usageKey}" is a hash`);
        expect(err!.message).toContain('a string');
        expect(err!.message).toContain('TOLLGATE_KEY_PREFIX');
      }
      // Nothing was reserved or written and nothing was queued: the error is the operator's to fix, not an outage.
      expect(await client.exists(line(0).reservedKey)).toBe(0);
      expect(store.pendingReplays()).toBe(0);
    } finally {
      client.destroy();
    }
  });

  it('refuses a reservation on a usage counter that holds something other than a number, naming it', async () => {
    const redis = await serve();
    const store = open(redis);
    const client = await raw(redis);
    try {
      await client.set(line(0).usageKey, 'not a number');
      const err = await store.reserve('c1', [line(10)], TTL).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err!.message).toContain(`"${line(0).usageKey}" holds "not a number"`);
      expect(await client.exists(line(0).reservedKey)).toBe(0);
    } finally {
      client.destroy();
    }
  });

  it('logs an error when Redis comes back without the ledger (restarted without persistence)', async () => {
    const redis = await serve();
    const store = open(redis);
    expect(await store.reserve('c1', [line(60)], TTL)).toEqual({ ok: true });
    await store.settle('c1', [line(60)]);
    expect(await store.epochCheck()).toBe('same');
    await redis.restart();
    expect(await reachable(store)).toEqual([{ used: 0, reserved: 0 }]);
    const entry = await logged('quota_store_emptied');
    expect(entry).toBeDefined();
    expect(entry!.level).toBe(50);
    expect(String(entry!.msg)).toContain('counts from zero');
  });

  it('says nothing of the kind when Redis comes back with its data (AOF)', async () => {
    const redis = await serve({ appendonly: true });
    const store = open(redis);
    expect(await store.reserve('c1', [line(60)], TTL)).toEqual({ ok: true });
    await store.settle('c1', [line(60)]);
    expect(await store.epochCheck()).toBe('same');
    await redis.kill();
    await redis.restart();
    expect(await reachable(store)).toEqual([{ used: 60, reserved: 0 }]);
    expect(await store.epochCheck()).toBe('same');
    expect(log.entries.some((e) => e.event === 'quota_store_emptied')).toBe(false);
  });
});
