/**
 * Policies that loaded and then did something other than what their author wrote: no tier at all
 * (every call then failed at run time), a dollar limit too small to count or too large to add up
 * exactly, a `tierDown.below` of 0.2 read as 0.2 %, a `tier` on a deny rule that nothing reads, and
 * a test file whose policy has a CEL typo (`test-policy` passed cases that `serve` refuses to load).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/load.js';
import { runPolicyTestFile } from '../../src/policy/policyTest.js';
import { DEMO_HEAD, policyRefusal } from '../fixtures/policies.js';

const budget = (limit: string, extra = '') =>
  `${DEMO_HEAD}budgets:\n  - id: monthly\n    scope: team\n    window: { calendar: month }\n    limit: ${limit}\n${extra}`;
const messages = (text: string) => policyRefusal(() => parsePolicy(text, 'p.yaml')).map((i) => `${i.path}: ${i.message}`);

describe('tiers', () => {
  it('refuses a policy that declares no tier', () => {
    expect(messages('version: 1\nproviders:\n  demo: { kind: demo }\ntiers: {}\n')).toEqual(['tiers: declare at least one tier (a name and the models it serves)']);
  });
});

describe('model prices', () => {
  // Admission reserves input at the input price; a cache-read price above it let a truthful provider
  // (its cache reads within the reserved input) charge 112 micro-dollars a call where 1 was
  // reserved, and 120 concurrent calls spend 13,440 of a 12,345 micro-dollar budget.
  it('refuses a cached-input price above the input price', () => {
    const priced = (price: string) => `${DEMO_HEAD}models:\n  demo/large: { price: ${price} }\n`;
    expect(messages(priced('{ inputPerMTok: 1, outputPerMTok: 2, cachedInputPerMTok: 1.5 }'))).toEqual([
      'models.demo/large.price.cachedInputPerMTok: a cached-input price above the input price (1.5 > 1): admission reserves input at the input price, so cache reads could charge past a budget',
    ]);
    expect(parsePolicy(priced('{ inputPerMTok: 1, outputPerMTok: 2, cachedInputPerMTok: 1 }'), 'p.yaml')).toBeDefined();
  });

  it('refuses a price past a million dollars per million tokens, whose costs no report could count', () => {
    const priced = (price: string) => `${DEMO_HEAD}models:\n  demo/large: { price: ${price} }\n`;
    expect(messages(priced('{ inputPerMTok: 1e300, outputPerMTok: 2 }'))).toEqual(['models.demo/large.price.inputPerMTok: at most 1000000 dollars per million tokens, got 1e+300']);
    expect(parsePolicy(priced('{ inputPerMTok: 1000000, outputPerMTok: 600 }'), 'p.yaml')).toBeDefined();
  });
});

describe('provider settings', () => {
  // A region is part of the endpoint's host name: "127.0.0.1:42202/" made the SDK throw TypeError:
  // Invalid URL out of `tollgate check` and `serve`, a stack trace instead of the policy's path.
  it('refuses a Bedrock region that is not a region name, at its path', () => {
    const bedrock = (region: string) => `version: 1\nproviders:\n  br: { kind: bedrock, region: "${region}" }\nmodels:\n  br/m: { price: { inputPerMTok: 1, outputPerMTok: 1 } }\ntiers: { t: [br/m] }\negress: { allow: ['bedrock-runtime.eu-central-1.amazonaws.com'] }\n`;
    for (const region of ['127.0.0.1:42202/', 'us-east-1.evil.example', 'US EAST']) {
      expect(messages(bedrock(region))).toEqual([`providers.br.region: a region name such as us-east-1 (lower-case letters, digits and hyphens), got "${region}"`]);
    }
    expect(parsePolicy(bedrock('eu-central-1'), 'p.yaml')).toBeDefined();
  });
});

describe('budget limits', () => {
  it('refuses a dollar limit below one micro-dollar, which the ledger would round to nothing', () => {
    expect(messages(budget('{ usd: 0.0000004 }'))).toEqual(['budgets[0].limit.usd: a dollar limit is counted in millionths of a dollar: give at least 0.000001, got 4e-7']);
  });

  it('refuses a dollar limit finer than a micro-dollar, which the ledger would round', () => {
    expect(messages(budget('{ usd: 1.0000005 }'))).toEqual(['budgets[0].limit.usd: a dollar limit is counted in millionths of a dollar: give at most 6 decimal places, got 1.0000005']);
    expect(parsePolicy(budget('{ usd: 12.345678 }'), 'p.yaml')).toBeDefined();
  });

  it('refuses a token rate limit above 10^15, as a token budget', () => {
    const limit = (n: string) => `${DEMO_HEAD}rateLimits:\n  - { id: tpm, scope: user, tokensPerMinute: ${n} }\n`;
    expect(messages(limit('9007199254740991'))).toEqual(['rateLimits[0].tokensPerMinute: at most 1000000000000000 (10^15 tokens), got 9007199254740991']);
    expect(parsePolicy(limit('1000000000000000'), 'p.yaml')).toBeDefined();
  });

  it('refuses limits whose sums would no longer be exact', () => {
    expect(messages(budget('{ usd: 2000000000 }'))).toEqual(['budgets[0].limit.usd: at most 1000000000 (one billion dollars), got 2000000000']);
    expect(messages(budget('{ tokens: 9000000000000000 }'))).toEqual(['budgets[0].limit.tokens: at most 1000000000000000 (10^15 tokens), got 9000000000000000']);
  });

  it('says a limit in both units gives one unit too many, where it said "unknown key usd; did you mean usd?"', () => {
    expect(messages(budget('{ usd: 5, tokens: 10 }'))).toEqual(['budgets[0].limit.usd: usd cannot be given with tokens: give one of tokens, usd']);
  });

  it('still takes the smallest and the largest limits it counts exactly', () => {
    expect(parsePolicy(budget('{ usd: 0.000001 }'), 'p.yaml').budgets[0]!.limit).toBe(1);
    expect(parsePolicy(budget('{ usd: 1000000000 }'), 'p.yaml').budgets[0]!.limit).toBe(1e15);
    expect(parsePolicy(budget('{ tokens: 1000000000000000 }'), 'p.yaml').budgets[0]!.limit).toBe(1e15);
  });
});

describe('tierDown.below', () => {
  it('refuses a bare number between 0 and 1, which reads as a fraction but means per cent', () => {
    expect(messages(budget('{ tokens: 1000 }', '    tierDown: { below: 0.2 }\n'))).toEqual([
      'budgets[0].tierDown.below: under 1, a bare number reads as a fraction but is taken as per cent: write "20%" for a fifth, "0.2%" for 0.2 per cent, got 0.2',
    ]);
  });

  it('takes 0, whole percentages, and any percentage written with its sign', () => {
    for (const [below, pct] of [['0', 0], ['1', 1], ['12.5', 12.5], ['"0.2%"', 0.2], ['20%', 20]] as const) {
      expect(parsePolicy(budget('{ tokens: 1000 }', `    tierDown: { below: ${below} }\n`), 'p.yaml').budgets[0]!.config.tierDown).toEqual({ below: pct });
    }
  });
});

describe('rules', () => {
  it('refuses a tier on a rule that is not cap_tier, where nothing would read it', () => {
    const text = `${DEMO_HEAD}rules:\n  - id: no-premium\n    when: "request.tier == 'premium'"\n    effect: deny\n    tier: economy\n`;
    expect(messages(text)).toEqual(['rules[0].tier: only a cap_tier rule takes a tier; a deny rule ignores it (remove it, or make the rule cap_tier)']);
  });
});

describe('test-policy', () => {
  it('reports a CEL typo in the policy, as serve and check do, instead of running the cases', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-gaps-'));
    writeFileSync(join(dir, 'p.yaml'), `${DEMO_HEAD}rules:\n  - id: bots\n    when: "principal.team == 'bots'"\n    effect: deny\n`);
    writeFileSync(
      join(dir, 'p.test.yaml'),
      'policy: p.yaml\ncases:\n  - name: alice is served\n    principal: { user: alice }\n    request: { tier: economy }\n    expect: { effect: allow }\n',
    );
    const r = runPolicyTestFile(join(dir, 'p.test.yaml'));
    expect(r.cases).toEqual([]);
    expect(r.error).toMatch(/rules\[0\]\.when \(line 9, col 22\): unknown field team on principal; .*did you mean teams\?/);
  });
});

describe('policy test files that would test nothing, or not the same on every machine', () => {
  const run = (cases: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-ptest-'));
    writeFileSync(join(dir, 'p.yaml'), budget('{ tokens: 1000 }'));
    writeFileSync(join(dir, 'p.test.yaml'), `policy: p.yaml\ncases:\n${cases}`);
    return runPolicyTestFile(join(dir, 'p.test.yaml'));
  };
  const exhausted = (usage: string, now = '') =>
    `  - name: spent\n    principal: { user: alice, teams: [t] }\n    request: { tier: economy }\n${now}    usage: { ${usage}: { used: 1000 } }\n    expect: { effect: allow }\n`;

  it('refuses usage of a budget the policy does not have, which was ignored (a typo passed the case)', () => {
    const r = run(exhausted('monthy'));
    expect(r.cases).toEqual([]);
    expect(r.error).toBe('invalid test file: cases.0.usage: the policy declares no budget or rate limit monthy; did you mean monthly? (it declares monthly)');
    // The budget spelt right: the case runs, and fails as it should.
    expect(run(exhausted('monthly')).cases.map((c) => c.passed)).toEqual([false]);
  });

  it.each(['2026-12-07T08:30:00', '2026-02-30T10:00:00Z', '0'])('refuses a now of %s: no zone, a day not in the calendar, not a time', (now) => {
    const r = run(exhausted('monthly', `    now: "${now}"\n`));
    expect(r.cases).toEqual([]);
    expect(r.error).toContain('invalid test file: cases.0.now:');
  });
});
