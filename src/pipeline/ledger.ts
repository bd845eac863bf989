/**
 * The ledger a gateway charges: the shared quota store, this replica's local fallback for budgets
 * that fail open, and the settlements still being written after their answers. Steps and
 * `myBudget` reach the store only through `withStore`, so every read honours each budget's fail
 * mode the same way.
 */
import type { Logger } from 'pino';
import { budgetView, type BudgetView } from '../call/budget.js';
import { GatewayError } from '../errors.js';
import type { Principal } from '../identity/principal.js';
import { applicableLines, type BudgetLine } from '../policy/budgets.js';
import type { Policy } from '../policy/load.js';
import { MemoryQuotaStore } from '../quota/memory.js';
import type { QuotaStore } from '../quota/store.js';

export interface LedgerOptions {
  store: QuotaStore;
  /** Namespace of every ledger key, e.g. `tollgate:`. */
  keyPrefix: string;
  now: () => number;
  logger: Logger;
}

/** What a store operation returned, and whether it ran on the local ledger because the store was unreachable. */
export interface StoreAccess<T> {
  value: T;
  failOpen: boolean;
}

export class Ledger {
  readonly store: QuotaStore;
  /** This replica's own ledger: budgets that fail open are enforced here while the store is unreachable. */
  readonly fallbackStore: QuotaStore;
  readonly keyPrefix: string;
  private readonly now: () => number;
  private readonly logger: Logger;
  /** Ledger writes and decision events of calls already answered (limits.settleBeforeReply: false). */
  private readonly finishing = new Set<Promise<void>>();

  constructor(opts: LedgerOptions) {
    this.store = opts.store;
    this.keyPrefix = opts.keyPrefix;
    this.now = opts.now;
    this.logger = opts.logger;
    this.fallbackStore = new MemoryQuotaStore(this.now);
  }

  /** The budget lines that apply to `principal` under `policy` now. */
  linesFor(policy: Policy, principal: Principal): BudgetLine[] {
    return applicableLines(policy.budgets, principal, this.now(), this.keyPrefix);
  }

  /**
   * Runs a store operation, honouring each budget's fail mode when the shared store is unreachable:
   * if every line fails open, it runs on this replica's local ledger (a per-replica ceiling at the
   * same limit); otherwise it throws QUOTA_STORE_UNAVAILABLE naming the budget that fails closed.
   * A call with no budget line never touches the shared store.
   */
  async withStore<T>(lines: readonly BudgetLine[], op: (store: QuotaStore) => Promise<T>): Promise<StoreAccess<T>> {
    if (lines.length === 0) return { value: await op(this.fallbackStore), failOpen: false };
    try {
      return { value: await op(this.store), failOpen: false };
    } catch (err) {
      const unavailable = err instanceof GatewayError && err.code === 'QUOTA_STORE_UNAVAILABLE';
      if (!unavailable) throw err;
      const closed = lines.find((l) => l.budget.config.failMode === 'closed');
      if (closed) {
        throw new GatewayError('QUOTA_STORE_UNAVAILABLE', `The quota store is unreachable and budget ${closed.budget.config.id} fails closed; try again shortly.`, {
          budgetId: closed.budget.config.id,
        });
      }
      return { value: await op(this.fallbackStore), failOpen: true };
    }
  }

  /** The budgets that apply to `principal`, with used, reserved and remaining amounts, read through the fail-mode path. */
  async budgetsOf(policy: Policy, principal: Principal): Promise<BudgetView[]> {
    const lines = this.linesFor(policy, principal);
    if (lines.length === 0) return [];
    const { value: states } = await this.withStore(lines, (s) => s.read(lines.map((l) => l.line)));
    return lines.map((l, i) =>
      budgetView({ id: l.budget.config.id, scope: l.budget.config.scope, subject: l.subject, unit: l.budget.unit, limit: l.budget.limit, ...states[i]!, resetsAt: l.resetsAt }),
    );
  }

  /** Takes work that finishes a call after its answer; `idle` and `close` wait for it. */
  track(work: Promise<void>): void {
    const done = work.catch((err: unknown) => this.logger.error({ err, event: 'call_finish_failed' }, 'a call could not be finished after its answer'));
    this.finishing.add(done);
    void done.finally(() => this.finishing.delete(done));
  }

  /** Resolves once every call answered so far has its charge written (or queued) and its event emitted. */
  async idle(): Promise<void> {
    while (this.finishing.size > 0) await Promise.all(this.finishing);
  }

  /** Calls whose ledger write or decision event is still on its way. */
  get finishingCalls(): number {
    return this.finishing.size;
  }

  async close(): Promise<void> {
    await this.idle();
    await this.store.close();
    await this.fallbackStore.close();
  }
}
