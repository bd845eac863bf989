/**
 * `tollgate check` catches what would break at run time (issue 18 item 4): CEL expressions
 * type-checked against the variables they see, with the known fields and the closest one; zod
 * errors with the path, the type expected, the value found and the key meant; percentages in 0-100.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { check, explain } from '../../src/cli/policyCommands.js';
import { checkExpression } from '../../src/policy/celCheck.js';
import { SHIPPED_PRICES } from '../../src/providers/prices.js';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-check-'));
function checkText(name: string, text: string) {
  const file = join(dir, name);
  writeFileSync(file, text);
  return { file, ...check(file, {}, {}) };
}

const HEAD = `version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
`;

describe('check: CEL against the declared variables', () => {
  it('names an unknown request field at its file:line:col, with the known fields and the one meant', () => {
    const r = checkText('teir.yaml', `${HEAD}rules:\n  - id: contractors\n    when: "'contractors' in principal.groups && request.teir == 'premium'"\n    effect: deny\n    message: no\n`);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `${r.file}:9:57: rules[0].when: unknown field teir on request; known: model, tier, provider, maxTokens, inputTokens, text, rawText, compactText, decodedSpans, decodedTruncated, secrets; did you mean tier?\n${r.file}: 1 error\n`,
    );
  });

  it('explains budgets.employee-weekly, and names an unknown budget or budget field', () => {
    const budgets = `budgets:\n  - { id: employee-weekly, scope: user, window: { calendar: week }, limit: { tokens: 1000 } }\n`;
    expect(checkExpression('budgets.employee-weekly.remainingPct < 20', 'rule', ['employee-weekly'])).toEqual([
      { message: "budgets.employee-weekly reads as budgets.employee minus weekly: write budgets['employee-weekly']", offset: 0 },
    ]);
    expect(checkExpression("budgets['employee-weekley'].remainingPct < 20", 'rule', ['employee-weekly'])[0]!.message).toBe('unknown budget employee-weekley; budgets are employee-weekly; did you mean employee-weekly?');
    const r = checkText('pct.yaml', `${HEAD}${budgets}rules:\n  - id: low\n    when: "budgets['employee-weekly'].remainingPc < 20"\n    effect: deny\n    message: no\n`);
    expect(r.err).toContain(`${r.file}:11:39: rules[0].when: unknown field remainingPc on a budget; known: used, reserved, limit, remaining, remainingPct; did you mean remainingPct?`);
  });

  it("checks a budget's when against the principal only", () => {
    expect(checkExpression("request.tier == 'premium'", 'budget', [])[0]!.message).toBe("unknown variable request; a budget's when sees principal");
    expect(checkExpression("'x' in principal.grups", 'budget', [])[0]!.message).toBe('unknown field grups on principal; known: user, teams, costCenter, groups, roles, authMethod, actors, app; did you mean groups?');
  });

  it('passes the expressions tollgate ships', () => {
    for (const src of ["'contractors' in principal.groups && request.tier == 'premium'", "budgets['employee-weekly'].remainingPct < 20.0 && now.getHours('Europe/Paris') < 8", 'request.secrets.size() > 0 || request.inputTokens + request.maxTokens > 1000']) {
      expect(checkExpression(src, 'rule', ['employee-weekly'])).toEqual([]);
    }
  });
});

describe('check: a per cent written as a fraction', () => {
  it('warns about a rule comparing remainingPct with a number between 0 and 1, and passes the library\'s form', () => {
    const rule = (when: string) =>
      `${HEAD}budgets:\n  - { id: team_monthly, scope: team, window: { calendar: month }, limit: { tokens: 1000 } }\nrules:\n  - { id: ladder, when: "has(budgets.team_monthly) && ${when}", effect: cap_tier, tier: standard }\n`;
    const fraction = checkText('fraction.yaml', rule('budgets.team_monthly.remainingPct < 0.2'));
    expect(fraction.code).toBe(0);
    expect(fraction.err ?? '').toContain('PERCENT_AS_FRACTION');
    expect(fraction.err ?? '').toContain('rules[0] (ladder) compares remainingPct, a per cent from 0 to 100, with 0.2: that is 0.2 % left, not 20 %; write 20.0 if a share was meant');
    expect(checkText('percent.yaml', rule('budgets.team_monthly.remainingPct < 20.0')).err ?? '').not.toContain('PERCENT_AS_FRACTION');
  });
});

describe('check: configuration errors', () => {
  it('renders the path, the type expected, the value received, and the key meant', () => {
    const r = checkText(
      'zod.yaml',
      `version: 1\ndefaultTeir: standard\nproviders:\n  demo: { kind: demo }\ntiers:\n  standard: [demo/medium]\nbudgets:\n  - id: weekly\n    scope: user\n    window: { calendar: week }\n    limit: { tokens: "three thousand" }\n    tierDown: { below: 120% }\n`,
    );
    expect(r.code).toBe(1);
    expect(r.err!.split('\n')).toEqual([
      `${r.file}:11:22: budgets[0].limit.tokens: expected number, got string "three thousand"`,
      `${r.file}:12:24: budgets[0].tierDown.below: a percentage from 0% to 100%, like "20%", got "120%"`,
      `${r.file}:2:14: defaultTeir: unknown key defaultTeir; did you mean defaultTier? (known: version, name, bindings, providers, egress, models, tiers, defaultTier, apiKeys, identity, budgets, rateLimits, applications, rules, limits, metering, console, alerts)`,
      `${r.file}: 3 errors`,
      '',
    ]);
  });

  it('accepts 0% and 100%, and refuses 100.5%', () => {
    const budget = (below: string) => `${HEAD}budgets:\n  - { id: w, scope: user, window: { calendar: week }, limit: { tokens: 10 }, tierDown: { below: ${below} } }\n`;
    expect(checkText('p0.yaml', budget('0%')).code).toBe(0);
    expect(checkText('p100.yaml', budget('100%')).code).toBe(0);
    expect(checkText('p1005.yaml', budget('100.5%')).err).toContain('a percentage from 0% to 100%, like "20%", got "100.5%"');
  });
});

describe('check: shipped prices older than 90 days', () => {
  const openai = (model: string, declared = '') => `version: 1
providers:
  openai: { kind: openai, apiKey: sk-test }
egress: { allow: [api.openai.com] }
${declared}tiers:
  standard: [openai/${model}]
`;
  const at = (name: string, text: string, iso: string) => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return { file, ...check(file, {}, {}, Date.parse(iso)) };
  };

  it('warns, naming the model, the date and the source, and still exits 0', () => {
    const r = at('gpt5.yaml', openai('gpt-5'), '2026-11-29T12:00:00Z');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/: valid \(version /);
    expect(r.err).toBe(
      `${r.file}: warning PRICE_UNCHECKED: the shipped price of openai/gpt-5 was last checked on 2026-06-20 (162 days ago, against ${SHIPPED_PRICES['openai/gpt-5']!.how}; ` +
        'source https://developers.openai.com/api/docs/pricing): confirm it there and declare models."openai/gpt-5".price, or update src/providers/prices.ts\n',
    );
  });

  it('warns from the 91st day after the check, not before', () => {
    expect(at('mini90.yaml', openai('gpt-5-mini'), '2027-02-27T23:59:00Z').err).toBeUndefined();
    expect(at('mini91.yaml', openai('gpt-5-mini'), '2027-02-28T00:00:00Z').err).toContain('the shipped price of openai/gpt-5-mini was last checked on 2026-11-29 (91 days ago');
  });

  it('says nothing of a model whose price the policy declares', () => {
    const r = at('declared.yaml', openai('gpt-5', 'models:\n  openai/gpt-5: { price: { inputPerMTok: 1.25, outputPerMTok: 10 } }\n'), '2026-11-29T12:00:00Z');
    expect(r).toMatchObject({ code: 0, err: undefined });
  });
});

describe('check: models retired or retiring within 60 days', () => {
  const anthropic = (models: string[], declared = '') => `version: 1
providers:
  claude: { kind: anthropic, apiKey: sk-ant-test }
egress: { allow: [api.anthropic.com] }
${declared}tiers:
  standard: [${models.map((m) => `claude/${m}`).join(', ')}]
`;
  const at = (name: string, text: string, iso: string) => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return { file, ...check(file, {}, {}, Date.parse(iso)) };
  };
  const SONNET_SOURCE = SHIPPED_PRICES['anthropic/claude-sonnet-4-5']!.retiresSource;

  it('warns MODEL_RETIRED on the retirement day, naming the date, its source and the successor, and still exits 0', () => {
    const r = at('sonnet45.yaml', anthropic(['claude-sonnet-4-5']), '2026-11-30T12:00:00Z');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/: valid \(version /);
    expect(r.err).toBe(
      `${r.file}: warning MODEL_RETIRED: claude/claude-sonnet-4-5 was retired on 2026-11-30 (source: ${SONNET_SOURCE}): ` +
        'calls to it fail; move its tiers to claude/claude-sonnet-5-5\n',
    );
  });

  it('warns MODEL_RETIRING from 60 days before the retirement day, not before, counting the days left', () => {
    expect(at('early.yaml', anthropic(['claude-sonnet-4-5-20250929']), '2026-09-30T23:59:00Z').err).toBeUndefined();
    expect(at('d60.yaml', anthropic(['claude-sonnet-4-5-20250929']), '2026-10-01T00:00:00Z').err).toBe(
      `${join(dir, 'd60.yaml')}: warning MODEL_RETIRING: claude/claude-sonnet-4-5-20250929 retires on 2026-11-30, in 60 days (source: ${SONNET_SOURCE}): ` +
        'calls to it will fail from that day; move its tiers to claude/claude-sonnet-5-5\n',
    );
    expect(at('d1.yaml', anthropic(['claude-sonnet-4-5']), '2026-11-29T12:00:00Z').err).toContain('warning MODEL_RETIRING: claude/claude-sonnet-4-5 retires on 2026-11-30, in 1 day (source:');
  });

  it('warns of claude-opus-4-5 from 2026-11-23, 60 days before its retirement on 2027-01-22', () => {
    expect(at('opus-before.yaml', anthropic(['claude-opus-4-5']), '2026-11-22T12:00:00Z').err).toBeUndefined();
    expect(at('opus.yaml', anthropic(['claude-opus-4-5']), '2026-11-30T12:00:00Z').err).toContain(
      'warning MODEL_RETIRING: claude/claude-opus-4-5 retires on 2027-01-22, in 53 days (source: @anthropic-ai/sdk',
    );
  });

  it('warns even when the policy declares the price itself: a price does not keep a retired model answering', () => {
    const r = at('declared-old.yaml', anthropic(['claude-sonnet-4-5'], 'models:\n  claude/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }\n'), '2026-12-01T00:00:00Z');
    expect(r.err).toContain('warning MODEL_RETIRED: claude/claude-sonnet-4-5 was retired on 2026-11-30');
  });

  it('says nothing of the current models', () => {
    expect(at('current.yaml', anthropic(['claude-sonnet-5-5', 'claude-opus-5-5', 'claude-sonnet-4-6', 'claude-haiku-4-5']), '2026-11-30T12:00:00Z')).toMatchObject({ code: 0, err: undefined });
  });

  it('gives every retiring row a date, where it was read, and a successor the catalogue prices', () => {
    for (const [ref, row] of Object.entries(SHIPPED_PRICES)) {
      if (!row.retires) continue;
      expect(row.retires, ref).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(new Date(`${row.retires}T00:00:00Z`).toISOString().slice(0, 10), ref).toBe(row.retires);
      expect(row.retiresSource, ref).toMatch(/\S/);
      expect(SHIPPED_PRICES[`${ref.split('/')[0]}/${row.successor}`], ref).toBeDefined();
      expect(SHIPPED_PRICES[`${ref.split('/')[0]}/${row.successor}`]!.retires, ref).toBeUndefined();
    }
  });
});

describe('explain --now', () => {
  // Read by Date.parse, a time without a zone was the machine's local time (a policy with office
  // hours allowed the call under TZ=UTC and denied it under Asia/Kolkata), and 0 or 2026-02-30 passed.
  it.each(['2026-12-07T08:30:00', '2026-02-30T10:00:00Z', '0'])('refuses %s, as the reading commands do', async (now) => {
    const flags = { policy: 'policy/library/contractors-economy.yaml', as: '{"user":"bob","groups":["contractors"]}', tier: 'premium', now };
    await expect(explain(flags, {})).rejects.toThrow(new RegExp(`^--now ${now} (has no time zone|is not)`));
  });
});
