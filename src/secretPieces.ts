/**
 * A secret found in pieces: an upstream's error may quote a key cut short ("Incorrect API key
 * provided: sk-live-0123456789abcd..."), which a search for the whole key misses. Shared by the
 * provider adapters (the caller's error) and the log and event scrub (src/metering/redact.ts).
 */

/** Secrets at least this long are also looked for in pieces. */
export const PIECE_SECRET_MIN = 20;
/** The pieces looked for; any run of the secret twice as long (less one) holds a whole one. */
const PIECE_CHARS = 10;

/**
 * `text` with every run of at least PIECE_CHARS characters of `secret` replaced by `replacement`,
 * so a key cut short leaves no more than a short fingerprint. Each aligned piece of the secret is
 * looked for, then widened as far as text and secret agree.
 */
export function withoutPieces(text: string, secret: string, replacement: string): string {
  const ranges: [number, number][] = [];
  for (let at = 0; at + PIECE_CHARS <= secret.length; at += PIECE_CHARS) {
    const piece = secret.slice(at, at + PIECE_CHARS);
    for (let i = text.indexOf(piece); i >= 0; i = text.indexOf(piece, i + PIECE_CHARS)) ranges.push(widenMatch(text, i, secret, at, PIECE_CHARS));
  }
  return ranges.length === 0 ? text : replaceRanges(text, ranges, replacement);
}

/**
 * The range of `text` around `text[i, i + n)`, which equals `other[at, at + n)`, widened both ways
 * as far as the two texts agree.
 */
export function widenMatch(text: string, i: number, other: string, at: number, n: number): [number, number] {
  let start = i;
  let end = i + n;
  while (start > 0 && at - (i - start) > 0 && text[start - 1] === other[at - (i - start) - 1]) start--;
  while (end < text.length && at + (end - i) < other.length && text[end] === other[at + (end - i)]) end++;
  return [start, end];
}

/** `text` with each range (at least one; merged where they overlap or touch) replaced by `replacement`. */
export function replaceRanges(text: string, ranges: [number, number][], replacement: string): string {
  ranges.sort((a, b) => a[0] - b[0]);
  let out = text.slice(0, ranges[0]![0]) + replacement;
  let cur = ranges[0]![1];
  for (const [s, e] of ranges.slice(1)) {
    if (s > cur) out += text.slice(cur, s) + replacement;
    cur = Math.max(cur, e);
  }
  return out + text.slice(cur);
}

/**
 * `text` without the provider key `key`: whole, and in pieces when it is long enough to tell. A key
 * shorter than 8 characters (a test key) is left alone: replacing it would only mangle the text.
 */
export function withoutKey(text: string, key: string, replacement: string): string {
  if (key.length < 8) return text;
  const out = text.split(key).join(replacement);
  return key.length >= PIECE_SECRET_MIN ? withoutPieces(out, key, replacement) : out;
}
