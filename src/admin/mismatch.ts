/**
 * Does the store hold the data of this policy? An operator command that reads a ledger through the
 * wrong policy (the shipped default instead of the deployment's) would otherwise print "no usage"
 * or "no such budget" while the ledger holds spend. The check: the budgets with live usage in the
 * store (counters whose window has not ended) must all be declared by the policy.
 */
import type { Policy } from '../policy/load.js';
import type { RedisQuotaStore } from '../quota/redis.js';

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

/** The budget ids with live usage counters in a Redis store under `prefix`. */
export async function budgetsInRedis(store: RedisQuotaStore, prefix: string): Promise<Set<string>> {
  const re = new RegExp(`^${escapeRe(prefix)}\\{([^|{}]+)\\|`);
  const found = await store.listUsage(`${prefix}{*|*}:u:*`);
  return new Set(found.flatMap(({ key }) => re.exec(key)?.[1] ?? []));
}

/**
 * Throws StoreMismatchError naming the budgets `inStore` holds that `policy` does not declare
 * (`where` says which store), unless `allow` (`--allow-other-budgets`).
 */
export function requireSamePolicy(policy: Policy, inStore: Iterable<string>, where: string, allow = false): void {
  const declared = new Set(policy.budgets.map((b) => b.config.id));
  const other = [...new Set(inStore)].filter((id) => !declared.has(id)).sort();
  if (other.length === 0 || allow) return;
  throw new StoreMismatchError(
    `${where} holds usage for ${other.length === 1 ? 'a budget' : 'budgets'} the policy ${policy.source} does not declare: ${other.join(', ')} ` +
      `(it declares ${[...declared].join(', ') || 'none'}). This is not the policy the store was written with: point the command at the ` +
      "deployment's policy (--policy, TOLLGATE_POLICY or `policy:` in tollgate.yaml), or at its store. If those budgets were removed from the policy, " +
      'their counters stay until their window ends; --allow-other-budgets reads the store anyway.',
  );
}
