import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError, type PolicyIssue } from '../../src/policy/load.js';
import { basicPolicy } from '../fixtures/policies.js';

function issuesOf(text: string, env: Record<string, string> = {}): PolicyIssue[] {
  try {
    parsePolicy(text, 'bad.yaml', { sources: { env, readFile: () => { throw Object.assign(new Error('nope'), { code: 'ENOENT' }); } } });
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return (err as PolicyError).issues;
  }
  throw new Error('policy unexpectedly valid');
}

const BAD = `version: 1
providers:
  demo: { kind: demo }
  oops: { kind: telepathy }
tiers:
  standard: [demo/medium, ghost/model]
  economy: [demo/unpriced]
budgets:
  - id: weekly
    scope: planet
    window: { calendar: week, timezone: Mars/Olympus }
    limit: { tokens: -5 }
rules:
  - id: broken
    when: "principal.groups &&"
    effect: deny
`;

describe('policy loading', () => {
  it('loads a valid policy, frozen, with a content version', () => {
    const p = parsePolicy(basicPolicy(), 'ok.yaml');
    expect(p.tiers).toEqual(['premium', 'standard', 'economy']);
    expect(p.defaultTier).toBe('standard');
    expect(p.version).toMatch(/^[0-9a-f]{12}$/);
    expect(Object.isFrozen(p.config.tiers)).toBe(true);
    expect(p.models.get('demo/small')?.price).toEqual({ inputPerMTok: 1, outputPerMTok: 5 });
  });

  it('reports every schema error at once with its YAML path and line', () => {
    const issues = issuesOf(BAD);
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i]));
    expect(Object.keys(byPath).sort()).toEqual(['budgets[0].limit.tokens', 'budgets[0].scope', 'budgets[0].window.timezone', 'providers.oops.kind'].sort());
    expect(byPath['providers.oops.kind']).toMatchObject({ line: 4, column: 17 });
    expect(byPath['budgets[0].scope']).toMatchObject({ line: 10 });
  });

  it('reports cross-reference errors: unknown providers, unpriced models, bad CEL', () => {
    const text = BAD.replace('  oops: { kind: telepathy }\n', '').replace('scope: planet', 'scope: user').replace('Mars/Olympus', 'Europe/Paris').replace('tokens: -5', 'tokens: 5');
    const issues = issuesOf(text);
    expect(issues.map((i) => [i.path, i.line, i.message.split(':')[0]])).toEqual([
      ['tiers.standard[1]', 5, 'provider "ghost" is not declared under providers'],
      ['tiers.economy[0]', 6, 'model demo/unpriced has no price'],
      ['rules[0].when', 14, 'invalid CEL expression'],
    ]);
  });

  it('checks the tiers a budget covers: declared, each once', () => {
    const text = basicPolicy({ extraBudgets: '    tiers: [premium, gold, premium]' });
    expect(issuesOf(text).map((i) => [i.path, i.message])).toEqual([
      ['budgets[0].tiers[1]', 'tier "gold" is not declared under tiers'],
      ['budgets[0].tiers[2]', 'tier "premium" is listed twice'],
    ]);
    expect(parsePolicy(basicPolicy({ extraBudgets: '    tiers: [premium, standard]' }), 'ok.yaml').budgets[0]!.config.tiers).toEqual(['premium', 'standard']);
  });

  it('names a missing environment binding and where it is used', () => {
    const text = basicPolicy().replace('demo: { kind: demo }', 'anthropic: { kind: anthropic, apiKey: "${env:ANTHROPIC_API_KEY}" }\n  demo: { kind: demo }').replace('\ntiers:', '\negress: { allow: [api.anthropic.com] }\ntiers:');
    expect(issuesOf(text)).toEqual([{ path: 'providers.anthropic.apiKey', line: 4, column: 41, message: 'environment variable ANTHROPIC_API_KEY is not set' }]);
  });

  it('substitutes env bindings, keeping numbers as numbers', () => {
    const text = basicPolicy().replace('tokens: 10000', 'tokens: "${env:CAP}"');
    const p = parsePolicy(text, 'b.yaml', { sources: { env: { CAP: '1234' }, readFile: () => '' } });
    expect(p.budgets[0]!.limit).toBe(1234);
  });

  it('reports YAML syntax errors with their line', () => {
    const issues = issuesOf('version: 1\ntiers: [unclosed\n');
    expect(issues[0]).toMatchObject({ path: '', line: expect.any(Number) });
  });

  it('fails start-up with every error and its path, exit code 1, no stack trace', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-bad-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, BAD);
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--policy', file, '--port', '0'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('POLICY_INVALID: Policy');
    expect(r.stderr).toContain('is invalid (4 errors)');
    expect(r.stderr).toContain('providers.oops.kind (line 4, col 17)');
    expect(r.stderr).toContain('budgets[0].window.timezone (line 11, col 41): not an IANA timezone name');
    expect(r.stderr).not.toContain('    at ');
  });
});
