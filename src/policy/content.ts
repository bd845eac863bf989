/**
 * What content rules read, and the credential finder behind `request.secrets` and the log scrub.
 *
 * A prompt is checked on text that the usual disguises do not change:
 * - `text`: every message, system prompt first, NFKC-normalised (fullwidth and other compatibility
 *   forms become ASCII) with format and default-ignorable characters removed (zero-width space and
 *   joiner, soft hyphen, BOM, bidi marks, variation selectors, tag characters), joined with "\n";
 * - `compactText`: `text` with the messages glued end to end (a value cut across two messages reads
 *   whole; at each seam the two messages are also read glued alone, so that text after them does
 *   not run into the value's end), control characters that show nothing left out (C0 but tab, the
 *   line breaks, VT and FF; DEL; C1 but NEL; the braille blank), and runs of at least four
 *   spaced-out groups of equal size (1–8 characters, one case; the last group may be shorter)
 *   glued together: `A K I A ...`, `AKIA BCDE FGHI ...`, `41 4b 49 41`;
 *   and a value hard-wrapped across one line break glued back (a base64 block at 76 columns);
 * - `decodedSpans`: base64, base64url and hex runs of `text` and `compactText` that decode to
 *   readable UTF-8 text, and escaped runs (`%NN`, `\xNN`, `\uNNNN`, `\/`, `&#NN;`, `&#xNN;` among
 *   plain characters, with the name before them), normalised the same way, decoded twice at most
 *   (base64 of hex), bounded by CONTENT_LIMITS; `decodedTruncated` says a bound cut the decoding short.
 *
 * The credential finder (secretPatterns.ts) runs over all three, plus an ASCII-uppercased copy of
 * the long words for key formats whose alphabet is uppercase only (AWS access key ids, so a
 * lowercased key is still found).
 *
 * Each message is analysed on its own (its findings, its decoded spans, each message decoded within
 * CONTENT_LIMITS), and so is each seam between two messages: the text and the compact view up to
 * WINDOW characters either side of it, where only what crosses the seam counts. A message's
 * analysis is a function of its text alone and is remembered by the text's SHA-256
 * (src/textCache.ts), as is a seam's, so the history a client resends on every turn costs a hash,
 * not a scan. A value cut across messages is found when it lies within WINDOW characters of the cut
 * on either side (a private key block longer than that is still found by its header, `pem-header`).
 *
 * What no text check can catch: an encrypted, hashed or otherwise transformed secret (rot13, an
 * encoding not listed above, a key spelled out in words), one paraphrased or interleaved with other
 * text, homoglyphs from other scripts (Cyrillic А for Latin A), a value cut in two inside one
 * message by a space or a blank line, a secret cut across two messages
 * with other text between the pieces, and a format neither secretlint nor the three shapes know.
 */
import { TextCache } from '../textCache.js';
import { CONTENT_LIMITS, Decoder, WINDOW, buildCompact, compactWindows, normalizeText, toCompact, type DecodedSpan } from './contentView.js';
import { lowercaseWords, scan, scanUppercased, type SecretFinding } from './secretPatterns.js';

export { CONTENT_LIMITS, normalizeText } from './contentView.js';
export type { SecretFinding } from './secretPatterns.js';

// ---------------------------------------------------------------------------------------------
// Messages and seams

/** What a message, a seam or a whole prompt holds: credentials found and decoded spans. */
interface Analysis {
  findings: SecretFinding[];
  spans: DecodedSpan[];
  truncated: boolean;
}

/** One message's analysis, ranges in its normalised text, with the ends the seams beside it read. */
interface PartAnalysis extends Analysis {
  /** Characters of the normalised text. */
  length: number;
  /** Up to WINDOW characters at each end of the normalised text and of its compact view. */
  head: string;
  tail: string;
  compactHead: string;
  compactTail: string;
}

/** A copy that does not keep the string it was cut from alive (V8 slices point into their parent). */
const own = (s: string): string => (s.length < 16 ? s : Buffer.from(s, 'utf16le').toString('utf16le'));

/**
 * Findings in decoded spans, at each span's range: one scan over all of them (a blank line between),
 * and one over their compact views with the uppercase pass, as plain text gets, since what an
 * encoding hides may be disguised as well (base64 of a lowercased key, "%20" between its groups,
 * "\u000a" inside it).
 */
function spanFindings(spans: readonly DecodedSpan[]): SecretFinding[] {
  if (spans.length === 0) return [];
  let joined = '';
  let compact = '';
  const starts: number[] = [];
  const compactStarts: number[] = [];
  for (const s of spans) {
    starts.push(joined.length);
    joined += `${s.text}\n\n`;
    compactStarts.push(compact.length);
    compact += `${buildCompact([s.text]).compact}\n\n`;
  }
  const placed = (at: readonly number[]) => (f: SecretFinding): SecretFinding => {
    let i = at.length - 1;
    while (i > 0 && at[i]! > f.start) i--;
    return { kind: f.kind, start: spans[i]!.start, end: spans[i]!.end };
  };
  const findings = scan(joined).map(placed(starts));
  const disguised = compact === joined ? [] : scan(compact);
  // Uppercased, only what can be a key id: AWS issues them in base32 (A to Z, 2 to 7), and decoded
  // prose glued in the compact view reads as one ("Akia 10000 10000 script" as AKIA1000010000SCRIPT).
  const base32Id = (f: SecretFinding) => f.end - f.start !== 20 || /^.{4}[A-Z2-7]{16}$/.test(compact.slice(f.start, f.end).toUpperCase());
  disguised.push(...scanUppercased(compact, lowercaseWords(compact), (p) => p).filter(base32Id));
  for (const f of disguised) findings.push(placed(compactStarts)(f));
  return findings;
}

/** One message on its own: its text, its compact view around what was glued, and its decoded runs. */
function analysePart(raw: string): PartAnalysis {
  const text = normalizeText(raw);
  const view = buildCompact([text]);
  const w = view.compact === text ? undefined : compactWindows(view.compact, view.segments);
  const decoder = new Decoder();
  decoder.scan(text, (s, e) => [s, e]);
  if (w) decoder.scan(w.view, (s, e) => [w.at(s), w.at(e - 1) + 1], 1, true);
  const findings = scan(text);
  findings.push(...scanUppercased(text, view.words, (p) => p));
  if (w) {
    for (const f of scan(w.view)) findings.push({ kind: f.kind, start: w.at(f.start), end: w.at(f.end - 1) + 1 });
    findings.push(...scanUppercased(w.view, lowercaseWords(w.view), w.at));
  }
  findings.push(...spanFindings(decoder.spans));
  return {
    findings,
    spans: decoder.spans,
    truncated: decoder.truncated,
    length: text.length,
    head: own(text.slice(0, WINDOW)),
    tail: own(text.slice(-WINDOW)),
    compactHead: own(view.compact.slice(0, WINDOW)),
    compactTail: own(view.compact.slice(-WINDOW)),
  };
}

/**
 * The text and the compact view around the seam after message `i`: `at` is the "\n" between, `cat`
 * where the compact view glues; `pair`, the compact views of the two messages alone glued.
 */
export interface Seam {
  text: string;
  at: number;
  compact: string;
  cat: number;
  pair: string;
  /** The text window with the messages glued without the line breaks between them, the seam at `gat`. */
  glued: string;
  gat: number;
}

/** The ends of a message the seams beside it read. */
export type PartEnds = Pick<PartAnalysis, 'length' | 'head' | 'tail' | 'compactHead' | 'compactTail'>;

/** One side's ends of every message joined once, with where each lies, so a seam's window is a slice. */
interface Joined {
  text: string;
  starts: number[];
  ends: number[];
  /** Positions where an end starts (left sides) or ends (right sides): a window cut there is cut between messages, not inside a word. */
  edges: Set<number>;
}

function joined(pieces: readonly string[], sep: string, edge: 'start' | 'end'): Joined {
  const text = pieces.join(sep);
  const starts: number[] = [];
  const ends: number[] = [];
  let at = 0;
  for (const p of pieces) {
    starts.push(at);
    at += p.length;
    ends.push(at);
    at += sep.length;
  }
  return { text, starts, ends, edges: new Set(edge === 'start' ? starts : ends) };
}

/**
 * The seams of a prompt's messages: for the seam after message `i`, the text and compact view
 * reaching up to WINDOW characters either side (through as many short messages as it takes).
 * Each window is a slice of its side's ends joined once, so a prompt of many short messages costs
 * a slice a seam, not a string built from every message within WINDOW of it (25,001 one-character
 * messages took 4.3 s, mostly building and hashing those strings). A window cut out of a longer
 * text starts and ends at a word boundary; one that ends where a message does is not cut.
 * test/unit/content-seams.test.ts holds the windows equal to the message-by-message construction.
 */
export function seamsOf(parts: readonly PartEnds[]): Seam[] {
  const tails = joined(parts.map((p) => p.tail), '\n', 'start');
  const heads = joined(parts.map((p) => p.head), '\n', 'end');
  const ctails = joined(parts.map((p) => p.compactTail), '', 'start');
  const cheads = joined(parts.map((p) => p.compactHead), '', 'end');
  const gtails = joined(parts.map((p) => p.tail), '', 'start');
  const gheads = joined(parts.map((p) => p.head), '', 'end');
  const before = (side: Joined, i: number): string => {
    const end = side.ends[i]!;
    const from = end - WINDOW;
    if (from <= 0) return side.text.slice(0, end);
    const s = side.text.slice(from, end);
    return side.edges.has(from) ? s : s.slice(fromWordStart(s));
  };
  const after = (side: Joined, i: number): string => {
    const start = side.starts[i]!;
    const to = start + WINDOW;
    if (to >= side.text.length) return side.text.slice(start);
    const s = side.text.slice(start, to);
    return side.edges.has(to) ? s : s.slice(0, toWordEnd(s));
  };
  const seams: Seam[] = [];
  for (let i = 0; i + 1 < parts.length; i++) {
    const left = before(tails, i);
    const right = after(heads, i + 1);
    const cleft = before(ctails, i);
    const cright = after(cheads, i + 1);
    // The compact view glues on the messages beyond as well (a value cut in three), where a value's
    // end can run into the next message's first word ("...EXAMPLF" + "hi"), and its pattern wants a
    // word boundary there: the two messages are also read glued alone.
    let pleft = parts[i]!.compactTail;
    let pright = parts[i + 1]!.compactHead;
    if (parts[i]!.length > WINDOW) pleft = pleft.slice(fromWordStart(pleft));
    if (parts[i + 1]!.length > WINDOW) pright = pright.slice(0, toWordEnd(pright));
    const gleft = before(gtails, i);
    seams.push({ text: `${left}\n${right}`, at: left.length, compact: cleft + cright, cat: cleft.length, pair: pleft + pright, glued: gleft + after(gheads, i + 1), gat: gleft.length });
  }
  return seams;
}

/** `s` without its first word when `s` was cut from a longer text, so a pattern does not see a word boundary the text has not. */
export const fromWordStart = (s: string): number => {
  const i = s.search(/\s/);
  return i < 0 || i > 64 ? 0 : i + 1;
};
/** Where to end `s` when it was cut from a longer text: at its last space or line break, when one lies within 64 characters of the end. */
export const toWordEnd = (s: string): number => {
  const i = Math.max(s.lastIndexOf(' ', s.length - 1), s.lastIndexOf('\n', s.length - 1));
  return i < s.length - 64 ? s.length : i;
};

/**
 * What the seam holds: findings of the text window and of the compact window (both cut at a word
 * boundary where they were cut out of a longer text), and the encoded runs that cross the glue.
 * Text ranges are relative to the "\n"; what only the compact view found is placed on the whole
 * text window. A value lying on one side only is also its message's own finding; the merge drops
 * the copy.
 */
function analyseSeam(seam: Seam): Analysis {
  const { text, at, compact, cat, pair } = seam;
  const findings: SecretFinding[] = [];
  for (const f of scan(text)) findings.push({ kind: f.kind, start: f.start - at, end: f.end - at });
  // The compact view adds what only gluing shows (a value cut inside a token); a kind the text
  // window holds already is not placed again on the whole window.
  const inText = new Set(findings.map((f) => f.kind));
  const around = { start: -at, end: text.length - at };
  const onWindow = (glued: string): void => {
    for (const f of [...scan(glued), ...scanUppercased(glued, lowercaseWords(glued), (p) => p)]) {
      if (!inText.has(f.kind)) {
        inText.add(f.kind);
        findings.push({ kind: f.kind, ...around });
      }
    }
  };
  onWindow(compact);
  if (pair !== compact) onWindow(pair);
  const decoder = new Decoder();
  decoder.scan(compact, () => [around.start, around.end], 1, true, (start, end) => start < cat && end > cat);
  // A value spaced out in groups and cut at the seam ("AKIA Z3MB " and "RXQ7 TLWU VY2P", or inside
  // groups: "AKIA Z3", "MB RX" and "Q7 TLWU VY2P"): each side has too few groups to glue alone, so
  // neither compact view holds it glued. The text window compacted as one piece does, read with the
  // line breaks between the messages and without them; what crosses the seam there counts.
  for (const [whole, cut] of [[text, at], [seam.glued, seam.gat]] as const) {
    const across = buildCompact([whole]);
    if (across.compact === whole || across.compact === compact) continue;
    onWindow(across.compact);
    const wat = toCompact(across.segments, cut);
    decoder.scan(across.compact, () => [around.start, around.end], 1, true, (start, end) => start < wat && end > wat);
  }
  findings.push(...spanFindings(decoder.spans));
  return { findings, spans: decoder.spans, truncated: decoder.truncated };
}

/** Bytes an analysis holds, for the caches' byte bounds. */
function analysisBytes(a: Analysis): number {
  let n = 256 + 48 * a.findings.length;
  for (const s of a.spans) n += 64 + 2 * s.text.length;
  return n;
}

/**
 * Message and seam analyses by the SHA-256 of their text. What they depend on besides the text (the
 * pattern set, CONTENT_LIMITS, WINDOW) is fixed in this build; the namespace names it.
 */
const PART_CACHE = new TextCache<PartAnalysis>({
  namespace: 'content-part',
  maxEntries: 4096,
  maxBytes: 32 * 1024 * 1024,
  minChars: 256,
  sizeOf: (a) => analysisBytes(a) + 2 * (a.head.length + a.tail.length + a.compactHead.length + a.compactTail.length),
});
const SEAM_CACHE = new TextCache<Analysis>({ namespace: 'content-seam', maxEntries: 8192, maxBytes: 8 * 1024 * 1024, minChars: 256, sizeOf: analysisBytes });

/** The caches of message and seam analyses, for tests and the benchmark. */
export const contentCaches = { parts: PART_CACHE, seams: SEAM_CACHE } as const;

/**
 * A prompt's analysis: each message's (ranges moved to `text`), then each seam's. Decoded spans are
 * the messages' in order, then the seams', kept within CONTENT_LIMITS' span bounds over the call.
 */
function analysePrompt(raw: readonly string[]): Analysis {
  const parts = raw.map((p) => PART_CACHE.get(p, () => analysePart(p)));
  const out: Analysis = { findings: [], spans: [], truncated: false };
  let kept = 0;
  const seen = new Set<string>();
  const add = (a: Analysis, offset: number): void => {
    for (const f of a.findings) {
      const found = { kind: f.kind, start: f.start + offset, end: f.end + offset };
      // A seam sees again what lies on one side of it: one finding each.
      if (parts.length > 1) {
        const key = `${found.kind} ${found.start} ${found.end}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      out.findings.push(found);
    }
    out.truncated ||= a.truncated;
    for (const s of a.spans) {
      if (out.spans.length >= CONTENT_LIMITS.maxSpans || kept >= CONTENT_LIMITS.maxSpanChars) {
        out.truncated = true;
        return;
      }
      const text = kept + s.text.length > CONTENT_LIMITS.maxSpanChars ? s.text.slice(0, CONTENT_LIMITS.maxSpanChars - kept) : s.text;
      if (text !== s.text) out.truncated = true;
      out.spans.push({ text, start: s.start + offset, end: s.end + offset });
      kept += text.length;
    }
  };
  const seams: number[] = [];
  let offset = 0;
  for (let i = 0; i < parts.length; i++) {
    add(parts[i]!, offset);
    offset += parts[i]!.length;
    seams.push(offset); // the "\n" after message i
    offset += 1;
  }
  const windows = parts.length > 1 ? seamsOf(parts) : [];
  for (let i = 0; i < windows.length; i++) {
    const seam = windows[i]!;
    add(SEAM_CACHE.get(`${seam.at},${seam.cat},${seam.gat}\n${seam.text}\u0000${seam.compact}\u0000${seam.pair}\u0000${seam.glued}`, () => analyseSeam(seam)), seams[i]!);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A prompt's content

/**
 * The content of one call, computed on first use: a policy whose rules never read it pays nothing.
 * `parts` are the raw message texts, system prompt first.
 */
export class PromptContent {
  private _parts?: string[];
  private _text?: string;
  private _compact?: string;
  private _analysis?: Analysis;

  constructor(readonly parts: readonly string[]) {}

  /** The messages as sent, joined with "\n". */
  get rawText(): string {
    return this.parts.join('\n');
  }

  private get normalizedParts(): string[] {
    this._parts ??= this.parts.map(normalizeText);
    return this._parts;
  }

  /** Normalised and joined: what content rules match. */
  get text(): string {
    this._text ??= this.normalizedParts.join('\n');
    return this._text;
  }

  /** Messages glued end to end and spaced-out groups glued together. */
  get compactText(): string {
    this._compact ??= buildCompact(this.normalizedParts).compact;
    return this._compact;
  }

  private get analysis(): Analysis {
    this._analysis ??= analysePrompt(this.parts);
    return this._analysis;
  }

  private _spans?: string[];
  /** Readable text decoded from base64/hex runs. */
  get decodedSpans(): string[] {
    this._spans ??= this.analysis.spans.map((s) => s.text);
    return this._spans;
  }

  /** A decoding bound was reached: runs after it were not decoded. */
  get decodedTruncated(): boolean {
    return this.analysis.truncated;
  }

  /** Credentials found, ranges in `text` (for an encoded one, the encoded run). */
  get findings(): SecretFinding[] {
    return this.analysis.findings;
  }

  private _secrets?: string[];
  /** The kinds of credential found, each once. */
  get secrets(): string[] {
    this._secrets ??= [...new Set(this.findings.map((f) => f.kind))];
    return this._secrets;
  }
}

/** The fields content rules read under `request`. */
export const CONTENT_FIELDS = ['text', 'rawText', 'compactText', 'decodedSpans', 'decodedTruncated', 'secrets'] as const;

/** Where a rule's `request` keeps its PromptContent (not enumerable: rules and JSON see only the fields). */
const CONTENT = Symbol('content');

/**
 * One getter for each content field, shared by every call's `request`: they read the content from
 * the object they are called on. A getter made for each call (a closure over its content) gave each
 * `request` a hidden class of its own, so that every rule's read of it missed V8's inline caches
 * (issue 21; test/unit/hidden-classes.test.ts), and took three times as long to define.
 */
const CONTENT_GETTERS = new Map(CONTENT_FIELDS.map((key) => [key, function (this: { [CONTENT]: PromptContent }) { return this[CONTENT][key]; }] as const));

/**
 * Adds the content fields to `target` (the `request` a rule sees) as getters, so that a field is
 * computed when a rule first reads it and a policy whose rules never do pays nothing. They are own
 * properties: the CEL evaluator reads only those.
 */
export function withContent<T extends object>(target: T, content: PromptContent): T {
  Object.defineProperty(target, CONTENT, { value: content });
  for (const [key, get] of CONTENT_GETTERS) Object.defineProperty(target, key, { enumerable: true, get });
  return target;
}

/**
 * The parts a call's content is made of: the system prompt, then every message, a system prompt or
 * message sent as pieces counting piece by piece (so `compactText` reads a value cut across two
 * pieces whole).
 */
export function contentOf(request: { system?: string; systemParts?: readonly string[]; messages: readonly { content: string; parts?: readonly string[] }[] }): PromptContent {
  const parts = request.messages.flatMap((m) => m.parts ?? [m.content]);
  return new PromptContent(request.system === undefined ? parts : [...(request.systemParts ?? [request.system]), ...parts]);
}

/**
 * Replaces every credential found in `text` with `replacement`. When a finding needed normalising
 * to be seen (a zero-width character, fullwidth letters), the normalised text is returned, redacted.
 */
export function redactSecrets(text: string, replacement: string): string {
  const content = new PromptContent([text]);
  const findings = content.findings;
  if (findings.length === 0) return text;
  const base = content.text;
  const ranges = findings.map((f) => [f.start, f.end] as [number, number]).sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  let out = '';
  let cur = 0;
  for (const [s, e] of ranges) {
    if (s < cur) {
      cur = Math.max(cur, e); // overlaps the range just replaced
      continue;
    }
    out += base.slice(cur, s) + replacement;
    cur = e;
  }
  return out + base.slice(cur);
}
