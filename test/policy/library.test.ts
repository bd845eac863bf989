import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { policyTestJsonSchema } from '../../src/policy/jsonSchema.js';
import { parsePolicy } from '../../src/policy/load.js';
import { runCase, runPolicyTestFile } from '../../src/policy/policyTest.js';

const LIBRARY = fileURLToPath(new URL('../../policy/library/', import.meta.url));
const files = readdirSync(LIBRARY).sort();
const policies = files.filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml'));
const testFiles = files.filter((f) => f.endsWith('.test.yaml'));
const noEnv = { env: {}, readFile: () => { throw Object.assign(new Error('no file bindings here'), { code: 'ENOENT' }); } };

describe('policy library', () => {
  it('holds the nine reference policies, each with a test file', () => {
    expect(policies).toEqual([
      'agent-loop-guard.yaml',
      'business-hours.yaml',
      'contractors-economy.yaml',
      'cost-centre-monthly-usd.yaml',
      'dlp-credentials.yaml',
      'employee-weekly-tokens.yaml',
      'team-budget-alerts.yaml',
      'team-tier-ladder.yaml',
      'weekly-tokens-fallback.yaml',
    ]);
    expect(testFiles).toEqual(policies.map((p) => p.replace(/\.yaml$/, '.test.yaml')));
  });

  for (const name of policies) {
    it(`${name} loads with no environment, on the offline demo provider, with the schema header`, () => {
      const text = readFileSync(join(LIBRARY, name), 'utf8');
      expect(text.split('\n')[0]).toBe('# yaml-language-server: $schema=../policy.schema.json');
      const policy = parsePolicy(text, name, { sources: noEnv });
      expect(policy.config.name).toBe(name.replace(/\.yaml$/, ''));
      expect(Object.values(policy.config.providers).map((p) => p.kind)).toEqual(['demo']);
    });
  }
});

for (const name of testFiles) {
  const result = runPolicyTestFile(join(LIBRARY, name));
  describe(`policy tests in ${name}`, () => {
    it('starts with the test-file schema header', () => {
      expect(readFileSync(join(LIBRARY, name), 'utf8').split('\n')[0]).toBe('# yaml-language-server: $schema=../policy-test.schema.json');
    });
    it('the test file and its policy load', () => {
      expect(result.error).toBeUndefined();
      expect(result.cases.length).toBeGreaterThan(0);
    });
    for (const c of result.cases) {
      it(c.name, () => {
        expect(c.diff).toEqual([]);
        expect(c.passed).toBe(true);
      });
    }
  });
}

describe('policy test runner', () => {
  it('publishes a JSON Schema for test files that is current (run npm run gen-schema after changing it)', () => {
    const onDisk = JSON.parse(readFileSync(new URL('../../policy/policy-test.schema.json', import.meta.url), 'utf8'));
    expect(onDisk).toEqual(policyTestJsonSchema());
  });

  const dir = mkdtempSync(join(tmpdir(), 'tollgate-ptest-'));
  writeFileSync(join(dir, 'p.yaml'), readFileSync(join(LIBRARY, 'contractors-economy.yaml'), 'utf8'));

  it('reports a failing case with the fields that differ', () => {
    writeFileSync(
      join(dir, 'wrong.test.yaml'),
      `policy: ./p.yaml
cases:
  - name: wrongly expects premium for a contractor
    principal: { user: bob, groups: [contractors] }
    request: { tier: premium }
    expect: { effect: allow, tier: premium, ruleId: contractors-no-premium }
`,
    );
    const r = runPolicyTestFile(join(dir, 'wrong.test.yaml'));
    expect(r.error).toBeUndefined();
    expect(r.cases).toHaveLength(1);
    expect(r.cases[0]!.passed).toBe(false);
    expect(r.cases[0]!.diff).toEqual([
      { field: 'effect', expected: 'allow', actual: 'deny' },
      { field: 'tier', expected: 'premium', actual: undefined },
    ]);
  });

  it('reports an invalid test file without running it', () => {
    writeFileSync(join(dir, 'bad.test.yaml'), 'policy: ./p.yaml\ncases:\n  - name: x\n    principal: { user: bob }\n    expect: { effect: maybe }\n');
    const r = runPolicyTestFile(join(dir, 'bad.test.yaml'));
    expect(r.cases).toEqual([]);
    expect(r.error).toBe('invalid test file: cases.0.expect.effect: Invalid option: expected one of "allow"|"tier_down"|"deny"');
  });

  it('reports a test file whose policy is invalid', () => {
    writeFileSync(join(dir, 'broken.yaml'), 'version: 1\nproviders: { demo: { kind: demo } }\ntiers: { economy: [demo/small] }\nrules:\n  - { id: r, when: "1 +", effect: deny }\n');
    writeFileSync(join(dir, 'broken.test.yaml'), 'policy: ./broken.yaml\ncases:\n  - { name: x, principal: { user: bob }, expect: { effect: allow } }\n');
    const r = runPolicyTestFile(join(dir, 'broken.test.yaml'));
    expect(r.cases).toEqual([]);
    expect(r.error).toContain('is invalid (1 error)');
    expect(r.error).toContain('rules[0].when (line 5, col 20): invalid CEL expression: Unexpected token: EOF');
  });

  it('counts reserved amounts and a BUDGET_EXHAUSTED from the reservation, not only from decide()', () => {
    const policy = parsePolicy(readFileSync(join(LIBRARY, 'employee-weekly-tokens.yaml'), 'utf8'), 'e.yaml');
    // 200 tokens left: decide() alone would serve economy (under 20%), but the smallest answer
    // (limits.minOutputTokens) plus the prompt estimate does not fit, so the call is refused.
    const c = runCase(
      policy,
      { name: 'x', principal: { user: 'a', teams: [], groups: [], roles: [] }, usage: { 'employee-weekly': { used: 1_999_700, reserved: 290 } }, request: { prompt: 'Hello', maxTokens: 1024, tier: 'economy' }, expect: { effect: 'deny' } },
      '2026-11-25T10:00:00Z',
    );
    expect(c.observed).toMatchObject({ effect: 'deny', code: 'BUDGET_EXHAUSTED', budgetId: 'employee-weekly', resetsAt: '2026-11-29T23:00:00.000Z' });
    expect(c.observed.reason).toBe('Budget employee-weekly (user a) cannot cover this call: 10 tokens left, 1026 needed. It resets at 2026-11-29T23:00:00.000Z.');
  });
});

describe('business-hours policy', () => {
  const text = readFileSync(join(LIBRARY, 'business-hours.yaml'), 'utf8');
  const at = (iso: string, env: Record<string, string>) => {
    const policy = parsePolicy(text, 'b.yaml', { sources: { ...noEnv, env } });
    return runCase(policy, { name: 'x', principal: { user: 'ana', teams: [], groups: ['office-hours'], roles: [] }, usage: {}, request: { prompt: 'hi', maxTokens: 10 }, expect: { effect: 'allow' } }, iso).observed;
  };

  it('follows the office timezone from TOLLGATE_OFFICE_TZ', () => {
    // 14:30 UTC is 09:30 in New York (EST) and 15:30 in Paris.
    expect(at('2026-11-25T14:30:00Z', { TOLLGATE_OFFICE_TZ: 'America/New_York' }).effect).toBe('allow');
    expect(at('2026-11-25T13:30:00Z', { TOLLGATE_OFFICE_TZ: 'America/New_York' }).effect).toBe('deny');
    expect(at('2026-11-25T13:30:00Z', {}).effect).toBe('allow');
  });

  it('denies when the office timezone is misspelt (the rule cannot be evaluated)', () => {
    const o = at('2026-11-25T10:00:00Z', { TOLLGATE_OFFICE_TZ: 'Europe/Pariss' });
    expect(o).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'office-hours-only' });
    expect(o.reason).toContain('could not be evaluated');
  });
});

describe('docs/policy.md', () => {
  const doc = readFileSync(new URL('../../docs/policy.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('## Policy library'));
  const combined = /```yaml\n(# yaml-language-server[\s\S]*?)```/.exec(section)![1]!;

  it('shows a combined policy that loads and decides as described', () => {
    const policy = parsePolicy(combined, 'docs/policy.md', { sources: { ...noEnv, env: { ANTHROPIC_API_KEY: 'sk-test' } } });
    const principal = { user: 'bob', teams: ['platform'], groups: ['contractors'], roles: [] };
    const expectFor = (tier: string, prompt = 'hi') =>
      runCase(policy, { name: 'x', principal, usage: {}, request: { tier, prompt, maxTokens: 100 }, expect: { effect: 'allow' } }, '2026-11-25T10:00:00Z').observed;
    expect(expectFor('premium')).toMatchObject({ effect: 'deny', ruleId: 'contractors-no-premium' });
    expect(expectFor('standard')).toMatchObject({ effect: 'tier_down', tier: 'economy', ruleId: 'contractors-economy-only' });
    expect(expectFor('standard', 'key AKIAABCDEFGHIJKLMNOP')).toMatchObject({ effect: 'deny', ruleId: 'dlp-aws-access-key' });
  });
});
