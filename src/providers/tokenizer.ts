/**
 * Exact token counts with OpenAI's byte-level BPE encodings (o200k_base, cl100k_base), from the
 * gpt-tokenizer package's vocabularies and pre-tokenizer. The package merges each pre-tokenized
 * piece with the textbook quadratic loop, which takes minutes on one long piece (a megabyte of CJK
 * or emoji without a space is a single piece). Pieces past `LONG_PIECE` bytes are merged here with
 * a heap instead: the same rule (lowest rank first, leftmost on a tie), so the same tokens, in
 * O(n log n). test/providers/estimate.test.ts holds the two equal.
 *
 * The vocabulary is loaded on the first count only (tens of MB), never at start.
 */
import type { GptEncoding } from 'gpt-tokenizer/GptEncoding';
import { AsciiVocab, asciiPieceEnd } from './asciiPieces.js';

export type EncodingName = 'o200k_base' | 'cl100k_base';

/** What this module reads of gpt-tokenizer's encoder (private there; pinned by the equality tests). */
interface BpeCore {
  tokenSplitRegex: RegExp;
  /** Every token whose bytes are valid UTF-8, by its text: all the ASCII ones among them. */
  bytePairStringRankEncoder: Map<string, number>;
  getBpeRankFromString(piece: string): number | undefined;
  getBpeRankFromBytes(bytes: Uint8Array): number | undefined;
  bytePairEncode(piece: string): number[];
  /** This module's own cache of merged ASCII pieces (`boundWith`), kept on the encoder it belongs to. */
  mergedAscii?: Map<string, number>;
  /** o200k_base only: the ASCII pre-tokenizer's vocabulary table and the regex for the other pieces (asciiPieces.ts). */
  ascii?: { table: AsciiVocab; sticky: RegExp };
}

/** Pieces up to this many UTF-8 bytes go through the package's own merge (and its cache). */
const LONG_PIECE = 256;

const loaded = new Map<EncodingName, Promise<BpeCore>>();
/** The encodings whose load has finished. */
const ready = new Set<EncodingName>();

async function load(name: EncodingName): Promise<BpeCore> {
  const mod = (name === 'o200k_base' ? await import('gpt-tokenizer/encoding/o200k_base') : await import('gpt-tokenizer/encoding/cl100k_base')) as { default: GptEncoding };
  const core = (mod.default as unknown as { bytePairEncodingCoreProcessor?: BpeCore }).bytePairEncodingCoreProcessor;
  if (!core || !(core.tokenSplitRegex instanceof RegExp) || typeof core.getBpeRankFromBytes !== 'function' || !(core.bytePairStringRankEncoder instanceof Map)) {
    throw new Error(`gpt-tokenizer's ${name} encoder does not have the shape this module reads`);
  }
  // asciiPieces.ts follows o200k_base's regex; the test holds the two equal.
  if (name === 'o200k_base') core.ascii = { table: new AsciiVocab(core.bytePairStringRankEncoder), sticky: new RegExp(core.tokenSplitRegex.source, 'uy') };
  ready.add(name);
  return core;
}

function core(name: EncodingName): Promise<BpeCore> {
  let c = loaded.get(name);
  if (!c) {
    c = load(name);
    loaded.set(name, c);
    c.catch(() => loaded.delete(name));
  }
  return c;
}

/** Whether the vocabulary of `name` is in memory (loaded, not loading). */
export function encodingLoaded(name: EncodingName): boolean {
  return ready.has(name);
}

/** A counter for one encoding; the vocabulary loads once, on first use. */
export async function tokenCounter(name: EncodingName): Promise<(text: string) => number> {
  const c = await core(name);
  return (text) => countWith(c, text);
}

/**
 * An upper bound on the tokens of a text in one encoding, at a cost linear in the text whatever
 * it holds (the exact count can take seconds on a hostile text: see `boundWith`).
 */
export async function tokenBounder(name: EncodingName): Promise<(text: string) => number> {
  const c = await core(name);
  return (text) => boundWith(c, text);
}

const encoder = new TextEncoder();

/**
 * Tokens of `text` as ordinary text: a special token's spelling (`<|endoftext|>`) in a message is
 * text to the chat API, not a control token, and is counted as such.
 */
function countWith(core: BpeCore, text: string): number {
  let n = 0;
  for (const [piece] of text.matchAll(core.tokenSplitRegex)) {
    if (core.getBpeRankFromString(piece) !== undefined) {
      n += 1;
      continue;
    }
    const bytes = encoder.encode(piece);
    n += bytes.length <= LONG_PIECE ? core.bytePairEncode(piece).length : heapMergeCount(core, bytes);
  }
  return n;
}

/** Merged ASCII pieces remembered per encoding (the same rare words recur across calls); cleared when full. */
const MERGED_CACHE = 20_000;

/** ASCII pieces up to this length are merged by `asciiMergeCount` in the bound; longer ones count their bytes. */
const SHORT_ASCII_PIECE = 32;

/**
 * An upper bound on `countWith(core, text)`, linear in the text. The encoder splits the text into
 * pieces with its pre-tokenizer regex and encodes each piece on its own, so the tokens of the
 * text are the sum over its pieces, and each piece is bounded on its own:
 * - a piece that is itself a token is 1 token: the encoder looks it up before merging anything
 *   (tiktoken's `encode_ordinary`, and gpt-tokenizer's count above), so this is exact;
 * - an ASCII piece of up to SHORT_ASCII_PIECE characters is merged exactly by `asciiMergeCount`
 *   (in ASCII a character is a byte, so the piece's substrings are its byte strings);
 * - any other piece counts its UTF-8 bytes: every token covers at least one byte.
 * On English prose nearly every piece is a whole word in the vocabulary, so the bound is within a
 * few percent of the count. Merging is capped per text (below), and the bound never calls the package's own merge, whose cost per piece (about
 * 10 microseconds) makes a text of unique short words cost hundreds of milliseconds.
 */
function boundWith(core: BpeCore, text: string): number {
  const mergedCounts = core.mergedAscii ?? (core.mergedAscii = new Map());
  const vocab = core.bytePairStringRankEncoder;
  // Characters of merging allowed: a quarter of the text, and a few words in any text. Prose
  // spends a few percent of it; a text made of unknown words (a merge looks up every pair of its
  // piece) runs out and counts the rest in bytes, which keeps its cost near that of the split.
  let mergeBudget = (text.length >> 2) + 4 * SHORT_ASCII_PIECE;
  /** The bound of a piece that is not known to be a token. */
  // The budget is spent whether or not a merge is remembered, so the bound is a function of the
  // text alone (estimate.ts remembers it by the text's hash): what other calls merged before never
  // changes it.
  const unknownPiece = (piece: string): number => {
    if (vocab.has(piece)) return 1;
    if (piece.length > SHORT_ASCII_PIECE || !isAscii(piece)) return Buffer.byteLength(piece, 'utf8');
    if (piece.length > mergeBudget) return piece.length;
    mergeBudget -= piece.length;
    let merged = mergedCounts.get(piece);
    if (merged === undefined) {
      merged = asciiMergeCount(vocab, piece);
      if (mergedCounts.size >= MERGED_CACHE) mergedCounts.clear();
      mergedCounts.set(piece, merged);
    }
    return merged;
  };

  let n = 0;
  if (!core.ascii) {
    for (const [piece] of text.matchAll(core.tokenSplitRegex)) n += unknownPiece(piece);
    return n;
  }
  // o200k_base: ASCII pieces found and looked up without the regex (asciiPieces.ts); the regex
  // matches the pieces that need a character beyond ASCII, one at a time, where they start.
  const { table, sticky } = core.ascii;
  let i = 0;
  while (i < text.length) {
    const end = asciiPieceEnd(text, i);
    if (end > i) {
      n += table.has(text, i, end) ? 1 : unknownPiece(text.slice(i, end));
      i = end;
      continue;
    }
    sticky.lastIndex = i;
    const piece = sticky.exec(text)?.[0];
    // Every character starts some alternative of the regex; should none match, bytes bound the rest.
    if (!piece) return n + Buffer.byteLength(text.slice(i), 'utf8');
    n += unknownPiece(piece);
    i += piece.length;
  }
  return n;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * The byte-pair merge of an ASCII piece, counted: the pair of adjacent parts whose concatenation
 * has the lowest rank is merged first, the leftmost of equal ranks, until no adjacent pair is a
 * token (tiktoken's `_byte_pair_merge`). Parts are kept as start offsets into the piece; the rank
 * of each adjacent pair is cached and only the two pairs around a merge are looked up again.
 */
function asciiMergeCount(vocab: ReadonlyMap<string, number>, piece: string): number {
  const starts: number[] = [];
  for (let i = 0; i <= piece.length; i++) starts.push(i);
  const rankAt = (i: number): number => (i + 2 < starts.length ? (vocab.get(piece.slice(starts[i]!, starts[i + 2]!)) ?? Infinity) : Infinity);
  const ranks: number[] = [];
  for (let i = 0; i + 1 < starts.length; i++) ranks.push(rankAt(i));
  for (;;) {
    let best = Infinity;
    let at = -1;
    for (let i = 0; i < ranks.length; i++) {
      if (ranks[i]! < best) {
        best = ranks[i]!;
        at = i;
      }
    }
    if (at < 0) return starts.length - 1;
    starts.splice(at + 1, 1);
    ranks.splice(at + 1, 1);
    ranks[at] = rankAt(at);
    if (at > 0) ranks[at - 1] = rankAt(at - 1);
  }
}

/**
 * Byte-pair merge of one piece with a binary heap over (rank, start): every step merges the
 * adjacent pair of lowest rank, the leftmost of equal ranks, exactly as the quadratic loop does.
 * Stale heap entries are skipped by checking the pair's current rank.
 */
function heapMergeCount(core: BpeCore, bytes: Uint8Array): number {
  const n = bytes.length;
  // Parts as a linked list of start offsets; part i spans [i, next[i]).
  const next = new Int32Array(n + 1);
  const prev = new Int32Array(n + 1);
  const alive = new Uint8Array(n + 1);
  const rank = new Float64Array(n + 1);
  for (let i = 0; i <= n; i++) {
    next[i] = i + 1;
    prev[i] = i - 1;
    alive[i] = 1;
  }
  const pairRank = (i: number): number => {
    const j = next[i]!;
    if (j >= n) return Number.POSITIVE_INFINITY;
    return core.getBpeRankFromBytes(bytes.subarray(i, next[j]!)) ?? Number.POSITIVE_INFINITY;
  };
  // Heap of [rank, start], ordered by rank then start.
  const heapRank: number[] = [];
  const heapStart: number[] = [];
  const less = (a: number, b: number) => heapRank[a]! < heapRank[b]! || (heapRank[a] === heapRank[b] && heapStart[a]! < heapStart[b]!);
  const swap = (a: number, b: number) => {
    [heapRank[a], heapRank[b]] = [heapRank[b]!, heapRank[a]!];
    [heapStart[a], heapStart[b]] = [heapStart[b]!, heapStart[a]!];
  };
  const push = (r: number, s: number) => {
    heapRank.push(r);
    heapStart.push(s);
    let i = heapRank.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(i, p)) break;
      swap(i, p);
      i = p;
    }
  };
  const pop = (): [number, number] => {
    const top: [number, number] = [heapRank[0]!, heapStart[0]!];
    const lastR = heapRank.pop()!;
    const lastS = heapStart.pop()!;
    if (heapRank.length > 0) {
      heapRank[0] = lastR;
      heapStart[0] = lastS;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heapRank.length && less(l, m)) m = l;
        if (r < heapRank.length && less(r, m)) m = r;
        if (m === i) break;
        swap(i, m);
        i = m;
      }
    }
    return top;
  };

  for (let i = 0; i < n; i++) {
    rank[i] = pairRank(i);
    if (rank[i]! !== Number.POSITIVE_INFINITY) push(rank[i]!, i);
  }
  let parts = n;
  while (heapRank.length > 0) {
    const [r, i] = pop();
    if (!alive[i] || rank[i] !== r || r === Number.POSITIVE_INFINITY) continue;
    // Merge part i with the part after it.
    const j = next[i]!;
    alive[j] = 0;
    next[i] = next[j]!;
    if (next[j]! <= n) prev[next[j]!] = i;
    parts -= 1;
    rank[i] = pairRank(i);
    if (rank[i]! !== Number.POSITIVE_INFINITY) push(rank[i]!, i);
    const p = prev[i]!;
    if (p >= 0) {
      rank[p] = pairRank(p);
      if (rank[p]! !== Number.POSITIVE_INFINITY) push(rank[p]!, p);
    }
  }
  return parts;
}
