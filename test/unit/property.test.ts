/**
 * Property-based tests on what callers and operators feed tollgate: tool arguments, policy
 * documents, and the principals and budget states a decision sees. Whatever the input, the answer
 * is a valid value or a refusal with its code, never a TypeError.
 */
import fc from 'fast-check';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { buildRuntime, settingsFromEnv } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import type { Principal } from '../../src/identity/principal.js';
import { DEFAULT_MAX_TOKENS, parseCompleteArgs } from '../../src/call/request.js';
import type { CompletionInput } from '../../src/call/request.js';
import { decide, type BudgetState, type Decision } from '../../src/policy/decide.js';
import { parsePolicy, PolicyError, type Policy } from '../../src/policy/load.js';
import { basicPolicy, KEYS } from '../fixtures/policies.js';

const RUNS = { numRuns: 200 };
const policyText = basicPolicy({
  extraBudgets: `
  - id: team-monthly
    scope: team
    window: { calendar: month }
    limit: { usd: 50 }
    tierDown: { below: 50 }`,
  rules: `
  - id: interns-economy
    when: "'interns' in principal.groups"
    effect: cap_tier
    tier: economy
  - id: sre-anything
    when: "'sre' in principal.roles"
    effect: allow`,
});
const policy = parsePolicy(policyText, 'property.yaml');
const LIMITS = policy.config.limits;
const TIGHT = { ...LIMITS, maxTokensCeiling: 64, maxInputChars: 40 };
const noSources = { env: {}, readFile: () => { throw Object.assign(new Error('not in tests'), { code: 'ENOENT' }); } };

/** An object as it arrives off the wire: built from JSON text, so `__proto__` stays an own key. */
function wireObject(entries: [string, unknown][]): Record<string, unknown> {
  return JSON.parse(`{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`).join(',')}}`) as Record<string, unknown>;
}

describe('complete arguments', () => {
  const key = fc.constantFrom('messages', 'prompt', 'system', 'model', 'tier', 'max_tokens', 'temperature', '__proto__', 'constructor', 'prototype', 'stream', 'toString');
  const edgeNumber = fc.constantFrom(0, -1, 1, 1.5, 2, 2.5, 64, 65, 32768, 32769, 2 ** 53, 1e308, -0);
  const scalar = fc.oneof(fc.string(), fc.integer(), fc.double(), edgeNumber, fc.boolean(), fc.constant(null));
  const message = fc.record(
    { role: fc.oneof(fc.constantFrom('user', 'assistant', 'system', '__proto__'), fc.string()), content: fc.oneof(fc.string({ maxLength: 30 }), scalar), name: fc.string() },
    { requiredKeys: [] },
  );
  const value = fc.oneof(scalar, fc.jsonValue({ maxDepth: 3 }), fc.array(message, { maxLength: 3 }));
  const args = fc.array(fc.tuple(key, value), { maxLength: 6 }).map(wireObject);

  /** The contract: a valid CompletionInput, or GatewayError INVALID_REQUEST listing the issues. */
  function expectValidOrRefused(raw: unknown, limits: typeof LIMITS): CompletionInput | undefined {
    let out: CompletionInput;
    try {
      out = parseCompleteArgs(raw, limits);
    } catch (err) {
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('INVALID_REQUEST');
      const issues = (err as GatewayError).details.issues as unknown[];
      expect(issues.length).toBeGreaterThan(0);
      for (const i of issues) expect(typeof i === 'string' && i.length > 0).toBe(true);
      return undefined;
    }
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(out.messages.length).toBeGreaterThan(0);
    for (const m of out.messages) {
      expect(['user', 'assistant']).toContain(m.role);
      expect(typeof m.content).toBe('string');
    }
    expect(Number.isSafeInteger(out.maxTokens) && out.maxTokens >= 1 && out.maxTokens <= limits.maxTokensCeiling).toBe(true);
    if (out.temperature !== undefined) expect(out.temperature >= 0 && out.temperature <= 2).toBe(true);
    const chars = out.messages.reduce((n, m) => n + m.content.length, out.system?.length ?? 0);
    expect(chars).toBeLessThanOrEqual(limits.maxInputChars);
    return out;
  }

  it('turns any JSON value into a valid input or INVALID_REQUEST', () => {
    fc.assert(fc.property(fc.jsonValue(), (raw) => void expectValidOrRefused(raw, LIMITS)), RUNS);
  });

  it('turns objects mixing real, hostile and unknown keys into a valid input or INVALID_REQUEST, under default and tight limits', () => {
    fc.assert(
      fc.property(args, fc.boolean(), (raw, tight) => {
        expectValidOrRefused(raw, tight ? TIGHT : LIMITS);
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      }),
      RUNS,
    );
  });

  it('accepts every well-formed prompt call and keeps its values', () => {
    const wellFormed = fc.record(
      {
        prompt: fc.string({ minLength: 1, maxLength: 40 }),
        max_tokens: fc.integer({ min: 1, max: LIMITS.maxTokensCeiling }),
        temperature: fc.double({ min: 0, max: 2, noNaN: true }),
        tier: fc.constantFrom(...policy.tiers),
      },
      { requiredKeys: ['prompt'] },
    );
    fc.assert(
      fc.property(wellFormed, (a) => {
        const out = expectValidOrRefused(a, LIMITS)!;
        expect(out).toEqual({ messages: [{ role: 'user', content: a.prompt }], system: undefined, model: undefined, tier: a.tier, maxTokens: a.max_tokens ?? DEFAULT_MAX_TOKENS, temperature: a.temperature });
      }),
      RUNS,
    );
  });
});

describe('policy documents', () => {
  /** The contract: a frozen Policy, or PolicyError whose every issue has a path and a message. */
  function expectPolicyOrIssues(text: string): Policy | PolicyError {
    try {
      const p = parsePolicy(text, 'random.yaml', { sources: noSources });
      expect(Object.isFrozen(p)).toBe(true);
      expect(p.tiers).toContain(p.defaultTier);
      return p;
    } catch (err) {
      expect(err).toBeInstanceOf(PolicyError);
      const issues = (err as PolicyError).issues;
      expect(issues.length).toBeGreaterThan(0);
      for (const i of issues) {
        expect(typeof i.path).toBe('string');
        expect(i.message.trim().length).toBeGreaterThan(0);
        if (i.line !== undefined) expect(i.line >= 1 && i.column! >= 1).toBe(true);
      }
      return err as PolicyError;
    }
  }

  const policyKey = fc.constantFrom('version', 'name', 'providers', 'tiers', 'defaultTier', 'budgets', 'rules', 'limits', 'apiKeys', 'models', 'egress', 'identity', 'bindings', 'metering', '__proto__', 'kind', 'id');

  it('answers any YAML document with a Policy or a PolicyError', () => {
    const doc = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.object({ key: policyKey, maxDepth: 3 }));
    fc.assert(fc.property(doc, (d) => void expectPolicyOrIssues(toYaml(d))), RUNS);
  });

  it('answers mutations of a valid policy (keys deleted, values retyped, __proto__ keys) with a Policy or issues naming a path', () => {
    const valid = parseYaml(policyText) as Record<string, unknown>;
    const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('delete', 'retype', 'proto', 'duplicate'), value: fc.jsonValue({ maxDepth: 2 }) });
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (mutations) => {
        const doc = structuredClone(valid);
        for (const m of mutations) mutate(doc, m);
        const result = expectPolicyOrIssues(toYaml(doc));
        if (result instanceof PolicyError) {
          // The root stays a map, so an issue without a path can only be an unknown top-level key.
          for (const i of result.issues) if (i.path === '') expect(i.message).toMatch(/^Unrecognized key/);
        }
      }),
      RUNS,
    );
  });

  it('answers random edits of the policy text (YAML syntax included) with a Policy or a PolicyError', () => {
    const snippet = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('&a ', '*a', '*nope', '!!binary ', '!!js/function ', '{', '}', '[', ']', ': ', '- ', '\t', '%YAML 1.1\n', '<<: *a\n', '"', "'", '#', '\n  ', '${env:X}', '${nope}'));
    const edit = fc.record({ at: fc.nat(), cut: fc.nat({ max: 12 }), insert: snippet });
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 3 }), (edits) => {
        let text = policyText;
        for (const e of edits) {
          const i = e.at % (text.length + 1);
          text = text.slice(0, i) + e.insert + text.slice(i + e.cut);
        }
        expectPolicyOrIssues(text);
      }),
      RUNS,
    );
  });

  it('refuses a YAML alias bomb with a PolicyError, not the yaml library\'s ReferenceError', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]', ...'bcdef'.split('').map((k, i) => `${k}: &${k} [${Array(9).fill(`*${'abcde'[i]}`).join(', ')}]`)].join('\n');
    const err = expectPolicyOrIssues(bomb) as PolicyError;
    expect(err.issues).toEqual([{ path: '', message: 'the YAML cannot be read as data: Excessive alias count indicates a resource exhaustion attack' }]);
  });

  it('refuses a self-referencing alias with a PolicyError, not a stack overflow', () => {
    const err = expectPolicyOrIssues('version: 1\nloop: &a [*a]\n');
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as PolicyError).issues).toEqual([{ path: '', message: 'the YAML cannot be read as data: an alias refers to a node that contains it, or the document nests too deeply' }]);
  });

  it('refuses a __proto__ key, which would otherwise slip its fields past the strict schema', () => {
    const smuggled = policyText.replace('  demo: { kind: demo }', '  demo:\n    __proto__: { kind: demo }');
    const err = expectPolicyOrIssues(smuggled) as PolicyError;
    expect(err).toBeInstanceOf(PolicyError);
    expect(err.issues).toContainEqual(expect.objectContaining({ path: 'providers.demo.__proto__', message: 'the key __proto__ is not allowed' }));
    expect(({} as Record<string, unknown>).kind).toBeUndefined();
  });
});

/** Applies one mutation at the `at`-th path (in a depth-first listing) of `doc`. */
function mutate(doc: Record<string, unknown>, m: { at: number; kind: string; value: unknown }): void {
  const slots: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (node: unknown) => {
    if (Array.isArray(node)) node.forEach((v, i) => (slots.push([node, i]), walk(v)));
    else if (node && typeof node === 'object') for (const [k, v] of Object.entries(node)) (slots.push([node as Record<string, unknown>, k]), walk(v));
  };
  walk(doc);
  if (slots.length === 0) return;
  const [parent, key] = slots[m.at % slots.length]!;
  const current = (parent as Record<string | number, unknown>)[key];
  if (m.kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key as string];
  } else if (m.kind === 'retype') {
    // JSON text, not String(): a generated object such as { toString: 0 } cannot be converted.
    (parent as Record<string | number, unknown>)[key] = typeof m.value === typeof current ? `${JSON.stringify(m.value)}!` : m.value;
  } else if (m.kind === 'proto' && !Array.isArray(parent)) {
    Object.defineProperty(parent, '__proto__', { value: { [String(key)]: m.value }, enumerable: true, configurable: true, writable: true });
  } else if (Array.isArray(parent)) {
    parent.push(structuredClone(current));
  }
}

describe('decide', () => {
  const tiers = policy.tiers;
  const principal: fc.Arbitrary<Principal> = fc.record({
    user: fc.constantFrom('alice', 'bob', 'carol'),
    teams: fc.subarray(['platform', 'data']),
    groups: fc.subarray(['employees', 'contractors', 'interns']),
    roles: fc.subarray(['sre']),
    authMethod: fc.constantFrom('api_key' as const, 'jwt' as const),
  });
  const request = fc.record({
    tier: fc.option(fc.constantFrom(...tiers, 'gold'), { nil: undefined }),
    model: fc.option(fc.constantFrom('demo/large', 'medium', 'small', 'nope/x'), { nil: undefined }),
    maxTokens: fc.integer({ min: 1, max: LIMITS.maxTokensCeiling }),
  });
  /** One state per budget, or none (the budget does not apply), with usage from empty to over the limit. */
  const budgets = fc.tuple(...policy.budgets.map((b) =>
    fc.option(fc.record({ used: fc.integer({ min: 0, max: Math.ceil(b.limit * 1.2) }), reserved: fc.integer({ min: 0, max: Math.ceil(b.limit / 2) }) }), { nil: undefined }),
  ));
  const NOW = Date.parse('2026-11-25T10:00:00Z');
  const states = (usage: ({ used: number; reserved: number } | undefined)[], scale = 1): BudgetState[] =>
    usage.flatMap((u, i) => (u ? [{ budget: policy.budgets[i]!, subject: 's', used: Math.ceil(u.used * scale), reserved: u.reserved, resetsAt: NOW + 3_600_000 }] : []));
  const run = (p: Principal, r: { tier?: string; model?: string; maxTokens: number }, b: BudgetState[]): Decision | GatewayError => {
    try {
      return decide({ policy, principal: p, request: { messages: [{ role: 'user', content: 'hi' }], ...r }, estimatedInputTokens: 5, budgets: b, now: NOW });
    } catch (err) {
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('UNKNOWN_MODEL');
      expect(r.tier === 'gold' || r.model === 'nope/x').toBe(true);
      return err as GatewayError;
    }
  };

  it('denies with a code and nothing to reserve or dispatch, and always when a budget is spent', () => {
    fc.assert(
      fc.property(principal, request, budgets, (p, r, usage) => {
        const b = states(usage);
        const d = run(p, r, b);
        if (d instanceof GatewayError) return;
        const spent = b.filter((s) => s.budget.limit - s.used - s.reserved <= 0);
        if (spent.length > 0) expect(d.effect).toBe('deny');
        if (d.effect !== 'deny') return;
        expect(['POLICY_DENIED', 'BUDGET_EXHAUSTED']).toContain(d.code);
        expect(d).not.toHaveProperty('candidates');
        expect(d).not.toHaveProperty('fallbackTiers');
        expect(d.reason.length).toBeGreaterThan(0);
        if (d.code === 'BUDGET_EXHAUSTED') expect(spent.map((s) => s.budget.config.id)).toContain(d.budgetId);
      }),
      RUNS,
    );
  });

  it('serves the requested tier on allow and a later tier on tier_down, from that tier\'s models', () => {
    fc.assert(
      fc.property(principal, request, budgets, (p, r, usage) => {
        const d = run(p, r, states(usage));
        if (d instanceof GatewayError || d.effect === 'deny') return;
        const served = tiers.indexOf(d.tier);
        if (d.effect === 'allow') expect(d.tier).toBe(d.requestedTier);
        else {
          expect(served).toBeGreaterThan(tiers.indexOf(d.requestedTier));
          expect(d.ruleId ?? d.budgetId).toBeDefined();
        }
        expect(d.candidates.length).toBeGreaterThan(0);
        for (const m of d.candidates) expect(policy.config.tiers[d.tier]).toContain(m.ref);
        expect(d.fallbackTiers).toEqual(tiers.slice(served + 1));
      }),
      RUNS,
    );
  });

  it('is pure, and more usage never buys a more capable tier', () => {
    fc.assert(
      fc.property(principal, request, budgets, fc.double({ min: 1, max: 3, noNaN: true }), (p, r, usage, scale) => {
        const first = run(p, r, states(usage));
        expect(run(p, r, states(usage))).toEqual(first);
        const later = run(p, r, states(usage, scale));
        if (first instanceof GatewayError || later instanceof GatewayError || later.effect === 'deny') return;
        expect(first.effect).not.toBe('deny');
        if (first.effect !== 'deny') expect(tiers.indexOf(later.tier)).toBeGreaterThanOrEqual(tiers.indexOf(first.tier));
      }),
      RUNS,
    );
  });
});

describe('the pipeline', () => {
  it('charges and reserves nothing for a refused call, whatever the sequence of calls', async () => {
    const small = parsePolicy(basicPolicy({ userTokens: 1500 }), 'small.yaml');
    const runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), { policy: small, sink: memorySink() });
    const call = fc.record({
      key: fc.constantFrom(...Object.values(KEYS)),
      tier: fc.constantFrom(...small.tiers),
      maxTokens: fc.integer({ min: 1, max: 600 }),
      words: fc.integer({ min: 1, max: 200 }),
    });
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(call, { minLength: 1, maxLength: 6 }), async (calls) => {
          for (const c of calls) {
            const { principal } = await runtime.gateway.authenticate({ secret: c.key }, { transport: 'cli' });
            const before = await runtime.gateway.myBudget(principal);
            const request: CompletionInput = { messages: [{ role: 'user', content: 'word '.repeat(c.words) }], tier: c.tier, maxTokens: c.maxTokens };
            const refused = await runtime.gateway.complete({ principal, transport: 'http', request }).then(
              () => undefined,
              (err: unknown) => err,
            );
            const after = await runtime.gateway.myBudget(principal);
            for (const b of after) expect(b.reserved).toBe(0);
            if (refused === undefined) continue;
            expect(refused).toBeInstanceOf(GatewayError);
            expect(['POLICY_DENIED', 'BUDGET_EXHAUSTED']).toContain((refused as GatewayError).code);
            expect(after.map((b) => b.used)).toEqual(before.map((b) => b.used));
          }
        }),
        { numRuns: 50 },
      );
    } finally {
      await runtime.close();
    }
  });
});
