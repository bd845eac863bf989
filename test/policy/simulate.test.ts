import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { applicableLines } from '../../src/policy/budgets.js';
import type { CompletionInput } from '../../src/call/request.js';
import { parsePolicy, type Policy } from '../../src/policy/load.js';
import { runCase, type PolicyTestCase } from '../../src/policy/policyTest.js';
import { simulate, type UsageMap } from '../../src/policy/simulate.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const library = (name: string) => parsePolicy(readFileSync(new URL(`../../policy/library/${name}`, import.meta.url), 'utf8'), name);

let runtime: Runtime | undefined;
afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
});

/** Runs one call through the real pipeline after charging `usage` to the store; returns what the caller saw. */
async function realCall(policy: Policy, principal: Principal, request: CompletionInput, usage: Record<string, number>) {
  const store = new MemoryQuotaStore(() => NOW);
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' });
  runtime = await buildRuntime(settings, { policy, store, sink: memorySink(), now: () => NOW });
  const lines = applicableLines(policy.budgets, principal, NOW, settings.keyPrefix);
  await store.settle(
    'pre-charge',
    lines.filter((l) => usage[l.budget.config.id] !== undefined).map((l) => ({ ...l.line, amount: usage[l.budget.config.id]! })),
  );
  try {
    const r = await runtime.gateway.complete({ principal, transport: 'cli', request });
    return { effect: r.decision.effect, tier: r.tier, budgetId: r.decision.budgetId, ruleId: r.decision.ruleId, reason: r.decision.reason };
  } catch (err) {
    const e = err as GatewayError;
    return { effect: 'deny', code: e.code, budgetId: e.details.budgetId as string | undefined, ruleId: e.details.ruleId as string | undefined, reason: e.message };
  }
}

function simulated(policy: Policy, principal: Principal, request: CompletionInput, usage: UsageMap) {
  const d = simulate({ policy, principal, request, usage, now: NOW }).decision;
  return d.effect === 'deny'
    ? { effect: d.effect, code: d.code, budgetId: d.budgetId, ruleId: d.ruleId, reason: d.reason }
    : { effect: d.effect, tier: d.tier, budgetId: d.budgetId, ruleId: d.ruleId, reason: d.reason };
}

const alice: Principal = { user: 'alice', teams: ['platform'], costCenter: 'cc-1001', groups: ['employees'], roles: [], authMethod: 'api_key' };
const ask = (tier: string, maxTokens = 1024, prompt = 'Hello'): CompletionInput => ({ messages: [{ role: 'user', content: prompt }], tier, maxTokens });

describe('policy tests see what a real call sees', () => {
  const cases: { name: string; policy: string; request: CompletionInput; ledger: Record<string, number>; usage: UsageMap; effect: string }[] = [
    { name: 'a fresh budget', policy: 'employee-weekly-tokens.yaml', request: ask('premium'), ledger: {}, usage: {}, effect: 'allow' },
    { name: 'under the tier-down threshold', policy: 'employee-weekly-tokens.yaml', request: ask('premium'), ledger: { 'employee-weekly': 1_640_000 }, usage: { 'employee-weekly': { used: 1_640_000 } }, effect: 'tier_down' },
    { name: 'max_tokens lowered to what is left', policy: 'employee-weekly-tokens.yaml', request: ask('economy'), ledger: { 'employee-weekly': 1_999_500 }, usage: { 'employee-weekly': { used: 1_999_500 } }, effect: 'allow' },
    { name: 'nothing fits: refused at reservation', policy: 'employee-weekly-tokens.yaml', request: ask('standard'), ledger: { 'employee-weekly': 1_999_990 }, usage: { 'employee-weekly': { used: 1_999_990 } }, effect: 'deny' },
    { name: 'a dollar budget with one cent left', policy: 'cost-centre-monthly-usd.yaml', request: ask('standard', 4096), ledger: { 'cc-monthly': 4_999_990_000 }, usage: { 'cc-monthly': { used: 4999.99 } }, effect: 'tier_down' },
    { name: 'a team ladder rule', policy: 'team-tier-ladder.yaml', request: ask('premium'), ledger: { team_monthly: 17_000_000 }, usage: { team_monthly: { used: 17_000_000 } }, effect: 'tier_down' },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const policy = library(c.policy);
      const expected = await realCall(policy, alice, c.request, c.ledger);
      expect(expected.effect).toBe(c.effect);
      expect(simulated(policy, alice, c.request, c.usage)).toEqual(expected);
    });
  }
});

describe('a call no wait admits under a tokens-per-minute limit', () => {
  const policy = parsePolicy(
    `version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
rateLimits:
  - { id: tpm, scope: user, tokensPerMinute: 200 }
`,
    'tpm.yaml',
  );
  // Its input bound plus 500 output tokens is more than the 200 a minute the limit ever allows.
  const request = ask('standard', 500);

  it('is the same INVALID_REQUEST, telling the caller to lower max_tokens, in the pipeline, in simulate and in a policy test', async () => {
    const real = await realCall(policy, alice, request, {});
    expect(real).toMatchObject({ effect: 'deny', code: 'INVALID_REQUEST' });
    expect(real.reason).toMatch(/^Invalid arguments: max_tokens 500 lets this call use up to \d+ tokens, more than rate limit tpm \(user alice\) allows in a minute \(200\); lower max_tokens to at most \d+\.$/);
    expect(() => simulate({ policy, principal: alice, request, now: NOW })).toThrow(real.reason);
    const result = runCase(policy, { name: 'too large', principal: { user: 'alice', teams: [], groups: [], roles: [] }, usage: {}, request: { prompt: 'Hello', tier: 'standard', maxTokens: 500 }, expect: { effect: 'deny', code: 'INVALID_REQUEST' } } as PolicyTestCase, '2026-11-25T10:00:00Z');
    expect(result).toMatchObject({ passed: true, observed: { code: 'INVALID_REQUEST', reason: real.reason } });
  });
});
