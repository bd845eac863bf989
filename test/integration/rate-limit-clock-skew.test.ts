/**
 * Two replicas sharing Redis, one whose clock is a whole bucket ahead (5 s, against a per-minute
 * limit in 12 buckets of 5 s). The replica ahead charges the bucket its clock names, which the
 * other's window does not read yet: before Redis's clock decided which bucket is current, each
 * replica admitted the limit in full, 10 calls at one instant against 5 a minute. Now a line whose
 * bucket does not hold Redis's time is refused by the script, and the replica resolves its lines
 * again at Redis's time.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { sha } from '../fixtures/policies.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const KEY = 'key-skew';
const POLICY = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
apiKeys:
  - { id: k-skew, sha256: ${sha(KEY)}, user: ada, teams: [research] }
rateLimits:
  - id: user-rpm
    scope: user
    requestsPerMinute: 5
`;

describe('a rate limit on Redis when the clock of one replica is ahead', () => {
  let redis: TestRedis;
  let prefix = uniquePrefix('skew');
  const runtimes: Runtime[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((r) => r.close()));
    await deleteKeys(redis.url, prefix);
    prefix = uniquePrefix('skew');
  });
  afterAll(async () => {
    await redis.stop();
  });

  /** A replica whose clock reads `aheadMs` past the machine's; its store runs on the real clock, as Redis does. */
  const replica = async (aheadMs: number) => {
    const settings = { ...settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), keyPrefix: prefix };
    const store = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0, logger: { info() {}, warn() {}, error() {} } });
    const rt = await buildRuntime(settings, { policy: parsePolicy(POLICY, 'skew.yaml'), store, sink: memorySink(), now: () => Date.now() + aheadMs });
    runtimes.push(rt);
    return rt;
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

  it.each([
    { name: 'the one ahead first', first: 5000, second: 0 },
    { name: 'the one on time first, then one a bucket behind', first: 0, second: -5000 },
  ])('admits 5 a minute across both, each charging the bucket Redis is in ($name)', { timeout: 30_000 }, async ({ first, second }) => {
    const [a, b] = await Promise.all([replica(first), replica(second)]);
    // Start just past a bucket edge, so that every call below falls in one bucket of the real clock.
    while (Date.now() % 5000 > 1000) await new Promise((r) => setTimeout(r, 50));
    const results: string[] = [];
    for (let i = 0; i < 5; i++) results.push(await call(a));
    for (let i = 0; i < 5; i++) results.push(await call(b));
    expect(results.slice(0, 5)).toEqual(Array(5).fill('served'));
    expect(results.slice(5)).toEqual(Array(5).fill('RATE_LIMITED'));
    await Promise.all(runtimes.map((r) => r.gateway.idle()));
  });
});
