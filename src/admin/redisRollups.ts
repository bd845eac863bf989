/**
 * The Redis store's day rollups, for a process that reads them again and again (the console's
 * overview), kept between reads without any write on the call path beyond a call's own
 * increments. Each rollup hash has a version (ROLLUP_VERSION_FIELD, the link of a journal entry
 * that added to it) that the scripts set when the hash is made and again on every write into a day
 * that is over by Redis's own clock, but not on a write into the day Redis calls today. So a read
 * reads whole, every time, the hashes of this reader's today and yesterday; for older days it
 * first asks each hash it kept for its version, all at once (one round trip), and reads whole only
 * those whose version changed, and those it did not keep.
 *
 * No day is taken to be over: a write that lands late in a past day's hash (a replica whose clock
 * is behind, a settlement replayed after an outage) changes that hash's version, and the next read
 * reads it again. What this assumes is that this reader's clock is at most a day ahead of Redis's
 * (replica clocks within a day of each other): a write Redis puts on its today, which does not
 * change the version, then falls on this reader's today or yesterday, which it reads whole. A hash
 * is kept only when it was read as an older day, and is the rows of one HGETALL with the version in
 * the same reply, so rows and version always go together. A hash written before versions existed
 * has none and is read whole every time, until a write gives it one.
 */
import { mergeRollupHashes, type RollupHash, type UsageRollup } from '../quota/rollups.js';
import type { RedisQuotaStore } from '../quota/redis.js';
import { dayOf } from './report.js';

/** Hashes kept at most: a cluster has one a day per line that carried events. */
const DEFAULT_MAX_KEPT = 2_000;
const DAY_MS = 86_400_000;

export interface RedisRollupsOptions {
  /** This reader's clock (epoch ms): it names its today and yesterday. Default Date.now. */
  now?: () => number;
  /** Hashes kept at most. */
  maxKept?: number;
}

export class RedisRollups {
  private readonly kept = new Map<string, RollupHash & { version: string }>();
  private readonly now: () => number;
  private readonly maxKept: number;
  /** Hashes read whole by the last `read` (the rest were kept). */
  lastReadWhole = 0;

  constructor(
    private readonly store: RedisQuotaStore,
    opts: RedisRollupsOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.maxKept = opts.maxKept ?? DEFAULT_MAX_KEPT;
  }

  /** The rollups of the UTC days `from` to `to` (`YYYY-MM-DD`, inclusive), as the store holds them now. */
  async read(from: string, to: string): Promise<UsageRollup[]> {
    const keys = await this.store.rollupKeys(from, to);
    // Days from this one on are read whole: a write into Redis's today leaves the version as it was.
    const recent = dayOf(this.now() - DAY_MS);
    const checked = keys.flatMap((k, i) => (k.day < recent && this.kept.has(k.key) ? [i] : []));
    const versions = checked.length > 0 ? await this.store.rollupVersions(checked.map((i) => keys[i]!)) : [];
    const hashes: RollupHash[] = [];
    checked.forEach((i, j) => {
      const key = keys[i]!.key;
      const kept = this.kept.get(key)!;
      if (versions[j] !== null && kept.version === versions[j]) {
        // Most recently used last, so the oldest goes first when there are too many.
        this.kept.delete(key);
        this.kept.set(key, kept);
        hashes[i] = kept;
      }
    });
    const stale = keys.flatMap((_, i) => (hashes[i] === undefined ? [i] : []));
    const fresh = await this.store.readRollups(stale.map((i) => keys[i]!));
    stale.forEach((i, j) => {
      const h = fresh[j]!;
      const k = keys[i]!;
      hashes[i] = h;
      this.kept.delete(k.key);
      if (h.version !== undefined && k.day < recent) this.kept.set(k.key, { ...h, version: h.version });
    });
    for (const key of this.kept.keys()) {
      if (this.kept.size <= this.maxKept) break;
      this.kept.delete(key);
    }
    this.lastReadWhole = stale.length;
    return mergeRollupHashes(hashes);
  }
}
