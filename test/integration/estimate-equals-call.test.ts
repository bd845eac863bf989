/**
 * `estimate` against the call that follows it, on the in-memory store and on Redis: over random
 * budget states (used and reserved amounts on a token budget with a tier-down threshold and on a
 * dollar budget that covers the dearer tiers only), callers and requests, with nothing changed in
 * between, the call gets the decision the estimate said (effect, tier, model, rule or budget,
 * refusal code, reason), is served within the estimated cost range, and the estimate itself
 * reserved and charged nothing.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompletionInput } from '../../src/call/request.js';
import { GatewayError } from '../../src/errors.js';
import type { EstimateResult } from '../../src/gateway/gateway.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { applicableLines } from '../../src/policy/budgets.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { QuotaStore } from '../../src/quota/store.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const USER_LIMIT = 6000;
const TEAM_LIMIT_MICRO = 40_000; // $0.04

const POLICY = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
  economy: [demo/small]
defaultTier: standard
budgets:
  - id: user-daily
    scope: user
    window: { calendar: day, timezone: UTC }
    limit: { tokens: ${USER_LIMIT} }
    tierDown: { below: 25 }
  - id: team-dear
    scope: team
    window: { calendar: month }
    limit: { usd: ${TEAM_LIMIT_MICRO / 1e6} }
    tiers: [premium, standard]
rules:
  - id: interns-economy
    when: "'interns' in principal.groups"
    effect: cap_tier
    tier: economy
  - id: contractors-no-premium
    when: "'contractors' in principal.groups && request.tier == 'premium'"
    effect: deny
    message: Contractors may use standard and economy models only.
`;

interface Case {
  group: 'employees' | 'contractors' | 'interns';
  userUsed: number;
  userHeld: number;
  teamUsed: number;
  teamHeld: number;
  ask: { tier?: string; model?: string };
  maxTokens: number;
  words: number;
}

const amount = (limit: number) =>
  fc.oneof({ arbitrary: fc.constant(0), weight: 2 }, { arbitrary: fc.integer({ min: 0, max: limit }), weight: 5 }, { arbitrary: fc.integer({ min: limit - 400, max: limit + 50 }), weight: 3 });

const caseArb: fc.Arbitrary<Case> = fc.record({
  group: fc.constantFrom('employees' as const, 'employees' as const, 'contractors' as const, 'interns' as const),
  userUsed: amount(USER_LIMIT),
  userHeld: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 800 })),
  teamUsed: amount(TEAM_LIMIT_MICRO),
  teamHeld: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 })),
  ask: fc.constantFrom({}, { tier: 'premium' }, { tier: 'standard' }, { tier: 'economy' }, { model: 'demo/large' }, { model: 'medium' }),
  maxTokens: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 100, max: 4000 })),
  words: fc.integer({ min: 1, max: 400 }),
});

/** Sets the caller's budget lines to the case's state: used amounts charged, held amounts reserved by another request. */
async function seed(runtime: Runtime, keyPrefix: string, principal: Principal, c: Case, n: number): Promise<void> {
  const g = runtime.gateway;
  const lines = applicableLines(g.policy.budgets, principal, NOW, keyPrefix);
  const by = (id: string) => lines.find((l) => l.budget.config.id === id)!.line;
  const used = [{ ...by('user-daily'), amount: c.userUsed }, { ...by('team-dear'), amount: c.teamUsed }].filter((l) => l.amount > 0);
  if (used.length) await g.store.settle(`seed-${n}`, used);
  const held = [{ ...by('user-daily'), amount: c.userHeld }, { ...by('team-dear'), amount: c.teamHeld }].filter((l) => l.amount > 0);
  if (held.length) await g.store.reserve(`held-${n}`, held, 600_000);
}

/** `keyPrefix` namespaces the ledger keys: on a shared Redis, each run keeps to its own. */
function storeSuite(name: string, keyPrefix: string, makeStore: () => Promise<{ store: QuotaStore; done(): Promise<void> }>) {
  describe(`estimate equals the call that follows, on ${name}`, () => {
    let runtime: Runtime;
    let done: () => Promise<void>;
    const sink = memorySink();
    let n = 0;

    beforeAll(async () => {
      const made = await makeStore();
      done = made.done;
      runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_KEY_PREFIX: keyPrefix }), { policy: parsePolicy(POLICY, 'estimate.yaml'), store: made.store, sink, now: () => NOW });
    });
    afterAll(async () => {
      await runtime?.close();
      await done?.();
    });

    it('gives the same decision, tier and model, and a cost inside the range, over random budget states', async () => {
      const seen = { allow: 0, tier_down: 0, deny: 0, clamp: 0 };
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          n += 1;
          const principal: Principal = { user: `u${n}`, teams: [`t${n}`], groups: [c.group], roles: [], authMethod: 'api_key' };
          await seed(runtime, keyPrefix, principal, c, n);
          const request: CompletionInput = { messages: [{ role: 'user', content: Array.from({ length: c.words }, (_, i) => `w${i}`).join(' ') }], maxTokens: c.maxTokens, ...c.ask };
          const g = runtime.gateway;
          const before = await g.myBudget(principal);

          const est: EstimateResult = await g.estimate({ principal, request, transport: 'cli' });
          expect(await g.myBudget(principal)).toEqual(before);
          const outcome = await g.complete({ principal, request, transport: 'cli' }).catch((e: unknown) => e);
          await g.idle();

          seen[est.decision.effect] += 1;
          if (est.decision.reason.includes('max_tokens lowered')) seen.clamp += 1;
          if (est.decision.effect === 'deny') {
            expect(outcome).toBeInstanceOf(GatewayError);
            const err = outcome as GatewayError;
            expect(err.code).toBe(est.decision.code);
            expect(err.message).toBe(est.decision.reason);
            if (est.decision.budgetId) expect(err.details.budgetId).toBe(est.decision.budgetId);
            if (est.decision.ruleId) expect(err.details.ruleId).toBe(est.decision.ruleId);
            return;
          }
          if (outcome instanceof Error) throw outcome;
          const r = outcome as Awaited<ReturnType<typeof g.complete>>;
          expect({ effect: r.decision.effect, tier: r.tier, ruleId: r.decision.ruleId, budgetId: r.decision.budgetId, reason: r.decision.reason }).toEqual({
            effect: est.decision.effect,
            tier: est.decision.tier,
            ruleId: est.decision.ruleId,
            budgetId: est.decision.budgetId,
            reason: est.decision.reason,
          });
          expect(r.model).toBe(est.model);
          expect(r.usage.outputTokens).toBeLessThanOrEqual(est.maxTokens!);
          expect(r.costUsd).toBeGreaterThanOrEqual(est.costUsd!.min);
          expect(r.costUsd).toBeLessThanOrEqual(est.costUsd!.max);
          // What the estimate said would remain is at most what remains once the call is charged (it charged no more than it reserved).
          for (const b of est.budgets) {
            const after = r.budgets.find((x) => x.id === b.id && x.subject === b.subject)!;
            expect(after.remaining).toBeGreaterThanOrEqual(b.remainingAfter - 1e-9);
          }
        }),
        { numRuns: 80, seed: 18_11 },
      );
      // The runs reach every outcome, not one path 80 times.
      expect(seen.allow).toBeGreaterThan(0);
      expect(seen.tier_down).toBeGreaterThan(0);
      expect(seen.deny).toBeGreaterThan(0);
      expect(seen.clamp).toBeGreaterThan(0);

      // Each estimate is journaled as an estimate, and charges nothing.
      const estimates = sink.events.filter((e) => e['tollgate.dry_run'] === 'estimate');
      expect(estimates.length).toBe(n);
      for (const e of estimates) {
        expect(e['tollgate.charged']).toBeUndefined();
        expect(e['tollgate.reserved']).toBeUndefined();
        expect(e['gen_ai.usage.input_tokens'] + e['gen_ai.usage.output_tokens']).toBe(0);
        expect(e.outcome).toBe('success');
      }
    });
  });
}

storeSuite('the in-memory store', 'tollgate:', async () => ({ store: new MemoryQuotaStore(() => NOW), done: async () => undefined }));

let redis: TestRedis | undefined;
const prefix = uniquePrefix('estimate');
storeSuite('Redis', prefix, async () => {
  redis = await startRedis();
  return {
    store: new RedisQuotaStore({ url: redis.url, prefix, now: () => NOW }),
    async done() {
      await deleteKeys(redis!.url, prefix);
      await redis!.stop();
    },
  };
});
