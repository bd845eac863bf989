/**
 * The Redis store's day rollups, for a process that reads them again and again (the console's
 * overview), kept between reads without any work on the call path beyond what a rollup write
 * already does: each rollup hash names its last write in one field (ROLLUP_VERSION_FIELD, the link
 * of the journal entry that added to it, set in the same script step), so a read first asks every
 * hash of the range for that field, all at once (one round trip), and reads whole only the hashes
 * whose version changed, or that it did not keep.
 *
 * No day is taken to be over: a write that lands late in a past day's hash (a replica whose clock
 * is behind, a settlement replayed after an outage) changes that hash's version, and the next read
 * reads it again. A hash kept is the rows of one HGETALL with the version in the same reply, so
 * rows and version always go together. A hash written before versions existed has none and is
 * read whole every time, until a write gives it one.
 */
import { mergeRollupHashes, type RollupHash, type UsageRollup } from '../quota/rollups.js';
import type { RedisQuotaStore } from '../quota/redis.js';

/** Hashes kept at most: a cluster has one a day per line that carried events. */
const DEFAULT_MAX_KEPT = 2_000;

export class RedisRollups {
  private readonly kept = new Map<string, RollupHash & { version: string }>();
  /** Hashes read whole by the last `read` (the rest were kept). */
  lastReadWhole = 0;

  constructor(
    private readonly store: RedisQuotaStore,
    private readonly maxKept = DEFAULT_MAX_KEPT,
  ) {}

  /** The rollups of the UTC days `from` to `to` (`YYYY-MM-DD`, inclusive), as the store holds them now. */
  async read(from: string, to: string): Promise<UsageRollup[]> {
    const keys = await this.store.rollupKeys(from, to);
    // Nothing kept (the first read): nothing to check.
    const versions = this.kept.size > 0 ? await this.store.rollupVersions(keys) : keys.map(() => null);
    const hashes: RollupHash[] = [];
    const stale: number[] = [];
    keys.forEach((k, i) => {
      const kept = this.kept.get(k.key);
      if (kept && versions[i] !== null && kept.version === versions[i]) {
        // Most recently used last, so the oldest goes first when there are too many.
        this.kept.delete(k.key);
        this.kept.set(k.key, kept);
        hashes[i] = kept;
      } else stale.push(i);
    });
    const fresh = await this.store.readRollups(stale.map((i) => keys[i]!));
    stale.forEach((i, j) => {
      const h = fresh[j]!;
      hashes[i] = h;
      this.kept.delete(keys[i]!.key);
      if (h.version !== undefined) this.kept.set(keys[i]!.key, { ...h, version: h.version });
    });
    for (const key of this.kept.keys()) {
      if (this.kept.size <= this.maxKept) break;
      this.kept.delete(key);
    }
    this.lastReadWhole = stale.length;
    return mergeRollupHashes(hashes);
  }
}
