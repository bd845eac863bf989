/**
 * The bounded, expiring cache that identity lookups, OpenFGA answers and budget-header reads keep
 * per replica: lru-cache, read through the clock the caller gives (tests move a fake one), with an
 * entry fresh while younger than its ttl, as these caches have always counted it.
 */
import { LRUCache } from 'lru-cache';

export interface TtlCacheOptions {
  /** Most entries kept; beyond it the least recently used go first. */
  max: number;
  /** How long an entry is served, in ms of `now`; at least 1. */
  ttlMs: number;
  /** The clock, epoch ms. Default Date.now. */
  now?: () => number;
}

/** A string-keyed lru-cache whose entries expire `ttlMs` after they were set. */
export class TtlCache<V extends {}> {
  private readonly lru: LRUCache<string, V>;

  constructor(opts: TtlCacheOptions) {
    // lru-cache reads a ttl of 0 as "never expires"; a caller that caches nothing makes no cache.
    if (!Number.isInteger(opts.ttlMs) || opts.ttlMs < 1) throw new RangeError(`TtlCache needs a ttlMs of at least 1, got ${opts.ttlMs}`);
    const now = opts.now ?? Date.now;
    this.lru = new LRUCache<string, V>({
      max: opts.max,
      ttl: opts.ttlMs,
      // Read the clock on every check, not once per ms of real time, so a moved fake clock counts at once.
      ttlResolution: 0,
      // lru-cache takes a start time of 0 as "no ttl"; one ms later keeps a clock starting at 0 expiring.
      perf: { now: () => now() + 1 },
    });
  }

  /** The entry, while it is younger than ttlMs (lru-cache alone would still serve it at exactly ttlMs). */
  get(key: string): V | undefined {
    const value = this.lru.get(key);
    if (value === undefined || this.lru.getRemainingTTL(key) > 0) return value;
    this.lru.delete(key);
    return undefined;
  }

  set(key: string, value: V): void {
    this.lru.set(key, value);
  }

  delete(key: string): void {
    this.lru.delete(key);
  }

  get size(): number {
    return this.lru.size;
  }
}
