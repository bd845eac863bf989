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

export type EncodingName = 'o200k_base' | 'cl100k_base';

/** What this module reads of gpt-tokenizer's encoder (private there; pinned by the equality test). */
interface BpeCore {
  tokenSplitRegex: RegExp;
  getBpeRankFromString(piece: string): number | undefined;
  getBpeRankFromBytes(bytes: Uint8Array): number | undefined;
  bytePairEncode(piece: string): number[];
}

/** Pieces up to this many UTF-8 bytes go through the package's own merge (and its cache). */
const LONG_PIECE = 256;

const loaded = new Map<EncodingName, Promise<BpeCore>>();

async function load(name: EncodingName): Promise<BpeCore> {
  const mod = (name === 'o200k_base' ? await import('gpt-tokenizer/encoding/o200k_base') : await import('gpt-tokenizer/encoding/cl100k_base')) as { default: GptEncoding };
  const core = (mod.default as unknown as { bytePairEncodingCoreProcessor?: BpeCore }).bytePairEncodingCoreProcessor;
  if (!core || !(core.tokenSplitRegex instanceof RegExp) || typeof core.getBpeRankFromBytes !== 'function') {
    throw new Error(`gpt-tokenizer's ${name} encoder does not have the shape this module reads`);
  }
  return core;
}

/** A counter for one encoding; the vocabulary loads once, on first use. */
export async function tokenCounter(name: EncodingName): Promise<(text: string) => number> {
  let core = loaded.get(name);
  if (!core) {
    core = load(name);
    loaded.set(name, core);
    core.catch(() => loaded.delete(name));
  }
  const c = await core;
  return (text) => countWith(c, text);
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
