/**
 * Budget headers on MCP HTTP responses, so a client sees how much it has left without calling
 * `my_budget`. They describe the caller's most constrained budget (the smallest share of its limit
 * left). A tool call answered as one JSON body gets them after the call, from its own result (this
 * call counted; a refused call or list_models reads the store). A call answered as an SSE stream
 * (the client sent a progress token) must send its head first, so it gets them as read just before
 * the call: that call is not yet counted in them; its result's `budgets` are.
 *
 *   X-Tollgate-Budget-Id         the budget's id, e.g. `employee-weekly`
 *   X-Tollgate-Budget-Remaining  what is left in the current window, in the budget's unit
 *   X-Tollgate-Budget-Unit       `tokens` or `usd`
 *   X-Tollgate-Budget-Limit      the budget's limit in the same unit
 *   X-Tollgate-Budget-Reset      when the window resets (ISO 8601, UTC)
 *
 * A read is bounded: a slow or unreachable store leaves the headers out rather than delaying
 * the call (the call itself then meets the store's own fail mode). Concurrent tool calls of one
 * caller share one read, kept for up to a second and dropped as soon as one of that caller's
 * calls finishes, so a caller's next call sees what its previous one charged.
 */
import type { Response } from 'express';
import type { BudgetView } from '../call/budget.js';
import type { Gateway } from '../gateway/gateway.js';
import { ownerKey, type Principal } from '../identity/principal.js';
import { TtlCache } from '../ttlCache.js';

export const BUDGET_HEADERS = {
  id: 'X-Tollgate-Budget-Id',
  remaining: 'X-Tollgate-Budget-Remaining',
  unit: 'X-Tollgate-Budget-Unit',
  limit: 'X-Tollgate-Budget-Limit',
  reset: 'X-Tollgate-Budget-Reset',
} as const;

/** The budget with the smallest share of its limit left; ties go to the earliest reset. */
export function mostConstrained(budgets: readonly BudgetView[]): BudgetView | undefined {
  let best: BudgetView | undefined;
  for (const b of budgets) {
    const share = b.limit > 0 ? b.remaining / b.limit : 0;
    const bestShare = best ? (best.limit > 0 ? best.remaining / best.limit : 0) : Number.POSITIVE_INFINITY;
    if (!best || share < bestShare || (share === bestShare && b.resetsAt < best.resetsAt)) best = b;
  }
  return best;
}

/** Header values for a caller's budgets; empty when no budget applies. */
export function budgetHeaders(budgets: readonly BudgetView[]): Record<string, string> {
  const b = mostConstrained(budgets);
  if (!b) return {};
  return {
    [BUDGET_HEADERS.id]: b.id,
    [BUDGET_HEADERS.remaining]: String(b.remaining),
    [BUDGET_HEADERS.unit]: b.unit,
    [BUDGET_HEADERS.limit]: String(b.limit),
    [BUDGET_HEADERS.reset]: b.resetsAt,
  };
}

/** Sets the `X-Tollgate-Budget-*` headers unless the head is already out. */
export function setHeaders(res: Response, headers: Record<string, string>): void {
  if (res.headersSent) return;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}

/** Budget headers from a call's result: its budgets after it was charged. */
export function setBudgetHeaders(res: Response, budgets: readonly BudgetView[]): void {
  setHeaders(res, budgetHeaders(budgets));
}

/** Reads the caller's budgets within `timeoutMs` and returns the headers; none on timeout or store error. */
export async function readBudgetHeaders(gateway: Gateway, principal: Principal, timeoutMs = 250): Promise<Record<string, string>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<BudgetView[]>((resolve) => {
    timer = setTimeout(() => resolve([]), timeoutMs);
  });
  try {
    return budgetHeaders(await Promise.race([gateway.myBudget(principal).catch(() => []), timeout]));
  } finally {
    clearTimeout(timer);
  }
}

/** Shares budget-header reads between concurrent calls of the same caller (see the file comment). */
export class BudgetHeaderReader {
  private readonly cache: TtlCache<Promise<Record<string, string>>>;

  constructor(
    private readonly gateway: Gateway,
    private readonly opts: { ttlMs: number; timeoutMs: number; maxEntries: number } = { ttlMs: 1000, timeoutMs: 250, maxEntries: 10_000 },
  ) {
    this.cache = new TtlCache({ max: opts.maxEntries, ttlMs: opts.ttlMs });
  }

  read(principal: Principal): Promise<Record<string, string>> {
    const key = ownerKey(principal);
    const hit = this.cache.get(key);
    if (hit) return hit;
    const value = readBudgetHeaders(this.gateway, principal, this.opts.timeoutMs);
    this.cache.set(key, value);
    return value;
  }

  /** Drops the caller's cached read, once a call of theirs has finished and been charged. */
  forget(principal: Principal): void {
    this.cache.delete(ownerKey(principal));
  }
}
