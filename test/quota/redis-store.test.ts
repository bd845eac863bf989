import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';
import { quotaStoreContract } from './store-contract.js';

describe('RedisQuotaStore', () => {
  let redis: TestRedis;
  const root = uniquePrefix('store');
  let n = 0;

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await deleteKeys(redis.url, root);
    await redis.stop();
  });

  // Each open() is its own replica: a separate client on the same Redis.
  quotaStoreContract({
    open: (now, count) =>
      Array.from({ length: count }, () => new RedisQuotaStore({ url: redis.url, prefix: root, now, logger: pino({ level: 'silent' }) })),
    prefix: () => `${root}${++n}:`,
  });

  it('keeps every key of a line in the line\'s hash-tag slot', async () => {
    const { createClient } = await import('@keyv/redis');
    const client = createClient({ url: redis.url });
    await client.connect();
    try {
      const keys: string[] = [];
      for await (const batch of client.scanIterator({ MATCH: `${root}*{*`, COUNT: 500 })) keys.push(...batch);
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) expect(key).toMatch(/^[^{]*\{[^}]+\}/);
    } finally {
      client.destroy();
    }
  });
});
