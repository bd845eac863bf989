import { describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/principal.js';
import { decide, type BudgetState } from '../../src/policy/decide.js';
import { parsePolicy } from '../../src/policy/load.js';
import { basicPolicy } from '../fixtures/policies.js';

const policy = parsePolicy(
  basicPolicy({
    rules: `
  - id: interns-economy
    when: "'interns' in principal.groups"
    effect: cap_tier
    tier: economy
  - id: sre-anything
    when: "'sre' in principal.roles"
    effect: allow
  - id: no-friday-premium
    when: "request.tier == 'premium' && now.getDayOfWeek('UTC') == 5"
    effect: deny
    message: No premium on Fridays.
  - id: broken-at-runtime
    when: "principal.nosuchfield == 'x'"
    effect: deny`,
  }),
  'decide.yaml',
);
const NOW = Date.parse('2026-11-25T10:00:00Z'); // Wednesday
const FRIDAY = Date.parse('2026-11-27T10:00:00Z');

const who = (over: Partial<Principal> = {}): Principal => ({ user: 'u', teams: [], groups: [], roles: ['sre'], authMethod: 'api_key', ...over });
const budget = (used: number): BudgetState => ({ budget: policy.budgets[0]!, subject: 'u', used, reserved: 0, resetsAt: NOW + 1000 });
const run = (p: Principal, req: { tier?: string; model?: string }, budgets: BudgetState[] = [], now = NOW) =>
  decide({ policy, principal: p, request: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 10, ...req }, estimatedInputTokens: 5, budgets, now });

describe('decide', () => {
  it('allows the default tier with its models in failover order', () => {
    const d = run(who(), {});
    expect(d).toMatchObject({ effect: 'allow', tier: 'standard', requestedTier: 'standard', fallbackTiers: ['economy'] });
    expect(d.effect !== 'deny' && d.candidates.map((m) => m.ref)).toEqual(['demo/medium']);
  });

  it('resolves a bare model id to its provider/model and tier', () => {
    expect(run(who(), { model: 'large' })).toMatchObject({ effect: 'allow', tier: 'premium', requestedModel: 'demo/large' });
  });

  it('denies a contractor asking for premium', () => {
    expect(run(who({ groups: ['contractors'], roles: [] }), { tier: 'premium' })).toEqual({
      effect: 'deny',
      code: 'POLICY_DENIED',
      requestedTier: 'premium',
      requestedModel: undefined,
      ruleId: 'contractors-no-premium',
      reason: 'Contractors may use standard and economy models only.',
    });
  });

  it('caps an intern at economy as a tier_down naming the rule', () => {
    expect(run(who({ groups: ['interns'] }), { tier: 'premium' })).toMatchObject({ effect: 'tier_down', tier: 'economy', ruleId: 'interns-economy' });
  });

  it('stops at an allow rule so later deny rules do not apply', () => {
    expect(run(who(), { tier: 'premium' }, [], FRIDAY)).toMatchObject({ effect: 'allow', tier: 'premium' });
  });

  it('applies a time-based rule', () => {
    expect(run(who({ roles: [] }), { tier: 'premium' }, [], FRIDAY)).toMatchObject({ effect: 'deny', ruleId: 'no-friday-premium' });
  });

  it('fails closed when a deny rule cannot be evaluated', () => {
    const d = run(who({ roles: [] }), { tier: 'standard' });
    expect(d).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'broken-at-runtime' });
    expect(d.reason).toContain('could not be evaluated');
  });

  it('steps down one tier under the budget threshold and names the budget', () => {
    const d = run(who(), { tier: 'premium' }, [budget(8001)]);
    expect(d).toMatchObject({ effect: 'tier_down', tier: 'standard', budgetId: 'user-weekly' });
    expect(d.reason).toBe('Budget user-weekly has 19.9% left (under 20%), so the call is served one tier down.');
  });

  it('does not step down at exactly the threshold', () => {
    expect(run(who(), { tier: 'premium' }, [budget(8000)])).toMatchObject({ effect: 'allow', tier: 'premium' });
  });

  it('stays on the lowest tier when already there', () => {
    expect(run(who(), { tier: 'economy' }, [budget(9999)])).toMatchObject({ effect: 'allow', tier: 'economy' });
  });

  it('denies when a budget has nothing left, with its reset time', () => {
    expect(run(who(), {}, [budget(10_000)])).toMatchObject({ effect: 'deny', code: 'BUDGET_EXHAUSTED', budgetId: 'user-weekly', resetsAt: NOW + 1000 });
  });

  it('throws UNKNOWN_MODEL for a model no tier lists', () => {
    expect(() => run(who(), { model: 'gpt-9' })).toThrowError(expect.objectContaining({ code: 'UNKNOWN_MODEL' }));
  });
});

describe('decide with a budget that covers some tiers only', () => {
  const covering = parsePolicy(basicPolicy({ extraBudgets: '    tiers: [premium, standard]' }), 'tiers.yaml');
  const line = (used: number): BudgetState => ({ budget: covering.budgets[0]!, subject: 'u', used, reserved: 0, resetsAt: NOW + 1000 });
  const ask = (tier: string, budgets: BudgetState[]) =>
    decide({ policy: covering, principal: who(), request: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 10, tier }, estimatedInputTokens: 5, budgets, now: NOW });

  it('does not refuse outright when spent, since economy escapes it (the planner steps the call down)', () => {
    expect(ask('premium', [line(10_000)])).toMatchObject({ effect: 'tier_down', tier: 'standard', budgetId: 'user-weekly', fallbackTiers: ['economy'] });
    expect(ask('standard', [line(10_000)])).toMatchObject({ effect: 'tier_down', tier: 'economy', budgetId: 'user-weekly' });
  });

  it('neither refuses nor steps down a call to a tier it does not cover', () => {
    expect(ask('economy', [line(10_000)])).toMatchObject({ effect: 'allow', tier: 'economy', budgetId: undefined });
  });

  it('keeps its tier-down threshold for the tiers it covers', () => {
    expect(ask('premium', [line(8001)])).toMatchObject({ effect: 'tier_down', tier: 'standard', budgetId: 'user-weekly' });
    expect(ask('premium', [line(8000)])).toMatchObject({ effect: 'allow', tier: 'premium' });
  });

  it('refuses when spent if it covers every tier the call could still be served by', () => {
    const all = parsePolicy(basicPolicy({ extraBudgets: '    tiers: [standard, economy]' }), 'tiers.yaml');
    const d = decide({ policy: all, principal: who(), request: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 10, tier: 'standard' }, estimatedInputTokens: 5, budgets: [{ ...line(10_000), budget: all.budgets[0]! }], now: NOW });
    expect(d).toMatchObject({ effect: 'deny', code: 'BUDGET_EXHAUSTED', budgetId: 'user-weekly' });
  });
});
