/**
 * Reading Redis rollup hashes (rollupHash, mergeRollupHashes) against the one definition of what
 * an event adds (addEventRollup): a hash made of the fields rollupFields gives, as the scripts add
 * them, reads back as the rows the events add up to, in day-then-dimensions order, whatever the
 * events, and however a day's events are split between hashes (a cluster's lines).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addEventRollup, mergeRollupHashes, rollupFields, rollupHash, ROLLUP_VERSION_FIELD, type UsageRollup } from '../../src/quota/rollups.js';
import type { DecisionRecord } from '../../src/quota/store.js';

/** A hash as HGETALL sends it, made of what the events add (HINCRBY per field), with a version. */
function hashOf(events: DecisionRecord[], version?: string): string[] {
  const fields = new Map<string, number>();
  for (const e of events) {
    const add = rollupFields(e);
    for (let i = 0; i < add.length; i += 2) fields.set(add[i] as string, (fields.get(add[i] as string) ?? 0) + (add[i + 1] as number));
  }
  const flat = [...fields].flatMap(([f, v]) => [f, String(v)]);
  return version === undefined ? flat : [ROLLUP_VERSION_FIELD, version, ...flat];
}

/** What addEventRollup adds up, in the order rows are read: by day, then dimensions. */
function expected(days: [string, DecisionRecord[]][]): UsageRollup[] {
  const rows = new Map<string, UsageRollup>();
  for (const [day, events] of days) for (const e of events) addEventRollup(rows, day, e);
  return [...rows.values()];
}

const event = fc.record({
  'request.id': fc.uuid(),
  event: fc.constant('tollgate.decision'),
  outcome: fc.constantFrom('success', 'refused', 'failed'),
  'error.code': fc.constantFrom('POLICY_DENIED', 'BUDGET_EXHAUSTED', 'PROVIDER_ERROR'),
  'user.id': fc.constantFrom('ada', 'bob', 'zoë', 'a|b'),
  'user.teams': fc.subarray(['ml', 'data', 'x,y']),
  'user.cost_center': fc.constantFrom('cc-1', 'cc 2'),
  'tollgate.model.served': fc.constantFrom('demo/large', 'demo/medium'),
  'tollgate.tier.served': fc.constantFrom('premium', 'standard'),
  'gen_ai.usage.input_tokens': fc.nat(5000),
  'gen_ai.usage.output_tokens': fc.nat(5000),
  'tollgate.cost_usd': fc.double({ min: 0, max: 1, noNaN: true }),
}) as fc.Arbitrary<DecisionRecord>;

describe('rollup hashes read back', () => {
  it('reads a day hash as the rows its events add up to, with its version apart', () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 30 }), (events) => {
        const h = rollupHash('2026-11-02', hashOf(events, 'ab12'));
        expect(h.version).toBe('ab12');
        const key = (r: UsageRollup) => JSON.stringify(r);
        expect(h.rows.map(key).sort()).toEqual(expected([['2026-11-02', events]]).map(key).sort());
        // Sorted by dimensions, each row beside its own.
        expect(h.dims).toEqual([...h.dims].sort());
        h.rows.forEach((r, i) => expect(decodeURIComponent(h.dims[i]!.split('|')[0]!)).toBe(r.user));
      }),
    );
  });

  it('sums a day split between hashes, and orders rows by day, then dimensions', () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 20 }), fc.array(event, { maxLength: 20 }), fc.array(event, { maxLength: 20 }), (a, b, c) => {
        const merged = mergeRollupHashes([rollupHash('2026-11-03', hashOf(c)), rollupHash('2026-11-02', hashOf(a, 'v1')), rollupHash('2026-11-02', hashOf(b, 'v2'))]);
        const want = expected([['2026-11-02', [...a, ...b]], ['2026-11-03', c]]);
        const key = (r: UsageRollup) => JSON.stringify(r);
        expect(merged.map(key).sort()).toEqual(want.map(key).sort());
        const order = merged.map((r) => r.day);
        expect(order).toEqual([...order].sort());
      }),
    );
  });

  it('gives the rows of a day with one hash as read, and never changes them when it sums', () => {
    const one = rollupHash('2026-11-02', hashOf([{ event: 'tollgate.decision', 'request.id': 'r1', outcome: 'success', 'user.id': 'ada', 'gen_ai.usage.input_tokens': 3 }]));
    const frozen = JSON.stringify(one.rows);
    expect(mergeRollupHashes([one])[0]).toBe(one.rows[0]);
    const two = mergeRollupHashes([one, one]);
    expect(two).toMatchObject([{ user: 'ada', calls: 2, inputTokens: 6 }]);
    expect(JSON.stringify(one.rows)).toBe(frozen);
  });
});
