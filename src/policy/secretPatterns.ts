/**
 * The credential finder behind `request.secrets` and the log scrub (content.ts says what it reads):
 * secretlint's recommended rules (`@secretlint/secretlint-rule-preset-recommend` 12.0, MIT,
 * https://github.com/secretlint/secretlint; 12.0 is its last release that supports Node 20), run
 * synchronously through secretlint's rule API with AWS access key id scanning turned on and AWS
 * account ids left out (identifiers, not secrets), plus three shapes secretlint does not cover: a
 * PEM private key header with any number of dashes (`pem-header`), a bearer token (`bearer`) and a
 * JWT (`jwt`). A finding's kind is the secretlint rule's short name (`aws`, `github`, `slack`,
 * `privatekey`, `npm`, ...) or one of those three.
 */
import { rules as presetRules } from '@secretlint/secretlint-rule-preset-recommend';

/** One credential found: its kind and where, as a range of the text scanned. */
export interface SecretFinding {
  kind: string;
  start: number;
  end: number;
}

/** Words of the uppercase pass: LONG_WORD_MIN to LONG_WORD_MAX letters, digits and `_`. */
export const LONG_WORD_MIN = 16;
export const LONG_WORD_MAX = 128;

/** Per ASCII character: 1 upper, 2 lower, 4 digit. */
const WORD_CHAR = new Uint8Array(128);
for (let c = 0; c < 128; c++) WORD_CHAR[c] = c >= 65 && c <= 90 ? 1 : c >= 97 && c <= 122 ? 2 : c >= 48 && c <= 57 ? 4 : 0;

interface RuleContext {
  report(d: { message: { messageId: string } | string; range: readonly [number, number] }): void;
  ignore(): void;
  createTranslator(messages: unknown): (messageId: string, data?: unknown) => { messageId: string; message: string; data?: unknown };
}
interface Rule {
  meta: { id: string };
  create(context: RuleContext, options: Record<string, unknown>): { file?(source: { content: string; contentType: 'text'; ext: string; filePath?: string }): void | Promise<void> };
}

/** Findings of secretlint message ids that are not secrets (an AWS account id is an identifier). */
const NOT_SECRETS = new Set(['AWSAccountID']);

let sink: SecretFinding[] = [];
const context: RuleContext = {
  report(d) {
    const messageId = typeof d.message === 'string' ? d.message : d.message.messageId;
    if (NOT_SECRETS.has(messageId)) return;
    sink.push({ kind: currentKind, start: d.range[0], end: d.range[1] });
  },
  ignore() {},
  createTranslator: () => (messageId, data) => ({ messageId, message: messageId, data }),
};
let currentKind = '';

/** secretlint's recommended rules, created once. The comment-directive filter is not a scanner. */
const SCANNERS = (presetRules as unknown as Rule[])
  .map((rule) => ({ kind: rule.meta.id.replace(/^@secretlint\/secretlint-rule-/, ''), rule }))
  .filter((r) => r.kind !== 'filter-comments')
  .map(({ kind, rule }) => ({ kind, handler: rule.create(context, kind === 'aws' ? { enableIDScanRule: true } : {}) }));

/** Rules whose secrets use an uppercase-only alphabet: also run on the uppercased long words. */
const UPPERCASE_ALPHABET = new Set(['aws']);

/** Shapes secretlint does not cover. A group named `s` narrows the finding to the secret itself. */
const EXTRA: readonly { kind: string; re: RegExp; hint?: RegExp }[] = [
  // A PEM private key: two or more dashes of any kind, or none with the header in capitals; to the
  // END line, or to the end of the text for a pasted fragment.
  { kind: 'pem-header', re: /(?:\p{Pd}{2,}[ \t]*BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?|\bBEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?\b)[\s\S]*?(?:END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?\p{Pd}*|$)/giu, hint: /BEGIN/i },
  { kind: 'bearer', re: /\b[Bb]earer\s+(?<s>[A-Za-z0-9._~+/=-]{20,})/g },
  { kind: 'jwt', re: /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g },
];

/** Characters of a token run: `[A-Za-z0-9+/=_.-]`. */
const TOKEN_CHAR = new Uint8Array(128);
for (let c = 0; c < 128; c++) TOKEN_CHAR[c] = /[A-Za-z0-9+/=_.-]/.test(String.fromCharCode(c)) ? 1 : 0;

/**
 * What every credential the set and the added kinds know needs somewhere in the text: a run of 16
 * token characters, an `@` (a URL with a password) or a PEM `BEGIN` (any case). Most short texts
 * (decision reasons, small prompts) and much prose have none, and skip the scan. One pass over char
 * codes: the regex it replaces (`/[A-Za-z0-9+/=_.-]{16}|@|begin/i`) tried 16 characters from every
 * position, a seventh of a 200 KB prose prompt's content cost; a test holds the two equal.
 */
export function mayHoldSecret(s: string): boolean {
  let run = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 128 && TOKEN_CHAR[c] === 1) {
      if (++run === 16) return true;
      // b, e, g, i, n in either case: `| 32` lowercases an ASCII letter.
      if ((c | 32) === 98 && (s.charCodeAt(i + 1) | 32) === 101 && (s.charCodeAt(i + 2) | 32) === 103 && (s.charCodeAt(i + 3) | 32) === 105 && (s.charCodeAt(i + 4) | 32) === 110) return true;
    } else {
      run = 0;
      if (c === 64) return true;
    }
  }
  return false;
}

/** Every finding in `content`, ranges in `content`; `only` runs those secretlint rules alone. */
export function scan(content: string, only?: ReadonlySet<string>): SecretFinding[] {
  if (!mayHoldSecret(content)) return [];
  const out: SecretFinding[] = [];
  sink = out;
  try {
    for (const { kind, handler } of SCANNERS) {
      if (only && !only.has(kind)) continue;
      currentKind = kind;
      void handler.file?.({ content, contentType: 'text', ext: '' });
    }
  } finally {
    sink = [];
  }
  if (only) return out;
  for (const { kind, re, hint } of EXTRA) {
    if (hint && !hint.test(content)) continue;
    re.lastIndex = 0;
    for (let m = re.exec(content); m; m = re.exec(content)) {
      const s = m.groups?.s;
      const start = s === undefined ? m.index : m.index + m[0].indexOf(s);
      out.push({ kind, start, end: s === undefined ? m.index + m[0].length : start + s.length });
      if (m[0].length === 0) re.lastIndex++;
    }
  }
  return out;
}

/** Words (letters, digits and `_`) of LONG_WORD_MIN to LONG_WORD_MAX characters holding a lowercase letter, start and end pairs. */
export function lowercaseWords(source: string): number[] {
  const out: number[] = [];
  const len = source.length;
  let i = 0;
  while (i < len) {
    let c = source.charCodeAt(i);
    let bits = c < 128 ? WORD_CHAR[c]! : 0;
    if (!(bits & 7) && c !== 95) {
      i++;
      continue;
    }
    const start = i;
    let cls = 0;
    do {
      cls |= bits;
      i++;
      c = i < len ? source.charCodeAt(i) : 0;
      bits = c < 128 ? WORD_CHAR[c]! : 0;
    } while (i < len && ((bits & 7) || c === 95));
    if (cls & 2 && i - start >= LONG_WORD_MIN && i - start <= LONG_WORD_MAX) out.push(start, i);
  }
  return out;
}

/**
 * An identifier of words, camelCase or PascalCase ("asiaPacificCountries", "AidaMarketingList"):
 * letters only, each word after the first a capital and two or more lowercase letters, every word
 * holding a vowel. Uppercased, such a name can read as a key ("ASIAPACIFICCOUNTRIES"); a key
 * lowercased, or its case alternating letter by letter, never looks like one, and a key written
 * as one on purpose needs letters that make a word of every piece (a deliberate disguise, which
 * docs/policy.md lists among what content rules do not catch).
 */
const IDENTIFIER_OF_WORDS = /^(?:[a-z]+|[A-Z][a-z]{2,})(?:[A-Z][a-z]{2,})+$/;
const isIdentifierOfWords = (word: string): boolean => IDENTIFIER_OF_WORDS.test(word) && word.split(/(?=[A-Z])/).every((piece) => /[aeiouy]/i.test(piece));

/** Findings of the uppercase-alphabet rules in the words of `source` at `found` (start, end pairs), uppercased. */
export function scanUppercased(source: string, found: readonly number[], at: (pos: number) => number): SecretFinding[] {
  const words: { at: number; src: number; len: number }[] = [];
  const pieces: string[] = [];
  let size = 0;
  for (let k = 0; k < found.length; k += 2) {
    const word = source.slice(found[k], found[k + 1]);
    if (isIdentifierOfWords(word)) continue;
    words.push({ at: size, src: found[k]!, len: word.length });
    pieces.push(word.toUpperCase());
    size += word.length + 1;
  }
  if (pieces.length === 0) return [];
  return scan(pieces.join('\n'), UPPERCASE_ALPHABET).flatMap((f) => {
    const w = words.find((x) => f.start >= x.at && f.start < x.at + x.len);
    if (!w) return [];
    const end = Math.min(f.end, w.at + w.len);
    return [{ kind: f.kind, start: at(w.src + f.start - w.at), end: at(w.src + end - w.at - 1) + 1 }];
  });
}

