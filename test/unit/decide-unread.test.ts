/**
 * Deciding a call without reading its budgets (src/pipeline/steps/decide.ts): the bounds the
 * reservation checks must be exact. For every held amount a line may have, `decide` on that amount
 * must reach the decision it reached on nothing held exactly when the amount is within the bound;
 * anything else would let a call past a threshold or an exhausted budget (bound too high) or read
 * for nothing (bound too low, only slower; still caught here).
 */
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/principal.js';
import { assumptionBounds, decidableUnread, decide, type BudgetState } from '../../src/policy/decide.js';
import { parsePolicy, type Policy } from '../../src/policy/load.js';
import { basicPolicy } from '../fixtures/policies.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const who: Principal = { user: 'alice', teams: [], groups: ['employees'], roles: [], authMethod: 'api_key' };

function decideOn(policy: Policy, held: number, tier?: string) {
  const budgets: BudgetState[] = [{ budget: policy.budgets[0]!, subject: 'alice', used: held, reserved: 0, resetsAt: NOW + 1000 }];
  return decide({ policy, principal: who, request: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 10, ...(tier ? { tier } : {}) }, estimatedInputTokens: 5, budgets, now: NOW });
}

/** The held amounts worth checking: all of them for a small limit, else around the bound and the ends. */
function heldAmounts(limit: number, bound: number): number[] {
  if (limit <= 400) return Array.from({ length: limit + 2 }, (_, i) => i);
  const near = (x: number) => Array.from({ length: 9 }, (_, i) => x - 4 + i);
  return [...new Set([0, 1, ...near(bound), ...near(limit - 1), limit, limit + 1].filter((x) => x >= 0))];
}

describe('assumptionBounds', () => {
  const limits = [1, 2, 3, 7, 10, 99, 100, 101, 333, 400, 1000, 12_345, 10_000_000, 999_999_937, 1_000_000_000_000];
  const thresholds = [0, 0.1, 1, 12.5, 20, 33.3, 50, 66.7, 99, 99.9, 100];

  for (const tier of ['standard', 'economy', 'premium']) {
    it(`gives, on the ${tier} tier, the largest held amount at which the decision is the one made on nothing held, for every limit and threshold`, () => {
      let checked = 0;
      for (const limit of limits) {
        for (const below of thresholds) {
          const policy = parsePolicy(basicPolicy({ userTokens: limit, tierDownBelow: below }), 'bounds.yaml');
          const assumed = decideOn(policy, 0, tier);
          expect(assumed.effect).not.toBe('deny');
          if (assumed.effect === 'deny') continue;
          const [bound] = assumptionBounds(policy, assumed, [{ budget: policy.budgets[0]!, subject: 'alice', used: 0, reserved: 0, resetsAt: NOW + 1000 }]);
          for (const held of heldAmounts(limit, bound!)) {
            const same = JSON.stringify(decideOn(policy, held, tier)) === JSON.stringify(assumed);
            if (same !== held <= bound!) throw new Error(`limit ${limit}, below ${below}%, tier ${tier}: held ${held} gives ${same ? 'the same' : 'another'} decision, bound ${bound}`);
            checked += 1;
          }
        }
      }
      expect(checked).toBeGreaterThan(1000);
    });
  }

  it('bounds a line only below exhaustion on the last tier, where there is nothing to step down to', () => {
    const policy = parsePolicy(basicPolicy({ userTokens: 1000, tierDownBelow: 20 }), 'bounds.yaml');
    const economy = decideOn(policy, 0, 'economy');
    const standard = decideOn(policy, 0, 'standard');
    if (economy.effect === 'deny' || standard.effect === 'deny') throw new Error('expected an allow');
    const line = [{ budget: policy.budgets[0]!, subject: 'alice', used: 0, reserved: 0, resetsAt: NOW }];
    expect(assumptionBounds(policy, economy, line)).toEqual([999]);
    expect(assumptionBounds(policy, standard, line)).toEqual([800]);
  });
});

describe('decidableUnread', () => {
  it('holds for rules that do not read budgets and budgets that cover every tier', () => {
    const policy = parsePolicy(basicPolicy(), 'unread.yaml');
    expect(decidableUnread(policy, policy.budgets.map((budget) => ({ budget })))).toBe(true);
  });

  it('fails for a policy with a rule that names budgets, even in a string', () => {
    const reads = parsePolicy(basicPolicy({ rules: `  - id: low\n    when: "budgets['user-weekly'].remainingPct < 5.0"\n    effect: deny` }), 'reads.yaml');
    expect(decidableUnread(reads, reads.budgets.map((budget) => ({ budget })))).toBe(false);
    const names = parsePolicy(basicPolicy({ rules: `  - id: named\n    when: "principal.user == 'budgets'"\n    effect: deny` }), 'names.yaml');
    expect(decidableUnread(names, names.budgets.map((budget) => ({ budget })))).toBe(false);
  });

  it('fails for a budget that covers some tiers only', () => {
    const policy = parsePolicy(
      basicPolicy({ extraBudgets: '  - { id: premium-only, scope: user, window: { calendar: month }, limit: { tokens: 100 }, tiers: [premium] }' }),
      'tiers.yaml',
    );
    expect(decidableUnread(policy, [{ budget: policy.budgets[0]! }])).toBe(true);
    expect(decidableUnread(policy, policy.budgets.map((budget) => ({ budget })))).toBe(false);
  });
});
