/**
 * Operator views of the shared ledger: usage per budget and subject in the current window, the top
 * consumers, and manual adjustments (a credit or a correction). They read the same keys the
 * pipeline writes, so what they show is what enforcement sees.
 */
import { GatewayError } from '../errors.js';
import { lineKeys } from '../policy/budgets.js';
import { MICRO_USD } from '../policy/schema.js';
import type { CompiledBudget, Policy } from '../policy/load.js';
import type { RedisQuotaStore } from '../quota/redis.js';
import { resolveWindow } from '../quota/windows.js';

export interface UsageRow {
  budgetId: string;
  scope: string;
  subject: string;
  unit: 'tokens' | 'usd';
  /** In the budget's unit: tokens, or USD. */
  used: number;
  reserved: number;
  limit: number;
  remaining: number;
  windowStart: string;
  resetsAt: string;
}

/** What the usage views read: a store that can list its usage counters (Redis, or the embedded store). */
export type UsageSource = Pick<RedisQuotaStore, 'listUsage' | 'read'>;

export interface UsageFilter {
  budgetId?: string;
  subject?: string;
}

function budgetsFor(policy: Policy, budgetId?: string): CompiledBudget[] {
  if (!budgetId) return [...policy.budgets];
  const b = policy.budgets.find((x) => x.config.id === budgetId);
  if (!b) throw new GatewayError('INVALID_REQUEST', `No budget "${budgetId}" in the policy; budgets are ${policy.budgets.map((x) => x.config.id).join(', ')}.`);
  return [b];
}

const display = (b: CompiledBudget, n: number) => (b.unit === 'usd' ? n / 1e6 : n);

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Usage of the current window for every subject that has any (or for one subject), per budget.
 * Rolling windows sum the buckets still in range.
 */
export async function usageRows(policy: Policy, store: UsageSource, prefix: string, now: number, filter: UsageFilter = {}): Promise<UsageRow[]> {
  const rows: UsageRow[] = [];
  for (const budget of budgetsFor(policy, filter.budgetId)) {
    const id = budget.config.id;
    const w = resolveWindow(budget.config.window, now);
    let subjects: string[];
    if (filter.subject !== undefined) {
      subjects = [filter.subject];
    } else {
      const found = await store.listUsage(`${prefix}{${id}|*}:u:*`);
      const re = new RegExp(`^${escapeRe(prefix)}\\{${escapeRe(id)}\\|(.*)\\}:u:(-?\\d+)$`);
      const inWindow = new Set(w.readStarts);
      subjects = [
        ...new Set(
          found.flatMap(({ key }) => {
            const m = re.exec(key);
            return m && inWindow.has(Number(m[2])) ? [decodeURIComponent(m[1]!)] : [];
          }),
        ),
      ];
    }
    const keys = subjects.map((s) => lineKeys(prefix, id, s, w.readStarts, w.start));
    const states = keys.length ? await store.read(keys) : [];
    subjects.forEach((subject, i) => {
      const { used, reserved } = states[i]!;
      rows.push({
        budgetId: id,
        scope: budget.config.scope,
        subject,
        unit: budget.unit,
        used: display(budget, used),
        reserved: display(budget, reserved),
        limit: display(budget, budget.limit),
        remaining: display(budget, Math.max(0, budget.limit - used - reserved)),
        windowStart: new Date(w.readStarts[0]!).toISOString(),
        resetsAt: new Date(w.resetsAt).toISOString(),
      });
    });
  }
  return rows;
}

/** The `limit` subjects that used the most of each budget's limit in the current window. */
export async function topConsumers(policy: Policy, store: UsageSource, prefix: string, now: number, budgetId: string | undefined, limit: number): Promise<UsageRow[]> {
  const rows = await usageRows(policy, store, prefix, now, { budgetId });
  return rows.sort((a, b) => b.used / b.limit - a.used / a.limit || a.subject.localeCompare(b.subject)).slice(0, limit);
}

/**
 * Adds `amount` (budget unit: tokens, or USD) to a subject's usage in the current window; a
 * negative amount is a credit and may take usage below zero, which raises what is left this window.
 */
export async function adjustUsage(
  policy: Policy,
  store: RedisQuotaStore,
  prefix: string,
  now: number,
  budgetId: string,
  subject: string,
  amount: number,
): Promise<UsageRow> {
  const [budget] = budgetsFor(policy, budgetId);
  const delta = budget!.unit === 'usd' ? Math.round(amount * 1e6) : amount;
  // A finer dollar amount would be rounded to a micro-dollar it does not say.
  if (!Number.isSafeInteger(delta) || delta === 0 || (budget!.unit === 'usd' && !MICRO_USD.test(String(Math.abs(amount))))) {
    throw new GatewayError('INVALID_REQUEST', `An adjustment must be a non-zero ${budget!.unit === 'usd' ? 'amount in USD, to the micro-dollar' : 'whole number of tokens'}, got ${amount}.`);
  }
  // An adjustment corrects usage within a window; one past the whole limit is a typo's extra digits
  // (a credit of 100,000,000 on a 100,000-token budget), and more room is the policy's limit to give.
  if (Math.abs(delta) > budget!.limit) {
    const limit = budget!.unit === 'usd' ? `${budget!.limit / 1e6} USD` : `${budget!.limit} tokens`;
    throw new GatewayError('INVALID_REQUEST', `An adjustment of ${amount} moves usage by more than budget ${budgetId}'s whole limit (${limit}); to give more room, raise the limit in the policy.`);
  }
  const w = resolveWindow(budget!.config.window, now);
  const keys = lineKeys(prefix, budgetId, subject, w.readStarts, w.start);
  await store.adjust(keys.usageKey, delta, w.expiresAt);
  const [row] = await usageRows(policy, store, prefix, now, { budgetId, subject });
  return row!;
}
