/**
 * The cheap path of the OpenAI vocabulary bound (tokenizer.ts `boundWith`) for `o200k_base`: its
 * pre-tokenizer and its vocabulary lookup, on ASCII text, without a regular expression or a string
 * per piece. Running the encoding's regex over a text and looking each matched string up in a Map
 * costs about 10 µs per KB of prose; most of it is the regex's match objects and hashing each new
 * piece string. Here a piece of ASCII text is found by a scan over char codes that follows the
 * regex's alternatives one by one, and looked up in an open-addressing table of the vocabulary's
 * ASCII tokens by a hash of its char codes, checked character by character on a hit.
 *
 * The scan answers only where every character it has to read is ASCII; anywhere else it says so
 * (-1) and the caller matches that piece with the regex itself. test/providers/estimate.test.ts
 * holds the pieces equal to the regex's on random texts.
 */

// Character classes of ASCII, as o200k_base's regex sees them.
const UPPER = 1; // \p{Lu}: A-Z
const LOWER = 2; // \p{Ll}: a-z
const DIGIT = 3; // \p{N}: 0-9
const SPACE = 4; // \s other than a line break: space, \t, \v, \f
const BREAK = 5; // \r, \n
const OTHER = 6; // neither \s, \p{L} nor \p{N}: punctuation, symbols, other control characters
const NON_ASCII = 7;
const END = 8;

const CLASS = new Uint8Array(128).fill(OTHER);
for (let c = 65; c <= 90; c++) CLASS[c] = UPPER;
for (let c = 97; c <= 122; c++) CLASS[c] = LOWER;
for (let c = 48; c <= 57; c++) CLASS[c] = DIGIT;
for (const c of [9, 11, 12, 32]) CLASS[c] = SPACE;
for (const c of [10, 13]) CLASS[c] = BREAK;

function classAt(text: string, i: number): number {
  if (i >= text.length) return END;
  const c = text.charCodeAt(i);
  return c < 128 ? CLASS[c]! : NON_ASCII;
}

/** After a run of letters ending at `p`: past an English contraction (`'s 'd 'm 't 'll 've 're`, any case) if one follows. */
function contraction(text: string, p: number): number {
  if (text.charCodeAt(p) !== 39) return p;
  const a = text.charCodeAt(p + 1) | 32;
  if (a === 115 || a === 100 || a === 109 || a === 116) return p + 2; // s d m t
  const b = text.charCodeAt(p + 2) | 32;
  if ((a === 108 && b === 108) || (a === 118 && b === 101) || (a === 114 && b === 101)) return p + 3; // ll ve re
  return p;
}

/**
 * The end of the piece o200k_base's pre-tokenizer matches at `i` (a piece boundary), or -1 when
 * finding it needs a character that is not ASCII. The regex, alternative by alternative:
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(contraction)?
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(contraction)?
 *   \p{N}{1,3}
 *    ?[^\s\p{L}\p{N}]+[\r\n/]*
 *   \s*[\r\n]+
 *   \s+(?!\S)
 *   \s+
 */
export function asciiPieceEnd(text: string, i: number): number {
  const first = classAt(text, i);
  if (first === NON_ASCII) return -1;
  // Letters, after one optional character that is not a line break, a letter or a digit. In
  // ASCII upper and lower case are disjoint, so: capitals, then lower case; with lower case it
  // is the first alternative, capitals alone the second.
  if (first === UPPER || first === LOWER || first === SPACE || first === OTHER) {
    const start = first === UPPER || first === LOWER ? i : i + 1;
    let j = start;
    while (classAt(text, j) === UPPER) j++;
    let k = j;
    while (classAt(text, k) === LOWER) k++;
    if (classAt(text, k) === NON_ASCII) return -1; // a letter or a mark may go on
    if (k > start) return contraction(text, k);
  }
  if (first === DIGIT) {
    let j = i + 1;
    while (j < i + 3 && classAt(text, j) === DIGIT) j++;
    return j < i + 3 && classAt(text, j) === NON_ASCII ? -1 : j;
  }
  // Punctuation, after one optional space, then line breaks.
  const punct = first === OTHER ? i : text.charCodeAt(i) === 32 ? i + 1 : -1;
  if (punct >= 0) {
    const next = classAt(text, punct);
    if (next === NON_ASCII) return -1;
    if (next === OTHER) {
      let j = punct + 1;
      while (classAt(text, j) === OTHER) j++;
      if (classAt(text, j) === NON_ASCII) return -1;
      while (classAt(text, j) === BREAK || text.charCodeAt(j) === 47) j++; // [\r\n/]*
      return j;
    }
  }
  // Whitespace: up to its last line break if it has one; else all of it but the last character
  // when something follows; else all of it (or the one character).
  let j = i;
  let lastBreak = -1;
  for (let c = classAt(text, j); c === SPACE || c === BREAK; c = classAt(text, ++j)) if (c === BREAK) lastBreak = j;
  if (classAt(text, j) === NON_ASCII) return -1; // may be whitespace too
  if (lastBreak >= 0) return lastBreak + 1;
  if (j === text.length || j - i === 1) return j;
  return j - 1;
}

/** FNV-1a over char codes [s, e). */
function hashOf(text: string, s: number, e: number): number {
  let h = 0x811c9dc5;
  for (let i = s; i < e; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h;
}

/**
 * The ASCII tokens of a vocabulary in an open-addressing table, looked up by a span of a text.
 * Each slot holds [hash, offset of the token's characters in `chars`, length]; a lookup hashes
 * the span, probes from its slot, and compares characters only where hash and length agree.
 */
export class AsciiVocab {
  private readonly slots: Int32Array;
  private readonly chars: Uint8Array;
  private readonly mask: number;

  constructor(vocab: ReadonlyMap<string, number>) {
    const keys: string[] = [];
    let total = 0;
    for (const key of vocab.keys()) {
      if (!/^[\x00-\x7f]+$/.test(key)) continue;
      keys.push(key);
      total += key.length;
    }
    // A quarter full at most, so a miss (most unknown words) usually ends on the first empty slot.
    let size = 1;
    while (size < keys.length * 4) size <<= 1;
    this.mask = size - 1;
    this.slots = new Int32Array(size * 3).fill(-1);
    this.chars = new Uint8Array(total);
    let offset = 0;
    for (const key of keys) {
      for (let i = 0; i < key.length; i++) this.chars[offset + i] = key.charCodeAt(i);
      const h = hashOf(key, 0, key.length);
      let slot = h & this.mask;
      while (this.slots[slot * 3 + 2] !== -1) slot = (slot + 1) & this.mask;
      this.slots[slot * 3] = h;
      this.slots[slot * 3 + 1] = offset;
      this.slots[slot * 3 + 2] = key.length;
      offset += key.length;
    }
  }

  /** Whether text[s, e) is a token. */
  has(text: string, s: number, e: number): boolean {
    const h = hashOf(text, s, e);
    const len = e - s;
    const { slots, chars, mask } = this;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const at = slot * 3;
      const keyLen = slots[at + 2]!;
      if (keyLen === -1) return false;
      if (slots[at] !== h || keyLen !== len) continue;
      const offset = slots[at + 1]!;
      let i = 0;
      while (i < len && chars[offset + i] === text.charCodeAt(s + i)) i++;
      if (i === len) return true;
    }
  }
}
