/**
 * Whatever `tollgate check` refuses, `serve`, `stdio`, a hot reload and `explain` refuse too: a
 * cap_tier rule reading a misspelt field would otherwise never cap anyone, a deny rule reading one
 * would deny every call, and a rate limit's would apply to everyone.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseServedPolicy } from '../../src/cli/servedPolicy.js';
import type { Policy, PolicyIssue } from '../../src/policy/load.js';
import { watchPolicy } from '../../src/policy/reload.js';
import { DEMO_HEAD, policyRefusal } from '../fixtures/policies.js';

const HEAD = DEMO_HEAD;
const refusal = policyRefusal;

const CAP_TYPO = `${HEAD}rules:\n  - id: contractors-economy\n    when: "'contractors' in principal.group"\n    effect: cap_tier\n    tier: economy\n`;

describe('a policy served as tollgate check judges it', () => {
  it('refuses a cap_tier rule reading a field the principal does not have, at its line and column', () => {
    expect(refusal(() => parseServedPolicy(CAP_TYPO, 'p.yaml'))).toEqual([
      {
        path: 'rules[0].when',
        line: 9,
        column: 39,
        message: 'unknown field group on principal; known: user, teams, costCenter, groups, roles, authMethod, actors, app; did you mean groups?',
      },
    ]);
  });

  it("refuses a rate limit's when reading a misspelt principal field, which would otherwise apply the limit to everyone", () => {
    const text = `${HEAD}rateLimits:\n  - id: bots\n    scope: user\n    when: "principal.team == 'bots'"\n    requestsPerMinute: 5\n`;
    expect(refusal(() => parseServedPolicy(text, 'p.yaml'))).toEqual([
      {
        path: 'rateLimits[0].when',
        line: 10,
        column: 22,
        message: 'unknown field team on principal; known: user, teams, costCenter, groups, roles, authMethod, actors, app; did you mean teams?',
      },
    ]);
  });

  it("refuses a rate limit's when that reads the request, which it is not given", () => {
    const text = `${HEAD}rateLimits:\n  - { id: premium-calls, scope: user, when: "request.tier == 'premium'", requestsPerMinute: 5 }\n`;
    expect(refusal(() => parseServedPolicy(text, 'p.yaml')).map((i) => [i.path, i.message])).toEqual([
      ['rateLimits[0].when', "unknown variable request; a rate limit's when sees principal"],
    ]);
  });

  it('keeps the serving policy when a hot reload brings a rule reading request.teir, and logs why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-'));
    const path = join(dir, 'policy.yaml');
    const good = `${HEAD}rules:\n  - { id: no-premium, when: "request.tier == 'premium'", effect: deny }\n`;
    writeFileSync(path, good);
    const target = { policy: parseServedPolicy(good, path), replacePolicy(p: Policy) { this.policy = p; } };
    const before = target.policy.version;
    const errors: Record<string, unknown>[] = [];
    const logger = { info() {}, warn() {}, debug() {}, error: (fields: Record<string, unknown>) => void errors.push(fields) };
    const reloader = watchPolicy({ path, target, logger, watchFile: false, signals: null, parse: parseServedPolicy });
    writeFileSync(path, good.replace('request.tier', 'request.teir'));
    const outcome = await reloader.reload('sighup');
    reloader.close();
    expect(outcome.status).toBe('failed');
    expect(target.policy.version).toBe(before);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ event: 'policy_reload_failed', issues: [{ path: 'rules[0].when', line: 8, column: 38 }] });
    expect((errors[0]!.issues as PolicyIssue[])[0]!.message).toMatch(/^unknown field teir on request; known: .*; did you mean tier\?$/);
  });

  it("serves principal.app, which every expression is given: agent-loop-guard.yaml's rate limit and a rule", () => {
    const library = readFileSync(join(import.meta.dirname, '../../policy/library/agent-loop-guard.yaml'), 'utf8');
    expect(parseServedPolicy(library, 'agent-loop-guard.yaml').rateLimits.map((l) => l.config.id)).toContain('person-rpm');
    const rule = `${HEAD}rules:\n  - { id: apps-economy, when: "principal.app != '' && request.tier == 'premium'", effect: cap_tier, tier: economy }\n`;
    expect(parseServedPolicy(rule, 'p.yaml').rules).toHaveLength(1);
    const typo = `${HEAD}rules:\n  - { id: apps-economy, when: "principal.app != '' && request.teir == 'premium'", effect: cap_tier, tier: economy }\n`;
    expect(refusal(() => parseServedPolicy(typo, 'p.yaml')).map((i) => [i.column, i.message.split(';')[0]])).toEqual([[63, 'unknown field teir on request']]);
  });

  it('still serves what check accepts', () => {
    const text = `${HEAD}budgets:\n  - { id: w, scope: user, when: "'x' in principal.groups", window: { calendar: week }, limit: { tokens: 10 } }\nrateLimits:\n  - { id: rl, scope: user, when: "principal.user == 'erin'", requestsPerMinute: 5 }\nrules:\n  - { id: r, when: "budgets.w.remainingPct < 20.0 && request.tier == 'premium'", effect: cap_tier, tier: economy }\n`;
    expect(parseServedPolicy(text, 'p.yaml').rateLimits).toHaveLength(1);
  });
});
