import { GatewayError } from '../../errors.js';
import type { QuotaStore } from '../../quota/store.js';
import type { CallContext } from '../context.js';

/**
 * Runs a store operation, honouring each budget's fail mode when the shared store is unreachable:
 * if every budget of the call fails open, the call is enforced against this replica's own
 * in-memory ledger (a per-replica ceiling at the same limit); otherwise it is refused.
 */
export async function withStore<T>(
  ctx: CallContext,
  opts: { store: QuotaStore; fallbackStore: QuotaStore },
  op: (store: QuotaStore) => Promise<T>,
): Promise<T> {
  if (ctx.lines.length === 0) return op(opts.fallbackStore);
  try {
    return await op(opts.store);
  } catch (err) {
    const unavailable = err instanceof GatewayError && err.code === 'QUOTA_STORE_UNAVAILABLE';
    if (!unavailable) throw err;
    const closed = ctx.lines.find((l) => l.budget.config.failMode === 'closed');
    if (closed) {
      ctx.storeError = 'unavailable';
      throw new GatewayError('QUOTA_STORE_UNAVAILABLE', `The quota store is unreachable and budget ${closed.budget.config.id} fails closed; try again shortly.`, {
        budgetId: closed.budget.config.id,
      });
    }
    ctx.storeError = 'fail_open';
    ctx.log.warn({ event: 'quota_store_fail_open' }, 'quota store unreachable; enforcing open budgets on the local ledger');
    return op(opts.fallbackStore);
  }
}
