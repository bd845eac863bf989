/**
 * The fixture a describe block of Redis ledger tests shares: the test Redis (started once), a raw
 * client to look at keys with, a key prefix of its own for every test, and the stores a test
 * opened, closed after it. Every key under the block's root is deleted at the end. Call it first
 * in the describe block (its hooks then run before the block's own) and read its fields inside
 * hooks and tests, once they are set.
 */
import { createClient } from '@keyv/redis';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from './redis.js';

export interface RedisSuite<S> {
  redis: TestRedis;
  raw: ReturnType<typeof createClient>;
  /** This test's key prefix: `<root><n>:`. */
  prefix: string;
  /** This test's number in the block, from 1. */
  n: number;
  /** Stores the test opened; closed after it. */
  stores: S[];
}

export function redisSuite<S extends { close(): Promise<unknown> }>(name: string): RedisSuite<S> {
  const root = uniquePrefix(name);
  const suite = { prefix: '', n: 0, stores: [] } as unknown as RedisSuite<S>;
  beforeAll(async () => {
    suite.redis = await startRedis();
    suite.raw = createClient({ url: suite.redis.url });
    await suite.raw.connect();
  });
  afterAll(async () => {
    suite.raw.destroy();
    await deleteKeys(suite.redis.url, root);
    await suite.redis.stop();
  });
  beforeEach(() => {
    suite.n += 1;
    suite.prefix = `${root}${suite.n}:`;
  });
  afterEach(async () => {
    await Promise.all(suite.stores.splice(0).map((s) => s.close()));
  });
  return suite;
}
