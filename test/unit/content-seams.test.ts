/**
 * The seams' windows (src/policy/content.ts `seamsOf`) are slices of each side's message ends joined
 * once. They must be exactly the windows the message-by-message construction made, which this file
 * keeps as the reference: up to WINDOW characters either side of the seam, gathered through as many
 * messages as it takes, cut at a word boundary only where the window was cut out of a longer text.
 * Random prompts of short, long, empty and blank messages, and the shapes that sit on the edges.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromWordStart, seamsOf, toWordEnd, type PartEnds, type Seam } from '../../src/policy/content.js';
import { WINDOW } from '../../src/policy/contentView.js';

/** The construction seamsOf replaced, message by message. */
function reference(parts: readonly PartEnds[], i: number): Seam {
  let left = parts[i]!.tail;
  let cleft = parts[i]!.compactTail;
  for (let j = i - 1; j >= 0 && left.length < WINDOW; j--) left = `${parts[j]!.tail}\n${left}`;
  for (let j = i - 1; j >= 0 && cleft.length < WINDOW; j--) cleft = parts[j]!.compactTail + cleft;
  let gleft = parts[i]!.tail;
  for (let j = i - 1; j >= 0 && gleft.length < WINDOW; j--) gleft = parts[j]!.tail + gleft;
  if (gleft.length > WINDOW) gleft = gleft.slice(-WINDOW).slice(fromWordStart(gleft.slice(-WINDOW)));
  let gright = parts[i + 1]!.head;
  for (let j = i + 2; j < parts.length && gright.length < WINDOW; j++) gright += parts[j]!.head;
  if (gright.length > WINDOW) gright = gright.slice(0, WINDOW).slice(0, toWordEnd(gright.slice(0, WINDOW)));
  let right = parts[i + 1]!.head;
  let cright = parts[i + 1]!.compactHead;
  for (let j = i + 2; j < parts.length && right.length < WINDOW; j++) right = `${right}\n${parts[j]!.head}`;
  for (let j = i + 2; j < parts.length && cright.length < WINDOW; j++) cright += parts[j]!.compactHead;
  if (left.length > WINDOW) left = left.slice(-WINDOW).slice(fromWordStart(left.slice(-WINDOW)));
  if (cleft.length > WINDOW) cleft = cleft.slice(-WINDOW).slice(fromWordStart(cleft.slice(-WINDOW)));
  if (right.length > WINDOW) right = right.slice(0, WINDOW).slice(0, toWordEnd(right.slice(0, WINDOW)));
  if (cright.length > WINDOW) cright = cright.slice(0, WINDOW).slice(0, toWordEnd(cright.slice(0, WINDOW)));
  let pleft = parts[i]!.compactTail;
  let pright = parts[i + 1]!.compactHead;
  if (parts[i]!.length > WINDOW) pleft = pleft.slice(fromWordStart(pleft));
  if (parts[i + 1]!.length > WINDOW) pright = pright.slice(0, toWordEnd(pright));
  return { text: `${left}\n${right}`, at: left.length, compact: cleft + cright, cat: cleft.length, pair: pleft + pright, glued: gleft + gright, gat: gleft.length };
}

/** A message's ends as analysePart keeps them; its compact view here is its text without blanks. */
function ends(text: string): PartEnds {
  const compact = text.replace(/\s+/g, '');
  return { length: text.length, head: text.slice(0, WINDOW), tail: text.slice(-WINDOW), compactHead: compact.slice(0, WINDOW), compactTail: compact.slice(-WINDOW) };
}

const check = (texts: string[]) => {
  const parts = texts.map(ends);
  expect(seamsOf(parts)).toEqual(parts.slice(1).map((_, i) => reference(parts, i)));
};

describe('seam windows', () => {
  it('are the windows of the message-by-message construction, for random prompts', () => {
    const word = fc.stringMatching(/^[a-zA-Z0-9_]{0,80}$/);
    const message = fc.oneof(
      fc.array(word, { maxLength: 3 }).map((w) => w.join(' ')),
      fc.array(word, { maxLength: 40 }).map((w) => w.join(' ')),
      fc.array(fc.tuple(word, fc.constantFrom(' ', '\n', '  ')), { maxLength: 150 }).map((w) => w.map(([a, b]) => a + b).join('')),
      fc.constantFrom('', ' ', 'x', 'A'.repeat(WINDOW), 'B'.repeat(WINDOW - 1), 'C'.repeat(WINDOW + 1)),
    );
    fc.assert(fc.property(fc.array(message, { minLength: 2, maxLength: 40 }), check), { numRuns: 400 });
  });

  it('are the same at the edges: windows ending exactly at a message, empty messages, one-character messages', () => {
    check(['a'.repeat(WINDOW), 'b'.repeat(WINDOW)]);
    check(['a'.repeat(WINDOW - 2), 'x', 'y', 'b'.repeat(WINDOW - 1), 'z']);
    check(['', '', 'a', '', 'b c', '']);
    check(Array.from({ length: 3000 }, (_, i) => String.fromCharCode(97 + (i % 26))));
    check([`${'w '.repeat(400)}end`, 'mid', `start ${'v '.repeat(400)}`]);
  });
});
