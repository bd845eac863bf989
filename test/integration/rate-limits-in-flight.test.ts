/**
 * A concurrency cap holds a slot for as long as its call runs, on the embedded store and on Redis,
 * even when the call outlives its reservation TTL (a long stream, a provider that answers slowly):
 * the gateway renews the reservations of the calls it has in flight, so no store takes a live
 * call's slot back as if its replica had died.
 */
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { GatewayError } from '../../src/errors.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { RENEW_CHECK_MS } from '../../src/pipeline/ledger.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { QuotaStore } from '../../src/quota/store.js';
import { heldProvider } from '../helpers/heldProvider.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const TTL_S = 30;
const policyText = `version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
limits: { reservationTtlSeconds: ${TTL_S} }
rateLimits:
  - { id: one-at-a-time, scope: user, concurrent: 1 }
`;
const ada: Principal = { user: 'ada', teams: [], groups: [], roles: [], authMethod: 'api_key', credentialId: 'k-ada' };
const ask = { messages: [{ role: 'user' as const, content: 'a long answer' }], maxTokens: 20 };

describe('a cap holds its slot for a call that outlives its reservation TTL', () => {
  let redis: TestRedis;
  const prefix = uniquePrefix('inflight');
  let runtime: Runtime | undefined;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await deleteKeys(redis.url, prefix);
    await redis.stop();
  });
  afterEach(async () => {
    vi.useRealTimers();
    await runtime?.close();
    runtime = undefined;
  });

  const stores: Record<string, (now: () => number) => QuotaStore> = {
    // The embedded store without a journal (the fail-open fallback, `serve` without a data directory) lets lapsed reservations go.
    memory: (now) => new MemoryQuotaStore(now),
    redis: (now) => new RedisQuotaStore({ url: redis.url, prefix, now, logger: pino({ level: 'silent' }), sweepIntervalMs: 0 }),
  };

  for (const [kind, open] of Object.entries(stores)) {
    it(`refuses a second call while the first is still at the provider ${TTL_S * 2} s later (${kind})`, async () => {
      // The renewal check runs on an interval: the test fires it instead of waiting for it.
      vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
      let now = Date.parse('2026-11-30T10:00:00Z');
      const clock = () => now;
      const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_KEY_PREFIX: prefix });
      runtime = await buildRuntime(settings, { policy: parsePolicy(policyText, 'inflight.yaml'), sink: memorySink(), store: open(clock), now: clock });
      const gateway = runtime.gateway;
      const held = heldProvider();
      gateway.replacePolicy(gateway.policy, new Map([['demo', held.provider]]));

      const first = gateway.complete({ principal: ada, transport: 'cli', request: ask });
      await held.arrived;
      for (let waited = 0; waited < TTL_S * 2; waited += 10) {
        now += 10_000;
        vi.advanceTimersByTime(RENEW_CHECK_MS);
        await gateway.idle();
      }
      let second: string | undefined;
      const answered = gateway.complete({ principal: ada, transport: 'cli', request: ask }).then(
        () => (second = 'served'),
        (err: GatewayError) => (second = err.code),
      );
      // Refused at once, or admitted and held at the provider (which answers only once released).
      while (second === undefined && held.received < 2) await new Promise((r) => setTimeout(r, 5));
      expect(held.received).toBe(1);
      expect(second).toBe('RATE_LIMITED');

      held.release();
      await Promise.all([first, answered]);
      await gateway.idle();
      // The slot came back when the call ended, once.
      await expect(gateway.complete({ principal: ada, transport: 'cli', request: ask })).resolves.toMatchObject({ tier: 'standard' });
      expect(held.received).toBe(2);
    });
  }
});
