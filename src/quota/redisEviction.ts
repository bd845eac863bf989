/**
 * Whether a Redis node may evict keys. Under memory pressure a node whose `maxmemory-policy` is not
 * `noeviction` drops keys to make room: the ledger's usage counters, reservations and journal among
 * them (every `volatile-*` policy too, since counters and reservations carry expiries). A dropped
 * counter starts again at zero, so a spent budget is spent again, and nothing fails on the way.
 * The store cannot stop it; it reads `INFO memory` and `INFO stats` and says so (redis.ts).
 */

/** What INFO says about one node's eviction. */
export interface EvictionState {
  /** `maxmemory_policy`, e.g. `noeviction` or `allkeys-lru`. */
  policy: string;
  /** `maxmemory` in bytes; 0 is no limit (nothing is evicted until one is set). */
  maxmemory: number;
  /** `evicted_keys`: keys evicted since the server started. */
  evictedKeys: number;
}

/** How a node stands: `active` evicts now (a policy and a limit), `possible` would once a limit is set. */
export type EvictionRisk = 'none' | 'possible' | 'active';

/** One INFO field's value, or undefined. */
function field(info: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:(.*)$`, 'm').exec(info);
  return m ? m[1]!.trim() : undefined;
}

/** The eviction state in the text of `INFO memory` and `INFO stats` (together); undefined when the fields are missing. */
export function evictionState(info: string): EvictionState | undefined {
  const policy = field(info, 'maxmemory_policy');
  const maxmemory = Number(field(info, 'maxmemory'));
  const evictedKeys = Number(field(info, 'evicted_keys'));
  if (policy === undefined || !Number.isFinite(maxmemory) || !Number.isFinite(evictedKeys)) return undefined;
  return { policy, maxmemory, evictedKeys };
}

export function evictionRisk(s: EvictionState): EvictionRisk {
  if (s.policy === 'noeviction') return 'none';
  return s.maxmemory > 0 ? 'active' : 'possible';
}
