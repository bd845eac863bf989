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
import { applicableLimits, ledgerLine, limitCharge, type ApplicableLimits } from '../policy/limits.js';
import type { Policy } from '../policy/load.js';
import { MemoryQuotaStore } from '../quota/memory.js';
import { lineAt, type DecisionRecord, type QuotaStore } from '../quota/store.js';
import type { CallContext } from './context.js';

/** How often, in real time, the ledger looks for reservations of calls in flight to renew. */
export const RENEW_CHECK_MS = 1000;

/** A line's fail mode, as budgets and rate limits both declare it. */
export interface FailGuard {
  config: { id: string; failMode: 'closed' | 'open' };
}

/** The fail guards of a call's lines: its budgets and the limits it is subject to. */
export function guardsOf(ctx: Pick<CallContext, 'lines' | 'limits'>): FailGuard[] {
  const { fixed, perCandidate } = ctx.limits;
  if (fixed.length === 0 && perCandidate.length === 0) return ctx.lines.map((l) => l.budget);
  return [...ctx.lines.map((l) => l.budget), ...fixed.map((l) => l.limit), ...perCandidate];
}

/** What a finished call's settlement charges: each budget line, then each rate limit line of its reservation. */
export interface Settlement {
  budgets: number[];
  limits: number[];
}

const NO_LIMITS: number[] = [];

/**
 * What the call is settled at, or undefined when it is released. Limit lines are charged with the
 * budgets: a request once dispatched, the tokens used; a cap nothing (settling gives its slot
 * back). A dispatched call that used nothing is still one request: it is settled at 0 on its
 * budgets rather than released. The ledger writes these amounts and the decision event states
 * them (`tollgate.charged`, `tollgate.limits_charged`), so the two cannot differ.
 */
export function settlementOf(ctx: Pick<CallContext, 'reservation' | 'attempts' | 'usage' | 'charged' | 'lines'>): Settlement | undefined {
  const reserved = ctx.reservation?.limits;
  const dispatched = ctx.attempts.length > 0;
  const limits = reserved?.length ? reserved.map((l) => limitCharge(l.line.limit, ctx.usage, dispatched)) : NO_LIMITS;
  const budgets = ctx.charged ?? (limits.some((a) => a > 0) ? ctx.lines.map(() => 0) : undefined);
  return budgets && { budgets, limits };
}

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
  /** The ledger's clock. */
  readonly now: () => number;
  private readonly logger: Logger;
  /** Ledger writes and decision events of calls already answered (limits.settleBeforeReply: false). */
  private readonly finishing = new Set<Promise<void>>();
  /** Calls in the pipeline, from its start until committed or handed to `track`: each with its request id and what cuts it short. */
  private readonly running = new Map<Promise<void>, { requestId: string; cut: (reason: GatewayError) => void }>();
  /** Reservations of calls in flight, by request id: renewed while their calls run (`hold`). */
  private readonly inFlight = new Map<string, { store: QuotaStore; ttlMs: number; renewedAt: number; failed?: boolean }>();
  private renewTimer: NodeJS.Timeout | undefined;

  constructor(opts: LedgerOptions) {
    this.store = opts.store;
    this.keyPrefix = opts.keyPrefix;
    this.now = opts.now;
    this.logger = opts.logger;
    // Lines are resolved at limitNow: the local ledger counts their windows by the same time.
    this.fallbackStore = new MemoryQuotaStore(() => this.limitNow());
  }

  /**
   * The clock ledger lines (rate limits, budgets) are resolved by: the shared store's as far as it
   * measured it (`now` plus QuotaStore.clockOffsetMs), since a store with a clock of its own admits
   * a line only within its bucket by that clock (LedgerLine.bucket, ClockSkewError).
   */
  limitNow(): number {
    return this.now() + (this.store.clockOffsetMs?.() ?? 0);
  }

  /**
   * A reservation sent at `sentAt` (by `now`) was refused by the store, whose time was `storeTime`:
   * the store measures its clock's offset again (QuotaStore.learnTime). Returns the new offset when
   * it moved by 10 ms or more, else undefined.
   */
  learnStoreTime(storeTime: number, sentAt: number): number | undefined {
    return this.store.learnTime?.(storeTime, sentAt, this.now());
  }

  /** The budget lines that apply to `principal` under `policy` now (a rolling window's bucket by the store's clock, as a limit's). */
  linesFor(policy: Policy, principal: Principal): BudgetLine[] {
    return applicableLines(policy.budgets, principal, this.limitNow(), this.keyPrefix, policy.config.applications.charge);
  }

  /** The rate limits and caps that apply to `principal` under `policy` now. */
  limitsFor(policy: Policy, principal: Principal): ApplicableLimits {
    return applicableLimits(policy.rateLimits, principal, this.limitNow(), this.keyPrefix);
  }

  /**
   * Runs a store operation, honouring each budget's fail mode when the shared store is unreachable:
   * if every line fails open, it runs on this replica's local ledger (a per-replica ceiling at the
   * same limit); otherwise it throws QUOTA_STORE_UNAVAILABLE naming the budget that fails closed.
   * A call with no budget line and no limit never touches the shared store.
   */
  async withStore<T>(lines: readonly FailGuard[], op: (store: QuotaStore) => Promise<T>): Promise<StoreAccess<T>> {
    if (lines.length === 0) return { value: await op(this.fallbackStore), failOpen: false };
    try {
      return { value: await op(this.store), failOpen: false };
    } catch (err) {
      const unavailable = err instanceof GatewayError && err.code === 'QUOTA_STORE_UNAVAILABLE';
      if (!unavailable) throw err;
      const closed = lines.find((l) => l.config.failMode === 'closed');
      if (closed) {
        throw new GatewayError('QUOTA_STORE_UNAVAILABLE', `The quota store is unreachable and budget ${closed.config.id} fails closed; try again shortly.`, {
          budgetId: closed.config.id,
        });
      }
      return { value: await op(this.fallbackStore), failOpen: true };
    }
  }

  /** The budgets that apply to `principal`, with used, reserved and remaining amounts, read through the fail-mode path. */
  async budgetsOf(policy: Policy, principal: Principal): Promise<BudgetView[]> {
    const lines = this.linesFor(policy, principal);
    if (lines.length === 0) return [];
    const { value: states } = await this.withStore(lines.map((l) => l.budget), (s) => s.read(lines.map((l) => l.line)));
    return lines.map((l, i) =>
      budgetView({ id: l.budget.config.id, scope: l.budget.config.scope, subject: l.subject, unit: l.budget.unit, limit: l.budget.limit, ...states[i]!, resetsAt: l.resetsAt }),
    );
  }

  /**
   * Commits a finished call to the journal: the charge with its decision event in one write (a
   * settlement at `settled`, settlementOf's amounts, which the event states), or the release with
   * its event, or the event alone when nothing was reserved. A call served fail-open on the local
   * ledger is charged there and to the shared store, which keeps the settlement (event included)
   * for replay until it is back. Never rejects: a write the store cannot make now is kept by the
   * store for replay, and logged.
   */
  async commit(ctx: CallContext, event: DecisionRecord, settled: Settlement | undefined): Promise<void> {
    try {
      const holder = ctx.reservation?.store;
      const limits = ctx.reservation?.limits ?? [];
      if (!holder || (ctx.lines.length === 0 && limits.length === 0)) {
        await this.store.record(event);
        return;
      }
      const local = holder === this.fallbackStore && this.store !== this.fallbackStore;
      if (settled) {
        const lines = [...ctx.lines.map((l, i) => lineAt(l.line, settled.budgets[i]!)), ...limits.map((l, i) => ledgerLine(l.line, settled.limits[i]!))];
        if (local) await holder.settle(ctx.id, lines);
        await this.store.settle(ctx.id, lines, event);
      } else if (local) {
        await holder.release(ctx.id);
        await this.store.record(event);
      } else await holder.release(ctx.id, event);
    } catch (err) {
      ctx.log.error({ err, event: 'settle_failed' }, 'the call could not be committed to the journal now');
    }
  }

  /** Marks the call's reservation dispatched, before its first byte goes to a provider. */
  async dispatched(ctx: CallContext): Promise<void> {
    const holder = ctx.reservation?.store;
    if (holder && (ctx.lines.length > 0 || (ctx.reservation?.limits?.length ?? 0) > 0)) await holder.dispatch(ctx.id);
  }

  /**
   * Keeps the reservation `requestId` holds in `store` alive while its call runs: once a third of
   * its TTL has passed since it was made or last renewed, it is renewed for the whole TTL again. A
   * reservation expires so that a replica that died cannot pin a budget or a cap's slot; a live
   * call that runs longer than the TTL (a long stream, a slow provider) must not lose its slot, or
   * a cap would admit one call more for every call that outlived it. `release` ends it.
   */
  hold(requestId: string, store: QuotaStore, ttlMs: number): void {
    if (!store.extend) return;
    this.inFlight.set(requestId, { store, ttlMs, renewedAt: this.now() });
    if (!this.renewTimer) {
      this.renewTimer = setInterval(() => this.renew(), RENEW_CHECK_MS);
      this.renewTimer.unref();
    }
  }

  /**
   * Stops renewing the reservation of a call that has ended (its settlement or release follows).
   * The check keeps running (unref'd) until the ledger closes: one timer a process, not one a call.
   */
  unhold(requestId: string): void {
    this.inFlight.delete(requestId);
  }

  /**
   * Renews the reservations due; the work is tracked, so `idle` waits for it. A failed renewal is
   * tried again at the next check, and logged once per call (a store outage fails them all).
   */
  private renew(): void {
    const now = this.now();
    for (const [id, held] of this.inFlight) {
      if (now - held.renewedAt < held.ttlMs / 3) continue;
      const before = held.renewedAt;
      held.renewedAt = now;
      this.track(
        held.store.extend!(id, held.ttlMs).then(
          (renewed) => {
            held.failed = false;
            if (renewed && renewed.reasserted > 0) {
              this.logger.warn(
                { event: 'reservation_reasserted', requestId: id, lines: renewed.reasserted },
                "a call in flight had its cap slot closed by expiry while the store was unreachable; its slot is held again",
              );
            }
          },
          (err: unknown) => {
            held.renewedAt = before;
            if (held.failed) return;
            held.failed = true;
            this.logger.warn({ err, event: 'reservation_renew_failed', requestId: id }, 'the reservation of a call in flight could not be renewed; tried again every second');
          },
        ),
      );
    }
  }

  /** Takes work that finishes a call after its answer; `idle` and `close` wait for it. */
  track(work: Promise<void>): void {
    const done = work.catch((err: unknown) => this.logger.error({ err, event: 'call_finish_failed' }, 'a call could not be finished after its answer'));
    this.finishing.add(done);
    void done.finally(() => this.finishing.delete(done));
  }

  /**
   * Counts a call from the start of its pipeline (`run`) until it settles, by which time its commit
   * is written or handed to `track`: `settled` waits for it, `cutCalls` aborts it with `cut`.
   */
  enter(requestId: string, run: Promise<void>, cut: (reason: GatewayError) => void): void {
    const done = run.catch(() => undefined);
    this.running.set(done, { requestId, cut });
    void done.finally(() => this.running.delete(done));
  }

  /**
   * Aborts every call in the pipeline (a shutdown past its deadline): each ends CANCELLED, charged
   * what it consumed and released of the rest, with its decision event. Returns how many.
   */
  cutCalls(): number {
    for (const { cut } of this.running.values()) cut(new GatewayError('CANCELLED', 'The gateway shut down before the call finished.'));
    return this.running.size;
  }

  /** Resolves once every call answered so far has its charge written (or queued) and its event emitted. */
  async idle(): Promise<void> {
    while (this.finishing.size > 0) await Promise.all(this.finishing);
  }

  /** Resolves once every call started so far is committed: those in the pipeline, and those answered (`idle`). */
  async settled(): Promise<void> {
    while (this.running.size > 0 || this.finishing.size > 0) await Promise.all([...this.running.keys(), ...this.finishing]);
  }

  /** Calls whose ledger write or decision event is still on its way. */
  get finishingCalls(): number {
    return this.finishing.size;
  }

  /** Calls in the pipeline: started, not yet committed. */
  get runningCalls(): number {
    return this.running.size;
  }

  /** The request ids of the calls in the pipeline. */
  runningIds(): string[] {
    return [...this.running.values()].map((r) => r.requestId);
  }

  /** Closes the store, once the calls in the pipeline are cut (a shutdown waited for them first) and committed. */
  async close(): Promise<void> {
    this.cutCalls();
    await this.settled();
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    await this.store.close();
    await this.fallbackStore.close();
  }
}
