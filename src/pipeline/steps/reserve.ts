import type { Usage } from '../../providers/provider.js';
import { chargeLines } from '../../policy/budgets.js';
import { admittedDecision, exhaustedDecision, exhaustedError, planCandidates, type Shortfall } from '../../policy/plan.js';
import type { QuotaStore } from '../../quota/store.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { withStore } from './storeAccess.js';

/**
 * Tries the planner's candidates in order against the quota store, reserving the first one every
 * budget line can take, all lines at once. After the steps below it finish, charges what was
 * actually consumed and releases the rest, success or not.
 * Reads: decision, lines, budgets, estimatedInputTokens, request. Writes: reservation,
 * outputClamp, decision (a step down or a clamp), settling, charged.
 */
export function reserveAndSettle(opts: { ledger: Ledger }): Middleware<CallContext> {
  const { ledger } = opts;
  return async function reserve(ctx, next) {
    const decided = ctx.decision;
    if (!decided || decided.effect === 'deny') throw new Error('reserve step ran without an allow decision');
    const { request } = admitted(ctx);
    const candidates = planCandidates({ policy: ctx.policy, decision: decided, request, budgets: ctx.budgets, estimatedInputTokens: ctx.estimatedInputTokens });
    if (ctx.lines.length === 0) {
      ctx.reservation = { model: candidates[0]!.models[0]!, tier: decided.tier, amounts: [] };
      await next();
      return;
    }

    const ttlMs = ctx.policy.config.limits.reservationTtlSeconds * 1000;
    let first: Shortfall | undefined;
    let holder: QuotaStore | undefined;
    for (const candidate of candidates) {
      const outcome = await withStore(ctx, ledger, (s) => {
        holder = s;
        return s.reserve(ctx.id, ctx.lines.map((l, i) => ({ ...l.line, amount: candidate.amounts[i]! })), ttlMs);
      });
      if (outcome.ok) {
        ctx.decision = admittedDecision(decided, candidate, first);
        ctx.outputClamp = candidate.clamp;
        ctx.reservation = { model: candidate.models[0]!, tier: candidate.tier, amounts: candidate.amounts };
        break;
      }
      first ??= outcome;
    }
    if (!ctx.reservation || !holder) {
      const refusal = exhaustedDecision(decided, first!, ctx.budgets);
      ctx.decision = refusal;
      throw exhaustedError(refusal, first!);
    }

    const store = holder;
    try {
      await next();
    } finally {
      // settle() fixes ctx.charged before its first await, so the answer is complete either way.
      const writing = settle(ctx, store, ledger);
      if (ctx.policy.config.limits.settleBeforeReply) await writing;
      else ctx.settling = writing;
    }
  };
}

/** Charges what the call consumed (or releases its reservation). Never rejects. */
async function settle(ctx: CallContext, store: QuotaStore, ledger: Ledger): Promise<void> {
  await settleOn(ctx, store);
  // A call served fail-open on the local ledger is also charged to the shared one, which keeps
  // it for replay until the store is back, so the outage's usage is not lost from the books.
  if (store === ledger.fallbackStore && ledger.store !== ledger.fallbackStore && ctx.charged) {
    const lines = chargeLines(ctx.lines, ctx.served?.model ?? ctx.reservation!.model, ctx.usage as Usage);
    await ledger.store.settle(ctx.id, lines).catch((err: unknown) => ctx.log.error({ err, event: 'settle_failed' }, 'fail-open usage could not be queued'));
  }
}

async function settleOn(ctx: CallContext, store: QuotaStore): Promise<void> {
  try {
    if (ctx.usage && (ctx.usage.inputTokens > 0 || ctx.usage.outputTokens > 0)) {
      const model = ctx.served?.model ?? ctx.reservation!.model;
      const lines = chargeLines(ctx.lines, model, ctx.usage);
      ctx.charged = lines.map((l) => l.amount);
      await store.settle(ctx.id, lines);
    } else {
      await store.release(ctx.id);
    }
  } catch (err) {
    // The store queues what it could not write and replays it; the caller's result stands.
    ctx.storeError ??= 'settle_failed';
    ctx.log.error({ err, event: 'settle_failed' }, 'settlement could not be written now');
  }
}
