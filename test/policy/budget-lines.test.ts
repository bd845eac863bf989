/**
 * Budget lines (src/policy/budgets.ts, applicableLines): a line is made once per budget, key prefix,
 * subject and window (a rolling window's bucket) and served again within it, so the keys and the
 * JSON head the journal lists it with must always be the ones of the window `now` falls in.
 */
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/principal.js';
import { applicableLines } from '../../src/policy/budgets.js';
import { parsePolicy } from '../../src/policy/load.js';
import { lineText } from '../../src/quota/redisJournal.js';

const policy = () =>
  parsePolicy(
    `version: 1
name: lines
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
models:
  demo/medium: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: Europe/Paris }, limit: { tokens: 1000 } }
  - { id: team-daily, scope: team, window: { calendar: day }, limit: { usd: 5 } }
  - { id: user-rolling, scope: user, window: { rolling: { hours: 4 } }, limit: { tokens: 100 } }
`,
    'lines.yaml',
  );

const principal = (user: string): Principal => ({ user, teams: ['ml', 'data'], costCenter: 'cc-7', groups: [], roles: [], authMethod: 'api_key', credentialId: `k-${user}` });
const NOW = Date.parse('2026-11-25T10:00:07.250Z');

describe('budget lines', () => {
  it('serves the same line objects while the windows stay the same', () => {
    const p = policy();
    const first = applicableLines(p.budgets, principal('ada'), NOW, 'tg:');
    expect(first.map((l) => `${l.budget.config.id}=${l.subject}`)).toEqual(['user-weekly=ada', 'team-daily=ml', 'team-daily=data', 'user-rolling=ada']);
    const again = applicableLines(p.budgets, principal('ada'), NOW + 1000, 'tg:');
    again.forEach((l, i) => expect(l).toBe(first[i]));
  });

  it('makes new lines in the next window, on another prefix, and for another subject', () => {
    const p = policy();
    const first = applicableLines(p.budgets, principal('ada'), NOW, 'tg:');
    const nextDay = applicableLines(p.budgets, principal('ada'), Date.parse('2026-11-26T00:00:00.001Z'), 'tg:');
    // The weekly line stays; the daily lines and the rolling line (a new bucket) are new.
    expect(nextDay[0]).toBe(first[0]);
    for (const i of [1, 2, 3]) {
      expect(nextDay[i]).not.toBe(first[i]);
      expect(nextDay[i]!.line.usageKey).not.toBe(first[i]!.line.usageKey);
    }
    const otherPrefix = applicableLines(p.budgets, principal('ada'), NOW, 'other:');
    expect(otherPrefix[0]!.line.usageKey.startsWith('other:')).toBe(true);
    const bob = applicableLines(p.budgets, principal('bob'), NOW, 'tg:');
    expect(bob[0]!.subject).toBe('bob');
    expect(bob[0]!.line.reservedKey).not.toBe(first[0]!.line.reservedKey);
  });

  it('gives each line the window and keys of the time asked for, the same as a line made afresh', () => {
    const kept = policy();
    const times = [NOW, NOW + 1000, Date.parse('2026-11-25T13:59:59Z'), Date.parse('2026-11-25T14:00:01Z'), Date.parse('2026-11-30T00:00:00Z')];
    for (const t of times) {
      // The kept lines (served across calls) and a fresh policy's (made now) must agree on everything.
      const served = applicableLines(kept.budgets, principal('ada'), t, 'tg:');
      const fresh = applicableLines(policy().budgets, principal('ada'), t, 'tg:');
      expect(served.map((l) => ({ subject: l.subject, resetsAt: l.resetsAt, line: l.line }))).toEqual(fresh.map((l) => ({ subject: l.subject, resetsAt: l.resetsAt, line: l.line })));
    }
  });

  it('carries the head of its journal JSON, so a charged copy lists its own amount', () => {
    const [line] = applicableLines(policy().budgets, principal('o"brien'), NOW, 'tg:');
    const charged = { ...line!.line, amount: 42 };
    const { head: _head, ...fields } = charged;
    expect(lineText(charged)).toBe(JSON.stringify({ budgetId: fields.budgetId, subject: fields.subject, usageKey: fields.usageKey, reservedKey: fields.reservedKey, amount: 42, expiresAt: fields.expiresAt }));
  });
});
