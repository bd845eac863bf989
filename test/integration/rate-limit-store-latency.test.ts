/**
 * One replica on one Redis, one clock, but a loaded event loop: a reservation reaches Redis some
 * time after its limit lines were resolved, and its answer is read later still. Measured under the
 * probe's load (40 loopers, 30 a second): 85 ms from the lines to the script typically, 278 ms at
 * worst, more than a per-second limit's 100 ms bucket.
 *
 * Before, the script refused such a line as skewed, and the replica took the middle of the round
 * trip for Redis's time: ±100 to 350 ms "offsets" with no skew at all, every call's lines then
 * named a bucket Redis was not in, and calls were refused QUOTA_STORE_UNAVAILABLE after three tries.
 * The delays here are injected around the store (before the script, after its answer), so the test
 * does not depend on the machine's load.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '@keyv/redis';
import { GatewayError } from '../../src/errors.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { limitLine } from '../../src/policy/limits.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { QuotaStore } from '../../src/quota/store.js';
import { STANDARD_HEAD, sha } from '../fixtures/policies.js';
import { deleteKeys, redisTimeMs, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const KEY = 'key-late';
const policy = (perSecond: number) => `
${STANDARD_HEAD}apiKeys:
  - { id: k-late, sha256: ${sha(KEY)}, user: ada, teams: [research] }
rateLimits:
  - id: user-rps
    scope: user
    requestsPerSecond: ${perSecond}
`;
const quiet = { info() {}, warn() {}, error() {} };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `store` with every reservation held `beforeMs` before it is sent and its answer `afterMs` before it is read: a busy event loop. */
function slowed(store: RedisQuotaStore, beforeMs: number, afterMs: number): QuotaStore {
  const reserve: QuotaStore['reserve'] = async (...args) => {
    await sleep(beforeMs);
    try {
      return await store.reserve(...args);
    } finally {
      await sleep(afterMs);
    }
  };
  return new Proxy(store, {
    get(target, name) {
      if (name === 'reserve') return reserve;
      const value = Reflect.get(target, name) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe('a per-second limit on Redis when reservations reach Redis late', () => {
  let redis: TestRedis;
  let prefix = uniquePrefix('late');
  const runtimes: Runtime[] = [];
  const stores: RedisQuotaStore[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((r) => r.close()));
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await deleteKeys(redis.url, prefix);
    prefix = uniquePrefix('late');
  });
  afterAll(async () => {
    await redis.stop();
  });

  const replica = async (perSecond: number, beforeMs: number, afterMs: number) => {
    const settings = { ...settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), keyPrefix: prefix };
    const store = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0, logger: quiet });
    const rt = await buildRuntime(settings, { policy: parsePolicy(policy(perSecond), 'late.yaml'), store: slowed(store, beforeMs, afterMs), sink: memorySink() });
    runtimes.push(rt);
    return { rt, store };
  };
  const call = async (rt: Runtime): Promise<string> => {
    const { principal } = await rt.gateway.authenticate({ secret: KEY }, { transport: 'cli' });
    try {
      await rt.gateway.complete({ principal, transport: 'cli', request: { messages: [{ role: 'user', content: 'hi' }], tier: 'standard', maxTokens: 10 } });
      return 'served';
    } catch (err) {
      return err instanceof GatewayError ? err.code : String(err);
    }
  };

  it('serves calls whose reservation reaches Redis 150 ms late and is read 400 ms later, and learns no clock offset', { timeout: 30_000 }, async () => {
    const { rt, store } = await replica(30, 150, 400);
    const results: string[] = [];
    for (let i = 0; i < 4; i++) results.push(await call(rt));
    expect(results).toEqual(['served', 'served', 'served', 'served']);
    expect(store.clockOffsetMs()).toBe(0);
    await rt.gateway.idle();
  });

  it('still admits no more than the limit in a second: 3 of 6 calls at once, the rest RATE_LIMITED', { timeout: 30_000 }, async () => {
    const { rt } = await replica(3, 150, 400);
    const results = await Promise.all(Array.from({ length: 6 }, () => call(rt)));
    expect(results.filter((r) => r === 'served')).toHaveLength(3);
    expect(results.filter((r) => r === 'RATE_LIMITED')).toHaveLength(3);
    await rt.gateway.idle();
  });

  it('charges a late reservation in the bucket Redis is in, and recovery would charge that bucket too', { timeout: 30_000 }, async () => {
    const store = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0, logger: quiet });
    stores.push(store);
    const compiled = parsePolicy(policy(30), 'late.yaml').rateLimits[0]!;
    const client = createClient({ url: redis.url });
    await client.connect();
    try {
      // Lines resolved 250 ms before Redis runs the script: two or three 100 ms buckets late (five at most is tolerated).
      const line = limitLine(compiled, 'ada', (await redisTimeMs(client)) - 250, prefix);
      const outcome = await store.reserve('late-1', [line.one], 60_000, { units: {}, limits: { 'user-rps': 'requests' } });
      expect(outcome.ok).toBe(true);
      const late = outcome.ok ? (outcome.late?.[0] ?? 0) : 0;
      expect(late).toBeGreaterThanOrEqual(2);
      expect(late).toBeLessThanOrEqual(5);
      const charged = line.line.lateKeys![late - 1]!;
      const info = await client.hGet(line.line.reservedKey + ':i', 'late-1');
      expect(info).toContain(`"usageKey":"${charged}"`);
      expect(info).toContain(`"expiresAt":${line.line.expiresAt + late * 100}`);
    } finally {
      await client.quit();
    }
  });

  it('keeps the narrowest measurement of a real offset: a slower one does not move it, a clock that stepped does', { timeout: 30_000 }, async () => {
    const store = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0, checkBuckets: true, logger: quiet });
    stores.push(store);
    // Redis 5 s ahead, measured over a 600 ms round trip: the offset is within [4700, 5300].
    expect(store.learnTime(105_000, 100_000 - 300, 100_000 + 300)).toBe(5000);
    // A 20 ms round trip narrows it to [4990, 5010]; 5000 stays.
    expect(store.learnTime(205_000, 200_000 - 10, 200_000 + 10)).toBeUndefined();
    // A 2 s round trip whose middle says 4200 proves nothing against it.
    expect(store.learnTime(304_200, 300_000 - 1000, 300_000 + 1000)).toBeUndefined();
    expect(store.clockOffsetMs()).toBe(5000);
    // Its clock stepped: 8 s now, whatever was measured before.
    expect(store.learnTime(408_000, 400_000 - 5, 400_000 + 5)).toBe(8000);
  });
});
