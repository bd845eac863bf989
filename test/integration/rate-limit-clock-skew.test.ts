/**
 * Two replicas sharing Redis, one whose clock is a whole bucket ahead of the other's. The replica
 * ahead charges the bucket its clock names, which the other's window does not read yet.
 *
 * - A rate limit (per minute, in 12 buckets of 5 s): before Redis's clock decided which bucket is
 *   current, each replica admitted the limit in full, 10 calls at one instant against 5 a minute.
 * - A rolling budget (an hour in 24 buckets of 150 s): the replica on time read a window without the
 *   bucket the one ahead had spent the budget in, and served calls on a budget already spent.
 *
 * Now a line whose bucket does not hold Redis's time is refused by the script, and the replica
 * resolves its lines again at Redis's time (a budget's lines read and decided again).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { STANDARD_HEAD, sha } from '../fixtures/policies.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const KEY = 'key-skew';
const policyWith = (limits: string) => `
${STANDARD_HEAD}apiKeys:
  - { id: k-skew, sha256: ${sha(KEY)}, user: ada, teams: [research] }
${limits}
`;
const RATE_LIMIT = policyWith(`
rateLimits:
  - id: user-rpm
    scope: user
    requestsPerMinute: 5
`);
const ROLLING_BUCKET_MS = 150_000;
/** `tiers` names the tiers the budget covers, so that calls are decided on budgets read rather than assumed untouched (decidableUnread). */
const rollingBudget = (tiers: string) =>
  policyWith(`
budgets:
  - id: ada-hourly
    scope: user
    window: { rolling: { hours: 1 }, buckets: 24 }
    limit: { tokens: 120 }
${tiers}
`);

describe('limits on Redis when the clock of one replica is a bucket off', () => {
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

  /** A replica whose clock reads `aheadMs` past the machine's (its store's too); Redis's TIME is the machine's. */
  const replica = async (policy: string, aheadMs: number) => {
    const settings = { ...settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), keyPrefix: prefix };
    const now = () => Date.now() + aheadMs;
    const store = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0, now, checkBuckets: true, logger: { info() {}, warn() {}, error() {} } });
    const rt = await buildRuntime(settings, { policy: parsePolicy(policy, 'skew.yaml'), store, sink: memorySink(), now });
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
  /** Waits until `left` ms or more of the real clock's current bucket remain, so that the calls below fall in one bucket. */
  const awayFromEdge = async (bucketMs: number, left: number) => {
    while (bucketMs - (Date.now() % bucketMs) < left) await new Promise((r) => setTimeout(r, 50));
  };

  it.each([
    { name: 'the one ahead first', first: 5000, second: 0 },
    { name: 'the one on time first, then one a bucket behind', first: 0, second: -5000 },
  ])('a rate limit admits 5 a minute across both, each charging the bucket Redis is in ($name)', { timeout: 30_000 }, async ({ first, second }) => {
    const [a, b] = await Promise.all([replica(RATE_LIMIT, first), replica(RATE_LIMIT, second)]);
    await awayFromEdge(5000, 4000);
    const results: string[] = [];
    for (let i = 0; i < 5; i++) results.push(await call(a));
    for (let i = 0; i < 5; i++) results.push(await call(b));
    expect(results.slice(0, 5)).toEqual(Array(5).fill('served'));
    expect(results.slice(5)).toEqual(Array(5).fill('RATE_LIMITED'));
    await Promise.all(runtimes.map((r) => r.gateway.idle()));
  });

  // Lines resolved at Redis's time end at Redis's time: a charge's counter lifetime counted from the
  // replica's own clock was gone before it began, and the replica's settled calls counted nowhere.
  it.each([
    { name: 'three hours ahead', aheadMs: 3 * 3_600_000 },
    { name: 'three hours behind', aheadMs: -3 * 3_600_000 },
  ])('a replica $name of Redis counts its calls: a rate limit admits 5 a minute, a rolling budget runs out', { timeout: 30_000 }, async ({ aheadMs }) => {
    const limited = await replica(RATE_LIMIT, aheadMs);
    await awayFromEdge(5000, 4000);
    const results: string[] = [];
    for (let i = 0; i < 7; i++) results.push(await call(limited));
    expect(results).toEqual([...Array(5).fill('served'), 'RATE_LIMITED', 'RATE_LIMITED']);
    const budgeted = await replica(rollingBudget(''), aheadMs);
    await awayFromEdge(ROLLING_BUCKET_MS, 5000);
    const spent: string[] = [];
    while (spent.length < 30 && spent.at(-1) !== 'BUDGET_EXHAUSTED') spent.push(await call(budgeted));
    expect(spent.at(-1)).toBe('BUDGET_EXHAUSTED');
    expect(spent.slice(0, -1)).toEqual(Array(spent.length - 1).fill('served'));
    await Promise.all(runtimes.map((r) => r.gateway.idle()));
  });

  it.each([
    { name: 'the one ahead first', first: ROLLING_BUCKET_MS, second: 0, tiers: '' },
    { name: 'the one on time first, then one a bucket behind', first: 0, second: -ROLLING_BUCKET_MS, tiers: '' },
    { name: 'the one ahead first, budgets read', first: ROLLING_BUCKET_MS, second: 0, tiers: '    tiers: [standard]' },
    { name: 'the one on time first, then one a bucket behind, budgets read', first: 0, second: -ROLLING_BUCKET_MS, tiers: '    tiers: [standard]' },
  ])('a rolling budget spent on one replica is spent on the other ($name)', { timeout: 30_000 }, async ({ first, second, tiers }) => {
    const policy = rollingBudget(tiers);
    const [a, b] = await Promise.all([replica(policy, first), replica(policy, second)]);
    await awayFromEdge(ROLLING_BUCKET_MS, 5000);
    const onA: string[] = [];
    while (onA.length < 30 && onA.at(-1) !== 'BUDGET_EXHAUSTED') onA.push(await call(a));
    await a.gateway.idle();
    expect(onA.at(-1)).toBe('BUDGET_EXHAUSTED');
    // Every call before it served: none refused on the way to the store's clock.
    expect(onA.length).toBeGreaterThan(2);
    expect(onA.slice(0, -1)).toEqual(Array(onA.length - 1).fill('served'));
    expect(await call(b)).toBe('BUDGET_EXHAUSTED');
    await Promise.all(runtimes.map((r) => r.gateway.idle()));
  });
});
