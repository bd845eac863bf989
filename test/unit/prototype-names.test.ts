/**
 * The compiled policy looks tiers, models and budgets up by name in Maps or by own property, so
 * Object.prototype's names are names like any other: absent unless the policy declares them, and
 * served like any other when it does. The transports' side is test/integration/prototype-names.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { readClaim } from '../../src/identity/claims.js';
import type { Principal } from '../../src/identity/principal.js';
import { decide, findModel } from '../../src/policy/decide.js';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';
import { budgetStates, simulate } from '../../src/policy/simulate.js';
import { basicPolicy } from '../fixtures/policies.js';

const NAMES = [...new Set([...Object.getOwnPropertyNames(Object.prototype), '__proto__', 'prototype'])];
const NOW = Date.parse('2026-11-25T10:00:00Z');
const who: Principal = { user: 'u', teams: [], groups: [], roles: [], authMethod: 'api_key' };
const ask = (over: { tier?: string; model?: string } = {}) => ({ messages: [{ role: 'user' as const, content: 'hi' }], maxTokens: 10, ...over });
const policy = parsePolicy(basicPolicy(), 'basic.yaml');

function issuesOf(text: string): string[] {
  try {
    parsePolicy(text, 'bad.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return (err as PolicyError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('policy unexpectedly valid');
}

describe('the compiled policy and Object.prototype names', () => {
  it.each(NAMES)('has no tier, tier models or model named "%s"', (name) => {
    expect(policy.hasTier(name)).toBe(false);
    expect(policy.tierModels.has(name)).toBe(false);
    expect(policy.tierModels.get(name)).toBeUndefined();
    expect(findModel(policy, name)).toBeUndefined();
  });

  it('answers hasTier for its own tiers, and lists each tier\'s models in order', () => {
    expect(policy.tiers.map((t) => policy.hasTier(t))).toEqual([true, true, true]);
    expect([...policy.tierModels].map(([t, ms]) => [t, ms.map((m) => m.ref)])).toEqual([
      ['premium', ['demo/large']],
      ['standard', ['demo/medium']],
      ['economy', ['demo/small']],
    ]);
    expect(policy.tierModels.get('premium')![0]).toBe(policy.models.get('demo/large'));
  });

  it.each(NAMES)('decides tier or model "%s" as UNKNOWN_MODEL', (name) => {
    for (const request of [ask({ tier: name }), ask({ model: name })]) {
      expect(() => decide({ policy, principal: who, request, estimatedInputTokens: 1, budgets: [], now: NOW })).toThrowError(expect.objectContaining({ code: 'UNKNOWN_MODEL' }));
    }
  });

  it('refuses a defaultTier, a cap_tier rule or a provider that only Object.prototype answers to', () => {
    const text = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium, constructor/small]
defaultTier: toString
rules:
  - { id: cap, when: "true", effect: cap_tier, tier: hasOwnProperty }
`;
    expect(issuesOf(text)).toEqual(
      expect.arrayContaining([
        'tiers.standard[1]: provider "constructor" is not declared under providers',
        'defaultTier: tier "toString" is not declared under tiers',
        'rules[0].tier: tier "hasOwnProperty" is not declared under tiers',
      ]),
    );
  });

  it('serves tiers, providers and budgets a policy does name after Object.prototype properties, and no others', () => {
    const named = parsePolicy(
      `
version: 1
providers:
  constructor: { kind: demo }
tiers:
  constructor: [constructor/large]
  valueOf: [constructor/small]
defaultTier: valueOf
budgets:
  - { id: toString, scope: user, window: { calendar: week }, limit: { tokens: 1000 } }
rules:
  - { id: low, when: "budgets.toString.remainingPct < 50", effect: deny, message: toString is low }
`,
      'named.yaml',
    );
    expect(named.hasTier('constructor')).toBe(true);
    expect(named.hasTier('valueOf')).toBe(true);
    expect(named.hasTier('toString')).toBe(false);
    expect(simulate({ policy: named, principal: who, request: ask(), now: NOW }).decision).toMatchObject({ effect: 'allow', tier: 'valueOf' });
    expect(simulate({ policy: named, principal: who, request: ask({ tier: 'constructor' }), now: NOW }).decision).toMatchObject({ effect: 'allow', tier: 'constructor' });
    expect(() => simulate({ policy: named, principal: who, request: ask({ tier: 'toString' }), now: NOW })).toThrowError(expect.objectContaining({ code: 'UNKNOWN_MODEL' }));
    // The rule reads the budget named toString from the budgets view, not Object.prototype's toString.
    const low = simulate({ policy: named, principal: who, request: ask(), usage: { toString: { used: 600 } }, now: NOW });
    expect(low.decision).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'low' });
  });

  it('reads usage by own key only: a budget named toString has none unless the usage names it', () => {
    const named = parsePolicy(basicPolicy({ extraBudgets: '  - { id: toString, scope: user, window: { calendar: week }, limit: { tokens: 1000 } }' }), 'named.yaml');
    const inherited = Object.create({ toString: { used: 999 }, 'user-weekly': { used: 999 } }) as Record<string, { used: number }>;
    expect(budgetStates(named, who, NOW, inherited).map((b) => [b.budget.config.id, b.used])).toEqual([
      ['user-weekly', 0],
      ['toString', 0],
    ]);
    expect(budgetStates(named, who, NOW, { toString: { used: 7 } }).map((b) => [b.budget.config.id, b.used])).toEqual([
      ['user-weekly', 0],
      ['toString', 7],
    ]);
  });
});

describe('claims and Object.prototype names', () => {
  it.each(NAMES)('reads no claim "%s", nor a path through it, unless the token carries it', (name) => {
    const payload = JSON.parse('{"sub":"u","org":{"unit":"x"}}') as Record<string, unknown>;
    expect(readClaim(payload, name)).toBeUndefined();
    expect(readClaim(payload, `org.${name}`)).toBeUndefined();
    expect(readClaim(payload, `${name}.name`)).toBeUndefined();
    expect(readClaim(JSON.parse(`{${JSON.stringify(name)}:"carried"}`) as Record<string, unknown>, name)).toBe('carried');
  });
});
