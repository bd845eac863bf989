/**
 * A line's JSON as journal entries list it (lineText): its head (budget, subject and keys) is made
 * once for the lines calls share and carried with them, so the text must stay exactly what
 * serializing the line's fields gives: other amounts and expiries on the same line, lines that
 * share some of the four strings, strings JSON must escape, and many lines in turn.
 */
import { describe, expect, it } from 'vitest';
import type { EntryLine } from '../../src/quota/journal.js';
import { lineText } from '../../src/quota/redisJournal.js';

type Line = EntryLine;

/** The line's fields serialized in the entry's order, the reference the cached text must equal. */
const expected = (l: Line): string =>
  JSON.stringify({ budgetId: l.budgetId, subject: l.subject, usageKey: l.usageKey, reservedKey: l.reservedKey, amount: l.amount, expiresAt: l.expiresAt });

const line = (budgetId: string, subject: string, amount = 10, expiresAt = 1_796_605_200_000): Line => ({
  budgetId,
  subject,
  usageKey: `tg:{${budgetId}|${subject}}:u:1795993200000`,
  reservedKey: `tg:{${budgetId}|${subject}}:r`,
  amount,
  expiresAt,
});

describe('lineText', () => {
  it('is the line serialized, for every amount and expiry on the same line', () => {
    for (const [amount, expiresAt] of [[10, 1_796_605_200_000], [0, 1_796_605_200_000], [123_456_789, 1], [0.5, 2_000_000_000_000]] as const) {
      const l = line('user-weekly', 'ada', amount, expiresAt);
      expect(lineText(l)).toBe(expected(l));
    }
  });

  it('tells apart lines that share three of the four strings', () => {
    const a = line('team-monthly', 'ml');
    const others: Line[] = [
      { ...a, budgetId: 'team-weekly' },
      { ...a, subject: 'data' },
      { ...a, usageKey: `${a.usageKey}0` },
      { ...a, reservedKey: `${a.reservedKey}x` },
    ];
    expect(lineText(a)).toBe(expected(a));
    for (const o of others) expect(lineText(o)).toBe(expected(o));
    expect(new Set([a, ...others].map(lineText)).size).toBe(5);
  });

  it('escapes what JSON must escape, and the text parses back to the line', () => {
    const l = line('cc"monthly', 'o\'brien\\ "quoted"\n\u0001é');
    expect(lineText(l)).toBe(expected(l));
    expect(JSON.parse(lineText(l))).toEqual(l);
  });

  it('keeps a text given with the line as it is', () => {
    const l = { ...line('rpm', 'ada'), text: '{"given":true}' };
    expect(lineText(l)).toBe('{"given":true}');
  });

  it('stays exact over many distinct lines, and on the first ones again', () => {
    const lines = Array.from({ length: 5000 }, (_, i) => line(`b${i % 7}`, `user-${i}`, i));
    for (const l of lines) expect(lineText(l)).toBe(expected(l));
    // The first lines again, at other amounts.
    for (const l of lines.slice(0, 50)) expect(lineText({ ...l, amount: l.amount + 1 })).toBe(expected({ ...l, amount: l.amount + 1 }));
  });
});
