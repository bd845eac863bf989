import { chargeLines } from '../../policy/budgets.js';
import { costMicroUsd } from '../../providers/prices.js';
import { admittedDecision, exhaustedDecision, exhaustedError, planCandidates, reportedShortfall, reservedLines, type Shortfall } from '../../policy/plan.js';
import type { QuotaStore } from '../../quota/store.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { withStore } from './storeAccess.js';

/** Who and what a reservation is for, kept with it so that a recovery can say whom it charged. */
function reservationMeta(ctx: CallContext, tier: string, model: string): Record<string, unknown> {
  const p = ctx.principal;
  const units = Object.fromEntries(ctx.lines.map((l) => [l.budget.config.id, l.budget.unit === 'usd' ? 'micro_usd' : 'tokens']));
  return { transport: ctx.transport, user: p?.user, teams: p?.teams, costCenter: p?.costCenter, tier, model, policyVersion: ctx.policy.version, units };
}

/** The lines charged more than they reserved, with the excess. */
export function overrunOf(reserved: readonly number[], charged: readonly number[]): { lineIndex: number; amount: number }[] {
  const out: { lineIndex: number; amount: number }[] = [];
  charged.forEach((amount, i) => {
    const excess = amount - (reserved[i] ?? 0);
    if (excess > 0) out.push({ lineIndex: i, amount: excess });
  });
  return out;
}

/**
 * Tries the planner's candidates in order against the quota store, reserving the first one every
 * budget line can take, all lines at once. After the steps below it finish, charges what was
 * actually consumed and releases the rest, success or not.
 * Reads: decision, lines, budgets, estimatedInputTokens, inputTokens, request. Writes: reservation,
 * outputClamp, decision (a step down or a clamp), settling, charged, overrun (what was charged
 * beyond the reservation when the provider reported more than was reserved).
 */
export function reserveAndSettle(opts: { ledger: Ledger }): Middleware<CallContext> {
  const { ledger } = opts;
  return async function reserve(ctx, next) {
    const decided = ctx.decision;
    if (!decided || decided.effect === 'deny') throw new Error('reserve step ran without an allow decision');
    const { request } = admitted(ctx);
    const candidates = planCandidates({
      policy: ctx.policy,
      decision: decided,
      request,
      budgets: ctx.budgets,
      estimatedInputTokens: ctx.estimatedInputTokens,
      inputTokens: ctx.inputTokens,
    });
    if (ctx.lines.length === 0) {
      ctx.reservation = { model: candidates[0]!.models[0]!, tier: decided.tier, amounts: [] };
      await next();
      return;
    }

    const ttlMs = ctx.policy.config.limits.reservationTtlSeconds * 1000;
    const shortfalls: Shortfall[] = [];
    let holder: QuotaStore | undefined;
    for (const candidate of candidates) {
      // Only the lines that cover the candidate's tier are reserved (and checked).
      const outcome = await withStore(ctx, ledger, (s) => {
        holder = s;
        return s.reserve(ctx.id, reservedLines(ctx.lines, candidate), ttlMs, reservationMeta(ctx, candidate.tier, candidate.models[0]!.ref));
      });
      if (outcome.ok) {
        ctx.decision = admittedDecision(decided, candidate, shortfalls[0]);
        ctx.outputClamp = candidate.clamp;
        ctx.reservation = { model: candidate.models[0]!, tier: candidate.tier, amounts: candidate.amounts };
        break;
      }
      shortfalls.push(outcome);
    }
    if (!ctx.reservation || !holder) {
      const reported = reportedShortfall(decided, shortfalls, ctx.budgets);
      const refusal = exhaustedDecision(decided, reported, ctx.budgets);
      ctx.decision = refusal;
      throw exhaustedError(refusal, reported);
    }

    ctx.reservation.store = holder;
    try {
      await next();
    } finally {
      // What the call consumed, fixed before the answer leaves; the meter step commits the charge
      // and the decision event together (Ledger.commit).
      if (ctx.usage && (ctx.usage.inputTokens > 0 || ctx.usage.outputTokens > 0)) {
        ctx.charged = chargeLines(ctx.lines, ctx.usage, ctx.costMicroUsd ?? costMicroUsd((ctx.served?.model ?? ctx.reservation.model).price, ctx.usage), ctx.reservation.tier).map((l) => l.amount);
        const overrun = overrunOf(ctx.reservation.amounts, ctx.charged);
        if (overrun.length > 0) {
          // Charged in full all the same: the provider billed it. The event, the metrics and my_budget say so.
          ctx.overrun = overrun;
          ctx.log.warn({ event: 'budget_overrun', overrun: overrun.map((o) => ({ budget: ctx.lines[o.lineIndex]!.budget.config.id, subject: ctx.lines[o.lineIndex]!.subject, amount: o.amount })) }, 'the provider billed more than was reserved');
        }
      }
    }
  };
}
