import { readFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/principal.js';
import { explainCall, explainRequest, formatExplanation, parseUsageArg, principalFromArg } from '../../src/policy/explain.js';
import { parsePolicy } from '../../src/policy/load.js';
import type { UsageMap } from '../../src/policy/simulate.js';
import { basicPolicy, KEYS } from '../fixtures/policies.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const library = (name: string) => parsePolicy(readFileSync(new URL(`../../policy/library/${name}`, import.meta.url), 'utf8'), name);
const weekly = library('employee-weekly-tokens.yaml');
const contractors = library('contractors-economy.yaml');
const ladder = library('team-tier-ladder.yaml');
const fallback = library('weekly-tokens-fallback.yaml');

const who = (over: Partial<Principal> = {}): Principal => ({ user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key', ...over });
const explain = (policy: typeof weekly, principal: Principal, tier: string, usage: UsageMap = {}, maxTokens = 1024) =>
  explainCall({ policy, principal, request: explainRequest({ tier, maxTokens }), usage, now: NOW });

describe('explain', () => {
  it('names the rule that denies a contractor premium and the tiers that would be allowed', () => {
    const e = explain(contractors, who({ user: 'bob', groups: ['contractors'] }), 'premium');
    expect(e.decision).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'contractors-no-premium' });
    expect(e.decidedBy).toBe('rule contractors-no-premium');
    expect(e.changes[0]).toBe('premium is denied by rule contractors-no-premium; standard (served by economy), economy would be allowed');
  });

  it('explains a budget under its tier-down threshold', () => {
    const e = explain(weekly, who(), 'premium', { 'employee-weekly': { used: 1_640_000 } });
    expect(e.decision).toMatchObject({ effect: 'tier_down', tier: 'standard', budgetId: 'employee-weekly' });
    expect(e.decidedBy).toBe('budget employee-weekly');
    expect(e.budgets).toEqual([
      {
        id: 'employee-weekly',
        scope: 'user',
        subject: 'alice',
        unit: 'tokens',
        limit: 2_000_000,
        used: 1_640_000,
        reserved: 0,
        remaining: 360_000,
        remainingPct: 18,
        tierDownBelow: 20,
        resetsAt: '2026-11-29T23:00:00.000Z',
      },
    ]);
    expect(e.changes).toEqual(['budget employee-weekly has 18% left; tier-down threshold 20%: under it calls go to standard (resets 2026-11-29T23:00:00.000Z)']);
  });

  it('says how much more can be used before the tier-down threshold', () => {
    const e = explain(weekly, who(), 'premium', { 'employee-weekly': { used: 1_000_000 } });
    expect(e.decision).toMatchObject({ effect: 'allow', tier: 'premium' });
    expect(e.decidedBy).toBe('no rule or budget limited this call');
    expect(e.changes).toEqual(['budget employee-weekly has 50% left; tier-down threshold 20%: after another 600,000 tokens, calls go to standard']);
  });

  it('explains a refusal when the budget cannot cover the call, with its reset time', () => {
    const e = explain(weekly, who(), 'standard', { 'employee-weekly': { used: 1_999_990 } });
    expect(e.decision).toMatchObject({ effect: 'deny', code: 'BUDGET_EXHAUSTED', budgetId: 'employee-weekly' });
    expect(e.decidedBy).toBe('budget employee-weekly');
    expect(e.changes).toEqual(['budget employee-weekly has 10 tokens left, not enough for this call; calls are refused until it resets at 2026-11-29T23:00:00.000Z']);
  });

  it('explains a lowered max_tokens', () => {
    const e = explain(weekly, who(), 'economy', { 'employee-weekly': { used: 1_999_500 } });
    expect(e.decision).toMatchObject({ effect: 'allow', tier: 'economy' });
    expect(e.changes).toContain('max_tokens was lowered from 1024 to 498, all budget employee-weekly can pay for');
  });

  it('explains a cap_tier rule and names each team line of a shared budget', () => {
    const e = explain(ladder, who({ teams: ['a', 'b'] }), 'premium', { 'team_monthly@a': { used: 3_000_000 }, 'team_monthly@b': { used: 17_000_000 } });
    expect(e.decision).toMatchObject({ effect: 'tier_down', tier: 'economy', ruleId: 'team-budget-under-20pct' });
    expect(e.changes).toEqual([
      'rule team-budget-under-20pct caps this caller at economy: asking for premium is served by economy',
      'budget team_monthly (team a) has 85% left; tier-down threshold 50%: after another 7,000,000 tokens, calls stay on economy, the last tier',
      'budget team_monthly (team b) has 15% left; tier-down threshold 50%: under it calls stay on economy, the last tier (resets 2026-12-01T00:00:00.000Z)',
    ]);
  });

  it('explains a step down because the asked tier cannot be paid for', () => {
    const small = parsePolicy(
      `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium], economy: [demo/small] }
budgets:
  - { id: pocket, scope: user, window: { calendar: day }, limit: { usd: 0.05 } }
`,
      'small.yaml',
    );
    const e = explain(small, who(), 'standard', { pocket: { used: 0.035 } });
    expect(e.decision).toMatchObject({ effect: 'tier_down', tier: 'economy', budgetId: 'pocket', reason: 'Budget pocket cannot cover a standard call; served by tier economy.' });
    expect(e.changes).toEqual([
      'budget pocket has 30% left ($0.0150); no tier-down threshold: calls are refused once it cannot cover one (resets 2026-11-26T00:00:00.000Z)',
      'budget pocket cannot cover a standard call at max_tokens 1024; economy fits',
    ]);
  });

  it('says which budget covers which tier, and that a spent premium and standard budget sends the call to economy', () => {
    const e = explain(fallback, who(), 'premium', { 'weekly-premium-standard': { used: 2_000_000 } });
    expect(e.decision).toMatchObject({ effect: 'tier_down', tier: 'economy', budgetId: 'weekly-premium-standard', reason: 'Budget weekly-premium-standard cannot cover a standard call; served by tier economy.' });
    expect(e.coverage).toEqual([
      { tier: 'premium', budgets: ['weekly-premium-standard'] },
      { tier: 'standard', budgets: ['weekly-premium-standard'] },
      { tier: 'economy', budgets: ['weekly-economy'] },
    ]);
    expect(e.budgets.map((b) => [b.id, b.tiers])).toEqual([
      ['weekly-premium-standard', ['premium', 'standard']],
      ['weekly-economy', ['economy']],
    ]);
    expect(e.changes).toEqual([
      'budget weekly-premium-standard covers premium and standard only and has 0 tokens left, not enough for this call: it goes to economy, which it does not cover (resets 2026-11-29T23:00:00.000Z)',
      'budget weekly-economy has 100% left (500,000 tokens); no tier-down threshold: calls are refused once it cannot cover one (resets 2026-11-29T23:00:00.000Z)',
      'budget weekly-premium-standard cannot cover a standard call at max_tokens 1024; economy fits, charged to budget weekly-economy',
    ]);
  });

  it('names the economy budget when the fallback cannot be paid for either', () => {
    const e = explain(fallback, who(), 'premium', { 'weekly-premium-standard': { used: 2_000_000 }, 'weekly-economy': { used: 499_990 } });
    expect(e.decision).toMatchObject({ effect: 'deny', code: 'BUDGET_EXHAUSTED', budgetId: 'weekly-economy' });
    expect(e.decidedBy).toBe('budget weekly-economy');
    expect(e.changes).toEqual([
      'budget weekly-premium-standard covers premium and standard only and has 0 tokens left, not enough for this call; until it resets at 2026-11-29T23:00:00.000Z, calls go to economy, which it does not cover',
      'budget weekly-economy has 10 tokens left, not enough for this call; calls are refused until it resets at 2026-11-29T23:00:00.000Z',
    ]);
  });

  it('says a budget for other tiers is not charged, and when its threshold sent the call to a tier it does not cover', () => {
    expect(explain(fallback, who(), 'economy').changes[0]).toBe(
      'budget weekly-premium-standard covers premium and standard only and is not charged for this economy call; it has 2,000,000 tokens left (resets 2026-11-29T23:00:00.000Z)',
    );
    expect(explain(fallback, who(), 'premium').changes[1]).toBe(
      'budget weekly-economy covers economy only and is not charged for this premium call; it has 500,000 tokens left (resets 2026-11-29T23:00:00.000Z)',
    );
    const e = explain(fallback, who(), 'standard', { 'weekly-premium-standard': { used: 1_640_000 } });
    expect(e.decision).toMatchObject({ effect: 'tier_down', tier: 'economy', budgetId: 'weekly-premium-standard' });
    expect(e.changes[0]).toBe(
      'budget weekly-premium-standard covers premium and standard only and has 18% left, under its tier-down threshold of 20%: the call goes to economy, which it does not cover (resets 2026-11-29T23:00:00.000Z)',
    );
  });

  it('formats which budget covers which tier when budgets cover some tiers only', () => {
    const text = formatExplanation(explain(fallback, who(), 'premium', { 'weekly-premium-standard': { used: 2_000_000 } }));
    expect(text).toContain(
      [
        'budgets:',
        '  weekly-premium-standard (user alice; premium, standard only): 0 tokens of 2,000,000 tokens left (0%); used 2,000,000 tokens, reserved 0 tokens; tier-down under 20%; resets 2026-11-29T23:00:00.000Z',
        '  weekly-economy (user alice; economy only): 500,000 tokens of 500,000 tokens left (100%); used 0 tokens, reserved 0 tokens; resets 2026-11-29T23:00:00.000Z',
        'tiers:',
        '  premium:  weekly-premium-standard',
        '  standard: weekly-premium-standard',
        '  economy:  weekly-economy   <- serves this call',
        'what would change it:',
      ].join('\n'),
    );
  });

  it('says when no budget applies', () => {
    const e = explain(ladder, who(), 'premium');
    expect(e.budgets).toEqual([]);
    expect(e.changes).toEqual(['no budget applies to this caller']);
  });

  it('formats the whole report for a terminal', () => {
    const text = formatExplanation(explain(weekly, who({ teams: ['platform'], groups: ['employees'] }), 'premium', { 'employee-weekly': { used: 1_640_000 } }));
    expect(text).toBe(
      [
        'caller:     alice teams=[platform] groups=[employees]',
        'request:    tier premium, max_tokens 1024',
        'decision:   tier_down -> tier standard (demo/medium)',
        'decided by: budget employee-weekly',
        'reason:     Budget employee-weekly has 18.0% left (under 20%), so the call is served one tier down.',
        'budgets:',
        '  employee-weekly (user alice): 360,000 tokens of 2,000,000 tokens left (18%); used 1,640,000 tokens, reserved 0 tokens; tier-down under 20%; resets 2026-11-29T23:00:00.000Z',
        'what would change it:',
        '  - budget employee-weekly has 18% left; tier-down threshold 20%: under it calls go to standard (resets 2026-11-29T23:00:00.000Z)',
        '',
      ].join('\n'),
    );
  });
});

describe('explain arguments', () => {
  const policy = parsePolicy(basicPolicy(), 'basic.yaml');

  it('takes a principal as JSON', () => {
    expect(principalFromArg(policy, '{"user":"bob","groups":["contractors"]}')).toEqual({ user: 'bob', teams: [], groups: ['contractors'], roles: [], authMethod: 'api_key' });
  });

  it('takes an API key listed in the policy', () => {
    expect(principalFromArg(policy, KEYS.alice)).toEqual({
      user: 'alice',
      teams: ['platform'],
      costCenter: 'cc-1',
      groups: ['employees'],
      roles: [],
      authMethod: 'api_key',
      credentialId: 'k-alice',
    });
  });

  it('takes a token from a listed issuer, mapping its claims as the gateway does', async () => {
    const withIssuer = parsePolicy(
      `${basicPolicy()}
identity:
  oidc:
    - issuer: https://sso.example.com/realms/acme
      audience: tollgate
      claims: { user: preferred_username, costCenter: cost_center }
`,
      'oidc.yaml',
    );
    const claims = { preferred_username: 'dana', groups: ['/eng/platform', 'contractors'], cost_center: 'cc-7', realm_access: { roles: ['dev'] } };
    const token = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://sso.example.com/realms/acme').sign(new TextEncoder().encode('not-checked'));
    const principal = principalFromArg(withIssuer, token);
    expect(principal).toEqual({
      user: 'dana',
      teams: ['platform', 'contractors'],
      groups: ['platform', 'contractors'],
      costCenter: 'cc-7',
      roles: ['dev'],
      authMethod: 'jwt',
      credentialId: 'https://sso.example.com/realms/acme',
    });
    const text = formatExplanation(explainCall({ policy: withIssuer, principal, request: explainRequest({ tier: 'premium' }), now: NOW }));
    expect(text.split('\n').slice(0, 4)).toEqual([
      'caller:     dana teams=[platform,contractors] costCenter=cc-7 groups=[platform,contractors] roles=[dev] (claims of a token from https://sso.example.com/realms/acme; signature not checked)',
      'request:    tier premium, max_tokens 1024',
      'decision:   deny POLICY_DENIED',
      'decided by: rule contractors-no-premium',
    ]);
    const stranger = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://evil.example.com').sign(new TextEncoder().encode('x'));
    expect(() => principalFromArg(withIssuer, stranger)).toThrowError(expect.objectContaining({ code: 'AUTH_INVALID' }));
  });

  it('refuses an unknown key and malformed JSON', () => {
    expect(() => principalFromArg(policy, 'nope')).toThrowError(expect.objectContaining({ code: 'AUTH_INVALID' }));
    expect(() => principalFromArg(policy, '{"user":')).toThrowError(expect.objectContaining({ code: 'INVALID_REQUEST' }));
    expect(() => principalFromArg(policy, '{"user":"x","team":"a"}')).toThrowError(expect.objectContaining({ code: 'INVALID_REQUEST' }));
  });

  it('parses --usage into amounts by budget id or budget@subject', () => {
    expect(parseUsageArg('employee-weekly=1640000, team_monthly@data=12.5')).toEqual({ 'employee-weekly': { used: 1_640_000 }, 'team_monthly@data': { used: 12.5 } });
    expect(() => parseUsageArg('employee-weekly')).toThrowError(expect.objectContaining({ code: 'INVALID_REQUEST' }));
    expect(() => parseUsageArg('x=lots')).toThrowError(expect.objectContaining({ code: 'INVALID_REQUEST' }));
  });
});
