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
const NON_ASCII = /[^\x00-\x7f]/;

/** NFKC with format and default-ignorable characters removed. ASCII text is returned as is. */
export function normalizeText(s: string): string {
  if (!NON_ASCII.test(s)) return s;
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
    let bits = charBits(p.charCodeAt(i));
    if (bits & GROUP) {
      const start = i;
      let cls = 0;
      // Word-like: lowercase letters only, or a capital then lowercase letters ("the", "Then").
      let wordLike = (bits & 3) !== 0;
      do {
        cls |= bits;
        if (i > start && bits !== 2) wordLike = false;
        i++;
      } while (i < to && (bits = charBits(p.charCodeAt(i))) & GROUP);
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
    }
    i++;
  }
  if (n >= MIN_GROUPS) glueRuns(gs, ge, gc, n, gaps);
  return gaps;
}

/** The gaps to remove among `n` groups separated by separators only (starts, ends, character classes). */
function glueRuns(gs: Int32Array, ge: Int32Array, gc: Uint8Array, n: number, gaps: number[]): void {
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
      if (((cls | c) & 3) === 3 && (cls & 3) !== (c & 3)) break; // capitals and lowercase groups mixed
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
    } else i++;
  }
}

const isSpace = (c: number): boolean => c === 32 || (c >= 9 && c <= 13);

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
    const gaps = spacedGaps(p, a, b, found);
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

/** Maps a compact offset to the text offset of the same character. */
function toText(segments: Segments, pos: number): number {
  const { c, t, n } = segments;
  if (c.length === 0) return pos;
  let lo = 0;
  let hi = c.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (c[mid]! <= pos) lo = mid;
    else hi = mid - 1;
  }
  return t[lo]! + Math.min(pos - c[lo]!, n[lo]!);
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** base64 and base64url characters (hex is a subset). */
const B64 = new Uint8Array(128);
for (let c = 0; c < 128; c++) B64[c] = /[A-Za-z0-9+/_-]/.test(String.fromCharCode(c)) ? 1 : 0;
const MIN_RUN = 16;
const ESCAPED = /(?:\\x[0-9A-Fa-f]{2}){10,}|(?:%[0-9A-Fa-f]{2}){10,}/g;

/** Encoded runs of `source`: base64/base64url/hex of MIN_RUN characters or more, `\xNN` and `%NN` sequences. */
function encodedRuns(source: string): { run: string; start: number; end: number }[] {
  const found: { run: string; start: number; end: number }[] = [];
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
  if (source.includes('\\x') || source.includes('%')) {
    ESCAPED.lastIndex = 0;
    for (let m = ESCAPED.exec(source); m; m = ESCAPED.exec(source)) found.push({ run: m[0], start: m.index, end: m.index + m[0].length });
  }
  return found;
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
function decodeRun(run: string, glued: boolean): string[] {
  const out: string[] = [];
  const add = (b: Uint8Array): void => {
    const s = readable(b);
    if (s !== undefined) out.push(s);
  };
  if (run.startsWith('\\x')) add(Buffer.from(run.replace(/\\x/g, ''), 'hex'));
  else if (run.startsWith('%')) add(Buffer.from(run.replace(/%/g, ''), 'hex'));
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
    for (const { run, start, end } of encodedRuns(source)) {
      if (keep && !keep(start, end)) continue;
      if (this.runs >= CONTENT_LIMITS.maxRuns || this.encoded >= CONTENT_LIMITS.maxEncodedChars || this.spans.length >= CONTENT_LIMITS.maxSpans || this.kept >= CONTENT_LIMITS.maxSpanChars) {
        this.truncated = true;
        return;
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
      for (const raw of decodeRun(body, glued)) {
        let text = normalizeText(raw);
        if (this.kept + text.length > CONTENT_LIMITS.maxSpanChars) {
          text = text.slice(0, CONTENT_LIMITS.maxSpanChars - this.kept);
          this.truncated = true;
        }
        const [s, e] = rangeOf(start, end);
        this.spans.push({ text, start: s, end: e });
        this.kept += text.length;
        // What the decoded text holds encoded again is reported at the outer run.
        if (depth < CONTENT_LIMITS.depth) this.scan(text, () => [s, e], depth + 1);
      }
    }
  }
}
