/**
 * Results computed from one text alone, remembered by the text's SHA-256: a message's content
 * analysis (src/policy/content.ts) and its token bound (src/providers/estimate.ts). Clients resend
 * the whole conversation on every turn, so without this a 200 KB history is scanned and bounded
 * again on each call; with it, a message seen before costs a hash (about 0.16 ms per 200 KB).
 *
 * Not poisonable: a cached value is a pure function of the text and of what the owner's compute
 * reads besides it (a rule set, a vocabulary), which the owner names in `namespace` and never
 * changes at run time. The key is a cryptographic hash, so no caller can make two texts share an
 * entry. A text that is not well-formed UTF-16 (a lone surrogate) is computed, never cached:
 * SHA-256 reads the text as UTF-8, where every lone surrogate becomes U+FFFD.
 */
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';

export interface TextCacheOptions<V> {
  /** What the values depend on besides the text (rule set, vocabulary): part of every key. */
  namespace: string;
  /** Most entries kept; beyond it, or beyond maxBytes, the least recently used go first. */
  maxEntries: number;
  /** Most bytes of values kept, by `sizeOf`. */
  maxBytes: number;
  /** Shorter texts are computed every time: the hash would cost about as much. */
  minChars: number;
  /** Bytes a value holds (an estimate; at least 1). */
  sizeOf: (value: V) => number;
}

/** A bounded LRU of values computed from a text, keyed by namespace and the text's SHA-256. */
export class TextCache<V extends {}> {
  private readonly lru: LRUCache<string, V>;
  hits = 0;
  misses = 0;

  constructor(private readonly opts: TextCacheOptions<V>) {
    this.lru = new LRUCache<string, V>({ max: opts.maxEntries, maxSize: opts.maxBytes, sizeCalculation: (v) => Math.max(1, opts.sizeOf(v)) });
  }

  /** The value for `text`: remembered, or `compute()`d (and remembered when the text is long enough). */
  get(text: string, compute: () => V): V {
    if (text.length < this.opts.minChars) return compute();
    const digest = textDigest(text);
    if (digest === undefined) return compute();
    const key = `${this.opts.namespace}:${digest}`;
    const known = this.lru.get(key);
    if (known !== undefined) {
      this.hits++;
      return known;
    }
    this.misses++;
    const value = compute();
    this.lru.set(key, value);
    return value;
  }

  /** Entries held. */
  get size(): number {
    return this.lru.size;
  }

  clear(): void {
    this.lru.clear();
  }
}

/**
 * The digests of the texts hashed last: a call's content and its token bound read the same message
 * strings, so each is hashed once per call. A Map finds a long string by its length and then
 * compares it (V8 does not hash the characters of strings past 16 K), which for the same string
 * object is a pointer check. Bounded in texts and characters; cleared when full.
 */
const recent = new Map<string, string>();
let recentChars = 0;
const RECENT_TEXTS = 16;
const RECENT_CHARS = 4_000_000;

/** The SHA-256 of `text` (base64), or undefined when it holds a lone surrogate. */
export function textDigest(text: string): string | undefined {
  let digest = recent.get(text);
  if (digest !== undefined) return digest;
  if (!(text as unknown as { isWellFormed(): boolean }).isWellFormed()) return undefined;
  digest = hash('sha256', text, 'base64');
  if (recent.size >= RECENT_TEXTS || recentChars + text.length > RECENT_CHARS) {
    recent.clear();
    recentChars = 0;
  }
  recent.set(text, digest);
  recentChars += text.length;
  return digest;
}
