/**
 * Does the store hold the data of this policy? An operator command that reads a ledger through the
 * wrong policy (the shipped default instead of the deployment's) would otherwise print "no usage"
 * or "no such budget" while the ledger holds spend. The check: the budgets and rate limits with live
 * usage in the store (counters whose window has not ended) must all be declared by the policy.
 */
import type { Policy } from '../policy/load.js';
import { MemoryQuotaStore } from '../quota/memory.js';
import { settingsFromEnv } from '../main.js';
import { isJournalDir, journalEntries, type Source } from './journalReader.js';

/** The store holds data the policy does not describe; the CLI exits with 4. */
export class StoreMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreMismatchError';
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A store that lists its live usage counters: the Redis store, the embedded one. */
export interface UsageLister {
  listUsage(pattern: string): Promise<{ key: string; used: number }[]>;
}

/** Whether `store` can list its usage (the embedded store can; a test double may not). */
export function listsUsage(store: object): store is UsageLister {
  return typeof (store as Partial<UsageLister>).listUsage === 'function';
}

/** The budget ids with live usage counters in a store (Redis or embedded) under `prefix`. */
export async function budgetsInStore(store: UsageLister, prefix: string): Promise<Set<string>> {
  const re = new RegExp(`^${escapeRe(prefix)}\\{([^|{}]+)\\|`);
  const found = await store.listUsage(`${prefix}{*|*}:u:*`);
  return new Set(found.flatMap(({ key }) => re.exec(key)?.[1] ?? []));
}

/**
 * The budget ids with live usage at `now` in the embedded journal in `dir`, its entries replayed as
 * `tollgate serve` would on start; none when `dir` holds no journal yet.
 */
export async function budgetsInJournal(dir: string, prefix: string, now = Date.now()): Promise<Set<string>> {
  if (!isJournalDir(dir)) return new Set();
  const replay = new MemoryQuotaStore(() => now);
  replay.restore((function* () {
    for (const { entry } of journalEntries(dir)) yield entry.body;
  })());
  return budgetsInStore(replay, prefix);
}

/**
 * Throws StoreMismatchError naming the budgets `inStore` holds that `policy` does not declare
 * (`where` says which store), unless `allow` (`--allow-other-budgets`).
 */
export function requireSamePolicy(policy: Policy, inStore: Iterable<string>, where: string, allow = false): void {
  // Rate limits and caps are ledger lines too, under their own ids.
  const declared = new Set([...policy.budgets.map((b) => b.config.id), ...policy.rateLimits.map((l) => l.config.id)]);
  const other = [...new Set(inStore)].filter((id) => !declared.has(id)).sort();
  if (other.length === 0 || allow) return;
  throw new StoreMismatchError(
    `${where} holds usage for ${other.length === 1 ? 'a budget' : 'budgets'} the policy ${policy.source} does not declare: ${other.join(', ')} ` +
      `(it declares ${[...declared].join(', ') || 'none'}). This is not the policy the store was written with: point the command at the ` +
      "deployment's policy (--policy, TOLLGATE_POLICY or `policy:` in tollgate.yaml), or at its store. If those budgets were removed from the policy, " +
      'their counters stay until their window ends; --allow-other-budgets reads the store anyway.',
  );
}

/**
 * For the commands that read decisions from a source (`usage export|report|refusals`): the journal
 * or Redis store must hold `policy`'s data, as for the ledger commands. Event files are logs,
 * possibly of several deployments, and are read as they are.
 */
export async function requireSourceMatches(policy: Policy, source: Source, env: NodeJS.ProcessEnv, allow = false): Promise<void> {
  const prefix = settingsFromEnv(env).keyPrefix;
  if (source.kind === 'events') return;
  if (source.kind === 'journal') return requireSamePolicy(policy, await budgetsInJournal(source.dir, prefix), `The journal in ${source.dir}`, allow);
  const { openRedisJournal, shownUrl } = await import('./redisJournal.js');
  const store = openRedisJournal(source.url, env);
  try {
    requireSamePolicy(policy, await budgetsInStore(store, prefix), `The Redis store at ${shownUrl(source.url)} (prefix ${prefix})`, allow);
  } finally {
    await store.close();
  }
}
