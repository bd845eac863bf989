/**
 * A Redis that evicts keys under memory pressure (any maxmemory-policy but noeviction, with a
 * maxmemory) can drop the ledger's counters, reservations and journal, and then a budget is
 * beaten without an error anywhere. The store cannot prevent that; it says so when it connects,
 * and says so again whenever Redis has evicted keys since it last looked.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createClient } from '@keyv/redis';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { evictionState } from '../../src/quota/redisEviction.js';
import { captureLog } from '../helpers/log.js';
import { hourLine, startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';

describe('evictionState', () => {
  it('reads the policy, the memory limit and the evicted keys from INFO memory and INFO stats', () => {
    const info = '# Memory\r\nused_memory:1000\r\nmaxmemory:4194304\r\nmaxmemory_human:4.00M\r\nmaxmemory_policy:allkeys-lru\r\n# Stats\r\nevicted_keys:17\r\nexpired_keys:3\r\n';
    expect(evictionState(info)).toEqual({ policy: 'allkeys-lru', maxmemory: 4194304, evictedKeys: 17 });
  });

  it('gives nothing for an answer without the fields (a proxy that hides them)', () => {
    expect(evictionState('# Server\r\nredis_version:7.0.15\r\n')).toBeUndefined();
  });
});

describe('RedisQuotaStore on a Redis that evicts', () => {
  const servers: PrivateRedis[] = [];
  const stores: RedisQuotaStore[] = [];
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await Promise.all(servers.splice(0).map((r) => r.stop()));
  });

  const serve = async (args: string[]) => {
    const redis = await startPrivateRedis({ args });
    servers.push(redis);
    return redis;
  };
  const open = (redis: PrivateRedis, prefix: string) => {
    const log = captureLog();
    const store = new RedisQuotaStore({ url: redis.url, prefix, logger: log.logger, sweepIntervalMs: 0 });
    stores.push(store);
    return { store, log };
  };
  const logged = async (entries: Record<string, unknown>[], event: string) => {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const found = entries.find((e) => e.event === event);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 25));
    }
    return undefined;
  };
  /** Writes `mb` MB of other data, 100 KB a key, as another application sharing the server would. */
  const fill = async (url: string, mb: number) => {
    const client = createClient({ url });
    await client.connect();
    const value = 'x'.repeat(100_000);
    for (let i = 0; i < mb * 10; i++) await client.set(`other-app:${i}`, value);
    await client.quit();
  };

  it('shows the hazard: an evicted usage counter lets a reservation pass a spent budget', async () => {
    // 64 samples a pick: close to exact LRU, so the ledger's keys, idle for longer than a second
    // (the LRU clock's resolution) when the other data comes, are among the first to go.
    const redis = await serve(['--maxmemory', '4mb', '--maxmemory-policy', 'allkeys-lru', '--maxmemory-samples', '64']);
    const prefix = uniquePrefix('evict');
    const { store } = open(redis, prefix);
    expect((await store.reserve('r1', [hourLine(prefix, 90, 100)], 60_000)).ok).toBe(true);
    await store.settle('r1', [hourLine(prefix, 90, 100)]);
    expect((await store.reserve('r2', [hourLine(prefix, 50, 100)], 60_000)).ok).toBe(false);
    await new Promise((r) => setTimeout(r, 1100));
    await fill(redis.url, 8);
    // The counter that held 90 was the least recently used key: it is gone, and 50 more fit.
    expect((await store.read([hourLine(prefix, 0, 100)]))[0]!.used).toBe(0);
    expect((await store.reserve('r3', [hourLine(prefix, 50, 100)], 60_000)).ok).toBe(true);
  });

  it('logs an error on connecting to a Redis with an eviction policy and a memory limit', async () => {
    const redis = await serve(['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru']);
    const { log } = open(redis, uniquePrefix('evict'));
    const entry = await logged(log.entries, 'quota_store_evicts');
    expect(entry).toBeDefined();
    expect(entry!.level).toBe(50);
    expect(entry!.maxmemoryPolicy).toBe('allkeys-lru');
    expect(String(entry!.msg)).toContain('noeviction');
  });

  it('warns when the policy evicts but no memory limit is set yet', async () => {
    const redis = await serve(['--maxmemory', '0', '--maxmemory-policy', 'volatile-lru']);
    const { store, log } = open(redis, uniquePrefix('evict'));
    const entry = await logged(log.entries, 'quota_store_may_evict');
    expect(entry).toBeDefined();
    expect(entry!.level).toBe(40);
    expect(entry!.maxmemoryPolicy).toBe('volatile-lru');
    expect((await store.evictionCheck()).risk).toBe('possible');
  });

  it('says nothing on a Redis that never evicts', async () => {
    const redis = await serve(['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction']);
    const { store, log } = open(redis, uniquePrefix('evict'));
    await store.read([hourLine('x:', 0, 1)]);
    expect((await store.evictionCheck()).risk).toBe('none');
    expect(log.entries.filter((e) => String(e.event).startsWith('quota_store_') && String(e.event).includes('evict'))).toEqual([]);
  });

  it('logs an error with the count once Redis has evicted keys since the last check', async () => {
    const redis = await serve(['--maxmemory', '4mb', '--maxmemory-policy', 'allkeys-lru']);
    const { store, log } = open(redis, uniquePrefix('evict'));
    await logged(log.entries, 'quota_store_evicts');
    await store.evictionCheck();
    expect(log.entries.some((e) => e.event === 'quota_store_evicted')).toBe(false);
    await fill(redis.url, 8);
    const report = await store.evictionCheck();
    expect(report.evictedSinceLastCheck).toBeGreaterThan(0);
    const entry = log.entries.find((e) => e.event === 'quota_store_evicted');
    expect(entry).toBeDefined();
    expect(entry!.level).toBe(50);
    expect(entry!.evictedKeys).toBe(report.evictedSinceLastCheck);
    // Nothing new evicted: nothing new said.
    const before = log.entries.length;
    expect((await store.evictionCheck()).evictedSinceLastCheck).toBe(0);
    expect(log.entries.slice(before).some((e) => e.event === 'quota_store_evicted')).toBe(false);
  });
});
