/**
 * The views of a text that content rules read (content.ts says what each is): normalisation, the
 * compact view (spaced-out groups glued together) and the decoding of encoded runs, with their
 * bounds.
 */
import { isUtf8 } from 'node:buffer';
import { LONG_WORD_MAX, LONG_WORD_MIN } from './secretPatterns.js';

/** Bounds on the decoding of encoded runs, so a large prompt stays cheap. */
export const CONTENT_LIMITS = {
  /** Encoded runs tried per call (each decode is a few microseconds). */
  maxRuns: 32_768,
  /** Characters decoded over all runs of a call; a run past it is decoded up to it. */
  maxEncodedChars: 1_048_576,
  /** Decoded spans kept, and their characters in total (a span past it is cut). */
  maxSpans: 256,
  maxSpanChars: 262_144,
  /** Decoding rounds: 2 reads base64 of hex (or of base64) too. */
  depth: 2,
} as const;


const INVISIBLE = /[\p{Cf}\p{Default_Ignorable_Code_Point}]/gu;

/**
 * NFKC with format and default-ignorable characters removed. ASCII text is returned as is: it is
 * ASCII when its UTF-8 length is its length (any other code unit, a lone surrogate's replacement
 * included, takes two bytes or more), which Node counts several times faster than a regex finds a
 * character outside ASCII (issue 21: 0.03 against 0.11 to 0.20 ms on 200 KB).
 */
export function normalizeText(s: string): string {
  if (Buffer.byteLength(s, 'utf8') === s.length) return s;
  return s.replace(INVISIBLE, '').normalize('NFKC').replace(INVISIBLE, '');
}

// ---------------------------------------------------------------------------------------------
// The compact view

/** The pieces of `compactText` copied from `text`: compact offset `c[k]`, text offset `t[k]`, length `n[k]`. */
export interface Segments {
  c: number[];
  t: number[];
  n: number[];
}

const MAX_GROUP = 8;
const MIN_GROUPS = 4;

/** Per ASCII character: 1 upper, 2 lower, 4 digit, 8 other group character (+ / =), 16 separator. */
const ASCII = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  ASCII[c] = /[A-Z]/.test(ch) ? 1 : /[a-z]/.test(ch) ? 2 : /[0-9]/.test(ch) ? 4 : /[+/=]/.test(ch) ? 8 : /[\s\-.,:;|_]/.test(ch) ? 16 : 0;
}
const GROUP = 15;
const SEPARATOR = 16;
/** Set on a group that reads as a word of prose. */
const WORD_LIKE = 32;
const charBits = (c: number): number => (c < 128 ? ASCII[c]! : c === 0xb7 || c === 0x2022 ? SEPARATOR : 0);
/**
 * charBits of `p[i]`, where an `=` with a letter or digit right after it is neither a group
 * character nor a separator: base64 padding only ends a group, so such an `=` is an assignment
 * ("k=AKIA Z3MB ..."), and the groups after it are read apart from the word before it.
 */
const bitsAt = (p: string, i: number, to: number): number => {
  const c = p.charCodeAt(i);
  return c === 61 && i + 1 < to && ASCII[p.charCodeAt(i + 1)]! & 7 ? 0 : charBits(c);
};


/**
 * Control characters that show nothing (C0 but tab, the line breaks, VT and FF; DEL; C1 but NEL, a
 * line break) and the braille blank: the compact view leaves them out, so a value with one inside
 * reads whole there (normalizeText already removes format and default-ignorable characters; these
 * are found here, on the pass over every character the compact view makes anyway, rather than by
 * one more pass over every text).
 */
const showsNothing = (c: number): boolean => (c < 32 ? c < 9 || c > 13 : c === 127 || (c >= 0x80 && c <= 0x9f && c !== 0x85) || c === 0x2800);

/**
 * Gaps between spaced-out groups of `p[from, to)` to remove: at least MIN_GROUPS
 * groups of one size up to MAX_GROUP (the last may be shorter), separated by separator characters
 * only, not mixing capitals and lowercase, with a capital or a group mixing lowercase and digits
 * somewhere, or digits alone in at least eight pairs, and not words alone ("The Cat Sat And"). Groups of LONG_WORD_MIN to
 * LONG_WORD_MAX characters holding a lowercase letter are added to `words` as start, end pairs.
 */
function spacedGaps(p: string, from: number, to: number, words?: number[]): number[] {
  const gaps: number[] = [];
  let gs = new Int32Array(64);
  let ge = new Int32Array(64);
  let gc = new Uint8Array(64);
  let n = 0;
  let i = from;
  while (i < to) {
    let bits = bitsAt(p, i, to);
    if (bits & GROUP) {
      const start = i;
      let cls = 0;
      // Word-like: lowercase letters only, or a capital then lowercase letters ("the", "Then").
      let wordLike = (bits & 3) !== 0;
      do {
        cls |= bits;
        if (i > start && bits !== 2) wordLike = false;
        i++;
      } while (i < to && (bits = bitsAt(p, i, to)) & GROUP);
      if (wordLike && (i - start > 1 || cls === 2)) cls |= WORD_LIKE;
      if (n === gs.length) {
        const [s2, e2, c2] = [new Int32Array(n * 2), new Int32Array(n * 2), new Uint8Array(n * 2)];
        s2.set(gs);
        e2.set(ge);
        c2.set(gc);
        [gs, ge, gc] = [s2, e2, c2];
      }
      gs[n] = start;
      ge[n] = i;
      gc[n] = cls;
      n++;
      if (words && cls & 2 && i - start >= LONG_WORD_MIN && i - start <= LONG_WORD_MAX) words.push(start, i);
      continue;
    }
    if (!(bits & SEPARATOR)) {
      if (n >= MIN_GROUPS) glueRuns(gs, ge, gc, n, gaps);
      n = 0;
      // A character that shows nothing is left out of the compact view, as if it were not there.
      if (showsNothing(p.charCodeAt(i))) gaps.push(i, i + 1);
    }
    i++;
  }
  if (n >= MIN_GROUPS) glueRuns(gs, ge, gc, n, gaps);
  return gaps;
}

/**
 * The gaps to remove among `n` groups separated by separators only (starts, ends, character
 * classes). A run that is not glued is tried again from its next group only when it ended at a
 * group of the other case (a run starting later, without the groups of this case, may go on past
 * it); otherwise every run starting inside it ends where it does with fewer groups, and is judged no
 * more gluable, so the next try starts at its last group. Tried again from each next group (as
 * before 2026-12-03), prose of equal-length words cost the square of its word count: 400 KB of
 * three-letter words held a core 17 s. test/unit/content-glue.test.ts holds the two equal.
 */
export function glueRuns(gs: Int32Array, ge: Int32Array, gc: Uint8Array, n: number, gaps: number[]): void {
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
    let caseBreak = false;
    while (j + 1 < n) {
      const m = ge[j + 1]! - gs[j + 1]!;
      const c = gc[j + 1]! & GROUP;
      if (((cls | c) & 3) === 3 && (cls & 3) !== (c & 3)) {
        caseBreak = true; // capitals and lowercase groups mixed
        break;
      }
      if (m > len) break;
      j++;
      cls |= c;
      if ((c & 6) === 6) mixed = true;
      if (!(gc[j]! & WORD_LIKE)) prose = false;
      if (m < len) break; // a shorter group ends the run
    }
    // Capitals, or a group mixing lowercase and digits ("4b"): lowercase words, with or without
    // numbers between them, are prose ("on 11 25 at 10"), digits alone a date or a number, unless
    // there are many pairs of them (hex bytes: "41 53 49 41 ...").
    // Title Case or lowercase words alone are prose too ("The Cat Sat And").
    // A lowercase word at either end of digits and hex is the prose around them ("to 41 53 ...",
    // "... 36 42 of"), and is left out before the run is judged: hex bytes that are all digits
    // followed by a short word are still hex bytes.
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
    } else i = caseBreak || j === i ? i + 1 : j;
  }
}

const isSpace = (c: number): boolean => c === 32 || (c >= 9 && c <= 13);

/**
 * Per ASCII character of a wrapped value (`[A-Za-z0-9+/=_]`): 1 any, 2 digit, 4 capital. Not `-`:
 * a PEM block's dashes and its base64 body stay on their own lines, as its pattern needs.
 */
const WRAP = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  WRAP[c] = /[A-Za-z0-9+/=_]/.test(ch) ? 1 | (/[0-9]/.test(ch) ? 2 : 0) | (/[A-Z]/.test(ch) ? 4 : 0) : 0;
}
const wrapBits = (c: number): number => (c < 128 ? WRAP[c]! : 0);
/** Characters a value broken by a line break has on both sides together, at least. */
const MIN_WRAPPED = 16;
/** Characters measured on each side of a line break. */
const WRAP_REACH = 128;

/**
 * Gaps of `p[from, to)` that are a line break inside a value: one "\n" or "\r\n" with value
 * characters (WRAP) right before and after it, at least MIN_WRAPPED of them on both sides together,
 * holding a digit or two capitals: a base64 block wrapped at 76 columns, a key hard-wrapped by a
 * terminal or a mail client. Words of prose across a line break are left apart.
 */
function wrapGaps(p: string, from: number, to: number): number[] {
  const gaps: number[] = [];
  for (let i = p.indexOf('\n', from); i >= 0 && i < to; i = p.indexOf('\n', i + 1)) {
    const s = i > from && p.charCodeAt(i - 1) === 13 ? i - 1 : i;
    const e = i + 1;
    if (s <= from || e >= to || !wrapBits(p.charCodeAt(s - 1)) || !wrapBits(p.charCodeAt(e))) continue;
    let bits = 0;
    let caps = 0;
    let l = s;
    while (l > from && s - l < WRAP_REACH) {
      const b = wrapBits(p.charCodeAt(l - 1));
      if (!b) break;
      bits |= b;
      if (b & 4) caps++;
      l--;
    }
    let r = e;
    while (r < to && r - e < WRAP_REACH) {
      const b = wrapBits(p.charCodeAt(r));
      if (!b) break;
      bits |= b;
      if (b & 4) caps++;
      r++;
    }
    if (s - l + (r - e) >= MIN_WRAPPED && (bits & 2 || caps >= 2)) gaps.push(s, e);
  }
  return gaps;
}

/** Two sorted lists of gaps (start, end pairs) as one; a gap overlapping one kept already is dropped. */
function mergeGaps(x: number[], y: number[]): number[] {
  if (y.length === 0) return x;
  if (x.length === 0) return y;
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    const takeX = j >= y.length || (i < x.length && x[i]! <= y[j]!);
    const [s, e] = takeX ? [x[i]!, x[i + 1]!] : [y[j]!, y[j + 1]!];
    if (takeX) i += 2;
    else j += 2;
    if (out.length > 0 && s < out[out.length - 1]!) continue;
    out.push(s, e);
  }
  return out;
}

export interface CompactView {
  compact: string;
  segments: Segments;
  /** Long groups of `text` holding a lowercase letter, start and end pairs (for the uppercase scan). */
  words: number[];
}

export function buildCompact(parts: readonly string[]): CompactView {
  const out: string[] = [];
  const segments: Segments = { c: [], t: [], n: [] };
  const words: number[] = [];
  let c = 0;
  let offset = 0;
  const push = (p: string, from: number, to: number): void => {
    if (to <= from) return;
    out.push(p.slice(from, to));
    segments.c.push(c);
    segments.t.push(offset + from);
    segments.n.push(to - from);
    c += to - from;
  };
  for (const p of parts) {
    let a = 0;
    let b = p.length;
    while (a < b && isSpace(p.charCodeAt(a))) a++;
    while (b > a && isSpace(p.charCodeAt(b - 1))) b--;
    let cur = a;
    const found: number[] = [];
    const gaps = mergeGaps(spacedGaps(p, a, b, found), wrapGaps(p, a, b));
    for (let k = 0; k < gaps.length; k += 2) {
      push(p, cur, gaps[k]!);
      cur = gaps[k + 1]!;
    }
    push(p, cur, b);
    for (const w of found) words.push(offset + w);
    offset += p.length + 1;
  }
  return { compact: out.join(''), segments, words };
}

/** Characters of `compactText` scanned either side of a place where something was glued. */
export const WINDOW = 512;

/**
 * The parts of `compactText` around every place where something was glued, a blank line between
 * them: a value not crossing such a place is in `text` already, so only these need scanning.
 */
export function compactWindows(compact: string, segments: Segments): { view: string; at: (pos: number) => number } | undefined {
  if (segments.c.length <= 1) return undefined;
  const windows: [number, number][] = [];
  for (let k = 1; k < segments.c.length; k++) {
    const c = segments.c[k]!;
    const from = Math.max(0, c - WINDOW);
    const to = Math.min(compact.length, c + WINDOW);
    const last = windows[windows.length - 1];
    if (last && from <= last[1]) last[1] = to;
    else windows.push([from, to]);
  }
  let view = '';
  const starts: number[] = [];
  for (const [from, to] of windows) {
    starts.push(view.length);
    view += `${compact.slice(from, to)}\n\n`;
  }
  const at = (pos: number): number => {
    let i = starts.length - 1;
    while (i > 0 && starts[i]! > pos) i--;
    return toText(segments, windows[i]![0] + pos - starts[i]!);
  };
  return { view, at };
}

/** The index of the last of the ascending offsets `xs` at or before `pos` (0 when none is). */
function lastAtOrBefore(xs: readonly number[], pos: number): number {
  let lo = 0;
  let hi = xs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (xs[mid]! <= pos) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Where text offset `pos` lies in the compact view: in a gap that was removed, where the gap was. */
export function toCompact(segments: Segments, pos: number): number {
  const { c, t, n } = segments;
  if (c.length === 0) return pos;
  const k = lastAtOrBefore(t, pos);
  return c[k]! + Math.max(0, Math.min(pos - t[k]!, n[k]!));
}

/** Maps a compact offset to the text offset of the same character. */
function toText(segments: Segments, pos: number): number {
  const { c, t, n } = segments;
  if (c.length === 0) return pos;
  const k = lastAtOrBefore(c, pos);
  return t[k]! + Math.min(pos - c[k]!, n[k]!);
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** base64 and base64url characters (hex is a subset). */
const B64 = new Uint8Array(128);
for (let c = 0; c < 128; c++) B64[c] = /[A-Za-z0-9+/_-]/.test(String.fromCharCode(c)) ? 1 : 0;
const MIN_RUN = 16;
/** Hex digit value of a character code, or -1. */
const hexValue = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1);

/** What the escape `escapeLength` last read stands for: a byte (`%NN`, `\xNN`, `\/`) or a UTF-16 code unit or code point. */
let escCode = 0;
let escByte = false;

/**
 * The length of the escape at `s[i]`, 0 when there is none: `%NN` (URL), `\xNN`, `\uNNNN` and `\/`
 * (JSON and JavaScript strings), `&#NN;` and `&#xNN;` (HTML and XML character references).
 * Sets escCode and escByte.
 */
function escapeLength(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c === 37) {
    const h = hexValue(s.charCodeAt(i + 1));
    const l = hexValue(s.charCodeAt(i + 2));
    if (h < 0 || l < 0) return 0;
    escCode = h * 16 + l;
    escByte = true;
    return 3;
  }
  if (c === 92) {
    const d = s.charCodeAt(i + 1);
    if (d === 47) {
      escCode = 47;
      escByte = true;
      return 2;
    }
    const digits = d === 120 ? 2 : d === 117 ? 4 : 0;
    if (digits === 0) return 0;
    let v = 0;
    for (let k = 0; k < digits; k++) {
      const h = hexValue(s.charCodeAt(i + 2 + k));
      if (h < 0) return 0;
      v = v * 16 + h;
    }
    escCode = v;
    escByte = d === 120;
    return 2 + digits;
  }
  if (c === 38 && s.charCodeAt(i + 1) === 35) {
    const x = s.charCodeAt(i + 2) | 32;
    const hex = x === 120;
    let k = i + (hex ? 3 : 2);
    const from = k;
    let v = 0;
    for (; k - from < (hex ? 6 : 7); k++) {
      const ch = s.charCodeAt(k);
      const h = hex ? hexValue(ch) : ch >= 48 && ch <= 57 ? ch - 48 : -1;
      if (h < 0) break;
      v = v * (hex ? 16 : 10) + h;
    }
    if (k === from || s.charCodeAt(k) !== 59) return 0;
    escCode = v;
    escByte = false;
    return k + 1 - i;
  }
  return 0;
}

/** Characters an escaped run may hold besides escapes: `[A-Za-z0-9+/=_.-]`. */
const RUN_CHAR = new Uint8Array(128);
for (let c = 0; c < 128; c++) RUN_CHAR[c] = /[A-Za-z0-9+/=_.-]/.test(String.fromCharCode(c)) ? 1 : 0;
const runChar = (c: number): boolean => c < 128 && RUN_CHAR[c] === 1;
/**
 * Characters before an escaped run kept with it, up to CONTEXT of them on its line: the name a value
 * is assigned to (`"aws_secret_access_key": "wJalr\/K7MDENG..."`), which some patterns need.
 */
const CONTEXT = 64;
const contextChar = (c: number): boolean => runChar(c) || c === 32 || c === 9 || c === 34 || c === 39 || c === 58;

interface EncodedRun {
  run: string;
  start: number;
  end: number;
  /** A run holding escapes (escapeLength), decoded escape by escape; otherwise base64 or hex. */
  escaped?: true;
}

/**
 * Encoded runs of `source`: base64/base64url/hex of MIN_RUN characters or more, and escaped runs:
 * escapes with the run characters around them (`%41KIA...`, `-----BEGIN%20RSA%20PRIVATE%20KEY`,
 * `wJalr\/K7MDENG...`) and up to CONTEXT characters of what precedes them on the line, MIN_RUN
 * characters or more with at least one escape. One pass each.
 */
function encodedRuns(source: string): EncodedRun[] {
  const found: EncodedRun[] = [];
  const len = source.length;
  let i = 0;
  while (i < len) {
    const c = source.charCodeAt(i);
    if (c >= 128 || B64[c] === 0) {
      i++;
      continue;
    }
    const start = i;
    while (i < len) {
      const d = source.charCodeAt(i);
      if (d >= 128 || B64[d] === 0) break;
      i++;
    }
    if (i - start < MIN_RUN) continue;
    let end = i;
    while (end < len && end - i < 2 && source.charCodeAt(end) === 61) end++; // = padding
    found.push({ run: source.slice(start, end), start, end });
    i = end;
  }
  if (source.includes('%') || source.includes('\\') || source.includes('&#')) {
    let start = -1;
    let end = -1;
    const close = (): void => {
      if (end - start >= MIN_RUN) found.push({ run: source.slice(start, end), start, end, escaped: true });
    };
    for (let i = 0; i < len; i++) {
      const c = source.charCodeAt(i);
      const n = c === 37 || c === 92 || c === 38 ? escapeLength(source, i) : 0;
      if (n === 0) continue;
      if (i !== end) {
        // The run characters and context before this escape; when they reach back to the run
        // before, this escape continues it (`\u002dBEGIN RSA PRIVATE KEY\u002d`), else that run is
        // closed and a new one starts.
        const floor = Math.max(end, 0);
        let from = i;
        while (from > floor && runChar(source.charCodeAt(from - 1))) from--;
        const stop = Math.max(floor, from - CONTEXT);
        while (from > stop && contextChar(source.charCodeAt(from - 1))) from--;
        if (start < 0 || from !== end) {
          if (start >= 0) close();
          start = from;
        }
      }
      end = i + n;
      while (end < len && runChar(source.charCodeAt(end))) end++;
      i = end - 1;
    }
    if (start >= 0) close();
  }
  return found;
}

/** Writes code point `cp` as UTF-8 at `out[n]`; returns the next free index. */
function putUtf8(out: Uint8Array, n: number, cp: number): number {
  if (cp < 0x80) out[n++] = cp;
  else if (cp < 0x800) {
    out[n++] = 0xc0 | (cp >> 6);
    out[n++] = 0x80 | (cp & 63);
  } else if (cp < 0x10000) {
    out[n++] = 0xe0 | (cp >> 12);
    out[n++] = 0x80 | ((cp >> 6) & 63);
    out[n++] = 0x80 | (cp & 63);
  } else {
    out[n++] = 0xf0 | (cp >> 18);
    out[n++] = 0x80 | ((cp >> 12) & 63);
    out[n++] = 0x80 | ((cp >> 6) & 63);
    out[n++] = 0x80 | (cp & 63);
  }
  return n;
}

/** The bytes an escaped run stands for: every escape decoded, other characters as UTF-8. */
function unescapeRun(run: string): Uint8Array {
  // Every character or escape takes at most three bytes per UTF-16 unit it spans.
  const out = new Uint8Array(run.length * 3);
  let n = 0;
  let i = 0;
  while (i < run.length) {
    const c = run.charCodeAt(i);
    const len = c === 37 || c === 92 || c === 38 ? escapeLength(run, i) : 0;
    if (len === 0) {
      if (c < 128) out[n++] = c;
      else {
        const cp = run.codePointAt(i)!;
        n = putUtf8(out, n, cp >= 0xd800 && cp < 0xe000 ? 0xfffd : cp);
        if (cp > 0xffff) i++;
      }
      i++;
      continue;
    }
    let cp = escCode;
    i += len;
    if (escByte) {
      out[n++] = cp;
      continue;
    }
    // A surrogate pair written as two \u escapes is one character.
    if (cp >= 0xd800 && cp < 0xdc00 && run.charCodeAt(i) === 92 && escapeLength(run, i) === 6 && escCode >= 0xdc00 && escCode < 0xe000) {
      cp = 0x10000 + ((cp - 0xd800) << 10) + (escCode - 0xdc00);
      i += 6;
    }
    n = putUtf8(out, n, cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000) ? 0xfffd : cp);
  }
  return out.subarray(0, n);
}

const HEX = /^[0-9A-Fa-f]+$/;

/** Readable text: valid UTF-8 with few control characters. */
function readable(bytes: Uint8Array): string | undefined {
  if (bytes.length < 8 || !isUtf8(bytes)) return undefined;
  const s = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8');
  let bad = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 32 && c !== 9 && c !== 10 && c !== 13) || (c >= 0x7f && c < 0xa0) || c === 0xfffd) bad++;
  }
  return bad * 10 <= s.length ? s : undefined;
}

const HEX_RUN = /[0-9A-Fa-f]{32,}/g;

/**
 * The readable decodings of one encoded run (hex and base64 are both tried for a hex-looking run).
 * `glued`: the run comes from `compactText`, where a word before a spaced-out value may have been
 * glued on ("to 41 53 ..." reads "to4153..."); then every hex stretch and every base64 alignment
 * is tried.
 */
function decodeRun(run: string, glued: boolean, escaped: boolean): string[] {
  const out: string[] = [];
  const add = (b: Uint8Array): void => {
    const s = readable(b);
    if (s !== undefined) out.push(s);
  };
  if (escaped) add(unescapeRun(run));
  else if (!glued) {
    const body = run.startsWith('0x') ? run.slice(2) : run;
    if (body.length >= 32 && body.length % 2 === 0 && HEX.test(body)) add(Buffer.from(body, 'hex'));
    if (body === run) add(Buffer.from(run, 'base64'));
  } else {
    HEX_RUN.lastIndex = 0;
    for (let m = HEX_RUN.exec(run); m; m = HEX_RUN.exec(run)) {
      for (const shift of [0, 1]) {
        const h = m[0].slice(shift);
        add(Buffer.from(h.slice(0, h.length - (h.length % 2)), 'hex'));
      }
    }
    for (let shift = 0; shift < 4 && run.length - shift >= MIN_RUN; shift++) add(Buffer.from(run.slice(shift), 'base64'));
  }
  return out;
}

export interface DecodedSpan {
  text: string;
  /** The encoded run it came from, as a range of `text`. */
  start: number;
  end: number;
}

export class Decoder {
  spans: DecodedSpan[] = [];
  truncated = false;
  private runs = 0;
  private encoded = 0;
  private kept = 0;
  private seen = new Set<string>();

  /**
   * Decodes the runs of `source`; `rangeOf` maps a run's range in `source` to a range of `text`.
   * `keep`, when given, says which runs to decode (by their range in `source`).
   */
  scan(source: string, rangeOf: (start: number, end: number) => [number, number], depth = 1, glued = false, keep?: (start: number, end: number) => boolean): void {
    // Escaped runs are common in ordinary text (URLs, HTML): their decodings make one span, so that
    // they never use up the spans left for base64 and hex.
    const unescaped: DecodedSpan[] = [];
    for (const { run, start, end, escaped } of encodedRuns(source)) {
      if (keep && !keep(start, end)) continue;
      if (this.runs >= CONTENT_LIMITS.maxRuns || this.encoded >= CONTENT_LIMITS.maxEncodedChars || this.spans.length >= CONTENT_LIMITS.maxSpans || this.kept >= CONTENT_LIMITS.maxSpanChars) {
        this.truncated = true;
        break;
      }
      let body = run;
      if (this.encoded + body.length > CONTENT_LIMITS.maxEncodedChars) {
        body = body.slice(0, CONTENT_LIMITS.maxEncodedChars - this.encoded);
        this.truncated = true;
      }
      if (this.seen.has(body)) continue;
      this.seen.add(body);
      this.runs++;
      this.encoded += body.length;
      for (const raw of decodeRun(body, glued, escaped === true)) {
        const [s, e] = rangeOf(start, end);
        if (escaped) unescaped.push({ text: normalizeText(raw), start: s, end: e });
        else this.keep(normalizeText(raw), s, e, depth);
      }
    }
    if (unescaped.length > 0 && this.spans.length < CONTENT_LIMITS.maxSpans) {
      const s = Math.min(...unescaped.map((u) => u.start));
      const e = Math.max(...unescaped.map((u) => u.end));
      this.keep(unescaped.map((u) => u.text).join('\n\n'), s, e, depth);
    } else if (unescaped.length > 0) this.truncated = true;
  }

  /** Keeps one decoded span within the bounds, and decodes what it holds encoded again. */
  private keep(decoded: string, s: number, e: number, depth: number): void {
    let text = decoded;
    if (this.kept + text.length > CONTENT_LIMITS.maxSpanChars) {
      text = text.slice(0, CONTENT_LIMITS.maxSpanChars - this.kept);
      this.truncated = true;
    }
    this.spans.push({ text, start: s, end: e });
    this.kept += text.length;
    // What the decoded text holds encoded again is reported at the outer run.
    if (depth < CONTENT_LIMITS.depth) this.scan(text, () => [s, e], depth + 1);
  }
}
