import { GatewayError } from '../../errors.js';
import type { QuotaStore } from '../../quota/store.js';
import type { CallContext } from '../context.js';
import { guardsOf, type Ledger } from '../ledger.js';

/**
 * Runs a store operation for a call through the ledger's fail-mode path, and notes on the call
 * whether it was refused because the store is unreachable or served on the local ledger.
 */
export async function withStore<T>(ctx: CallContext, ledger: Ledger, op: (store: QuotaStore) => Promise<T>): Promise<T> {
  try {
    const { value, failOpen } = await ledger.withStore(guardsOf(ctx), op);
    if (failOpen) {
      ctx.storeError = 'fail_open';
      ctx.log.warn({ event: 'quota_store_fail_open' }, 'quota store unreachable; enforcing open budgets on the local ledger');
    }
    return value;
  } catch (err) {
    if (err instanceof GatewayError && err.code === 'QUOTA_STORE_UNAVAILABLE') ctx.storeError = 'unavailable';
    throw err;
  }
}
