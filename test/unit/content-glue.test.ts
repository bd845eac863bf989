/**
 * glueRuns (src/policy/contentView.ts) judges runs of spaced-out groups for the compact view. It
 * used to try a run that is not glued again from each next group, which made prose of equal-length
 * words cost the square of its word count (a probe: 400 KB of three-letter words, 17 s); it now
 * starts again at the run's last group, except after a run that ended at a group of the other case.
 * This holds the two equal on random groups: the reference below is the earlier code, kept as it
 * was, and the property fails if the new one skips a start the earlier one glued from.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildCompact, glueRuns } from '../../src/policy/contentView.js';

const MAX_GROUP = 8;
const MIN_GROUPS = 4;
const GROUP = 15;
const WORD_LIKE = 32;

/** glueRuns as it was before 2026-12-03 (tried again from each next group). */
function referenceGlueRuns(gs: Int32Array, ge: Int32Array, gc: Uint8Array, n: number, gaps: number[]): void {
  let i = 0;
  while (i + MIN_GROUPS <= n) {
    const len = ge[i]! - gs[i]!;
    if (len > MAX_GROUP) {
      i++;
      continue;
    }
    let cls = gc[i]! & GROUP;
    let mixed = (cls & 6) === 6;
    let prose = (gc[i]! & WORD_LIKE) !== 0;
    let j = i;
    while (j + 1 < n) {
      const m = ge[j + 1]! - gs[j + 1]!;
      const c = gc[j + 1]! & GROUP;
      if (((cls | c) & 3) === 3 && (cls & 3) !== (c & 3)) break;
      if (m > len) break;
      j++;
      cls |= c;
      if ((c & 6) === 6) mixed = true;
      if (!(gc[j]! & WORD_LIKE)) prose = false;
      if (m < len) break;
    }
    let a = i;
    let b = j;
    let inner = cls;
    if (cls & 4) {
      while (b - a + 1 > MIN_GROUPS && (gc[a]! & GROUP) === 2) a++;
      while (b - a + 1 > MIN_GROUPS && (gc[b]! & GROUP) === 2) b--;
      if (a !== i || b !== j) {
        inner = 0;
        for (let k = a; k <= b; k++) inner |= gc[k]! & GROUP;
      }
    }
    const groups = b - a + 1;
    if (!prose && groups >= MIN_GROUPS && ((inner & 1) !== 0 || mixed || (inner === 4 && len === 2 && groups >= 8))) {
      for (let k = a; k < b; k++) gaps.push(ge[k]!, gs[k + 1]!);
      i = j + 1;
    } else i++;
  }
}

/** A group's character classes: 1 capitals, 2 lowercase, 4 digits, 8 + / =, and WORD_LIKE. */
const groupClass = fc.oneof(
  fc.constantFrom(1, 2, 4, 8, 3, 5, 6, 7, 9, 12, 14, 15),
  fc.constantFrom(1, 2, 3).map((c) => c | WORD_LIKE),
);
const groupsArb = fc.array(fc.tuple(fc.integer({ min: 1, max: 10 }), groupClass), { minLength: 0, maxLength: 60 });

function gapsOf(glue: typeof glueRuns, groups: [number, number][]): number[] {
  const n = groups.length;
  const gs = new Int32Array(n);
  const ge = new Int32Array(n);
  const gc = new Uint8Array(n);
  let at = 0;
  groups.forEach(([len, cls], k) => {
    gs[k] = at;
    ge[k] = at + len;
    gc[k] = cls;
    at += len + 1;
  });
  const gaps: number[] = [];
  glue(gs, ge, gc, n, gaps);
  return gaps;
}

describe('glueRuns', () => {
  it('glues exactly what the earlier code glued, on random groups', () => {
    fc.assert(
      fc.property(groupsArb, (groups) => {
        expect(gapsOf(glueRuns, groups)).toEqual(gapsOf(referenceGlueRuns, groups));
      }),
      { numRuns: 20_000 },
    );
  });

  it('glues exactly what the earlier code glued on runs of few lengths and classes (long equal runs, case changes)', () => {
    const few = fc.array(fc.tuple(fc.constantFrom(1, 2, 4), fc.constantFrom(1, 2, 4, 6, 2 | WORD_LIKE, 1 | WORD_LIKE)), { minLength: 4, maxLength: 80 });
    fc.assert(
      fc.property(few, (groups) => {
        expect(gapsOf(glueRuns, groups)).toEqual(gapsOf(referenceGlueRuns, groups));
      }),
      { numRuns: 20_000 },
    );
  });

  it('leaves prose of equal-length words as it is (the shape that cost the square of its words)', () => {
    const words = Array.from({ length: 40_000 }, (_, i) => ['ran', 'sat', 'yet', 'one'][i % 4]).join(' ');
    expect(buildCompact([words]).compact).toBe(words);
  });
});
