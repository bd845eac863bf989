/**
 * A budget that counts some tiers only is decided on a read (src/policy/decide.ts
 * `decidableUnread`), and its tier-down threshold must hold however many calls read it at once:
 * a call is served on the tier the threshold covers only if the budget was at or above the
 * threshold when its reservation was made. Concurrent calls on the embedded store and on Redis,
 * every reservation made before any call settles (the demo provider holds each call 4 s).
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { principalFromApiKey, hashApiKey } from '../../src/identity/apiKey.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const runtimes: Runtime[] = [];
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
});

let redis: TestRedis | undefined;
const root = uniquePrefix('tierdown-concurrent');
afterAll(async () => {
  if (!redis) return;
  await deleteKeys(redis.url, root);
  await redis.stop();
});

// A premium-only budget of 20,000 tokens that steps premium calls down under 70 % left, so a call
// is served on premium only while at most 6,000 tokens are held. Each call holds its input's bound
// ("Hello there": 11 bytes + 24 framing tokens) + 1,000 output = 1,035 tokens: the sixth premium
// call finds 5,175 held, the seventh 6,210. A budget with `tiers` is decided on a read.
const POLICY = basicPolicy({
  userTokens: 1_000_000,
  tierDownBelow: 0,
  extraBudgets: `  - id: premium-pool
    scope: user
    tiers: [premium]
    window: { calendar: month, timezone: UTC }
    limit: { tokens: 20000 }
    tierDown: { below: "70%" }`,
}).replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 4000 }');

describe.each(['memory', 'redis'] as const)('tier-down threshold of a tier-restricted budget under concurrent calls, %s store', (kind) => {
  it('serves on premium only the calls that found the budget at or above its threshold', { timeout: 60_000 }, async () => {
    const sink = memorySink();
    let store: MemoryQuotaStore | RedisQuotaStore;
    let keyPrefix = 'tollgate:';
    if (kind === 'memory') store = new MemoryQuotaStore();
    else {
      redis ??= await startRedis();
      keyPrefix = `${root}:`;
      store = new RedisQuotaStore({ url: redis.url, prefix: keyPrefix, sweepIntervalMs: 0 });
    }
    const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_KEY_PREFIX: keyPrefix });
    const runtime = await buildRuntime(settings, { policy: parsePolicy(POLICY, 'tierdown.yaml'), sink, store });
    runtimes.push(runtime);
    const g = runtime.gateway;
    const principal = principalFromApiKey(g.policy.apiKeys.get(hashApiKey(KEYS.alice))!);

    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        g.complete({ principal, transport: 'cli', requestId: `c-${i}`, request: { messages: [{ role: 'user', content: 'Hello there' }], maxTokens: 1000, tier: 'premium' } }),
      ),
    );
    await g.idle();

    const tiers = results.map((r) => r.tier);
    expect(tiers.filter((t) => t === 'premium')).toHaveLength(6);
    expect(tiers.filter((t) => t === 'standard')).toHaveLength(34);
    // Every call stepped down says why: the premium budget's threshold.
    for (const r of results.filter((r) => r.tier === 'standard')) expect(r.decision).toMatchObject({ effect: 'tier_down', budgetId: 'premium-pool' });
    // One event per call, each with the tier it was served on.
    expect(sink.events).toHaveLength(40);
    expect(sink.events.filter((e) => e['tollgate.tier.served'] === 'premium')).toHaveLength(6);
  });
});
