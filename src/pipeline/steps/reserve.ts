import { chargeLines } from '../../policy/budgets.js';
import { costMicroUsd } from '../../providers/prices.js';
import { candidateLimits, laterLimitLine, ledgerLine, LIMIT_UNITS, limitAmount, limitCharge, retryAt, tooLargeForLimitError, type LimitLine } from '../../policy/limits.js';
import { assumptionBounds, thresholdBounds } from '../../policy/decide.js';
import type { Policy } from '../../policy/load.js';
import { admittedDecision, exhaustedDecision, exhaustedError, inputTokensFor, outputCap, planCandidates, reportedShortfall, reservedLines, shortfallIn, type Candidate, type ServedDecision, type Shortfall } from '../../policy/plan.js';
import type { Provider } from '../../providers/provider.js';
import { GatewayError } from '../../errors.js';
import { ClockSkewError, type QuotaStore } from '../../quota/store.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { budgetState, readAndDecide, readBudgets } from './decide.js';
import { figureInput } from './estimate.js';
import { withStore } from './storeAccess.js';

export interface ReserveStepOptions {
  ledger: Ledger;
  /** The provider as built for the call's policy snapshot: the input is figured again when the call is decided anew. */
  providerFor: (policy: Policy, name: string) => Provider | undefined;
}

/**
 * Who and what a reservation is for, kept with it so that a recovery can say whom it charged: the
 * budgets' units, and the rate limits held with it (`limits`, each with its unit), whose lines a
 * recovery's event lists apart (tollgate.limits_charged).
 */
function reservationMeta(ctx: CallContext, tier: string, model: string, held: readonly { line: LimitLine }[]): Record<string, unknown> {
  const p = ctx.principal;
  const units = Object.fromEntries(ctx.lines.map((l) => [l.budget.config.id, l.budget.unit === 'usd' ? 'micro_usd' : 'tokens']));
  const meta: Record<string, unknown> = { transport: ctx.transport, user: p?.user, teams: p?.teams, costCenter: p?.costCenter, tier, model, policyVersion: ctx.policy.version, units };
  if (held.length > 0) meta.limits = Object.fromEntries(held.map(({ line }) => [line.limit.config.id, LIMIT_UNITS[line.limit.kind]]));
  return meta;
}

/** The refusal of a call a rate limit or cap stopped: which limit, whose, and when to try again. */
export function rateLimitedError(line: LimitLine, retryAt: number, remaining: number, now: number): GatewayError {
  const { config, kind } = line.limit;
  // A cap suggests its own pause, counted from the answer: trying other candidates after the cap
  // refused does not shorten it. A window's retry time is a moment, whatever the time now.
  const retryAfterMs = kind === 'concurrent' ? config.retryAfterMs : Math.max(1, retryAt - now);
  const at = now + retryAfterMs;
  const what =
    kind === 'concurrent'
      ? `${line.limit.limit} calls in flight`
      : `${line.limit.limit} ${kind} per ${line.limit.spanMs === 1000 ? 'second' : 'minute'}`;
  return new GatewayError('RATE_LIMITED', `Rate limit ${config.id} (${config.scope} ${line.subject}) allows ${what}; try again in ${Math.ceil(retryAfterMs / 1000)} s.`, {
    limitId: config.id,
    scope: config.scope,
    subject: line.subject,
    kind,
    limit: line.limit.limit,
    remaining,
    windowMs: line.spanMs || undefined,
    retryAfterMs,
    retryAt: new Date(at).toISOString(),
  });
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
 * Rate limits and caps (`limits`) are reserved in the same store call as the budgets; a candidate
 * subject to a limit that already refused is skipped, and when no candidate fits and a limit
 * refused one, the call is RATE_LIMITED with the limit's retry time.
 * Reads: decision, lines, limits, budgets, estimatedInputTokens, inputTokens, request. Writes: reservation,
 * rateLimited, outputClamp, decision (a step down or a clamp), settling, charged, overrun (what was charged
 * beyond the reservation when the provider reported more than was reserved).
 */
export function reserveAndSettle(opts: ReserveStepOptions): Middleware<CallContext> {
  const { ledger } = opts;
  const now = ledger.now;
  return async function reserve(ctx, next) {
    if (!ctx.decision || ctx.decision.effect === 'deny') throw new Error('reserve step ran without an allow decision');
    let decided: ServedDecision = ctx.decision;
    const { principal, request } = admitted(ctx);
    let planInput = {
      policy: ctx.policy,
      decision: decided,
      request,
      budgets: ctx.budgets,
      estimatedInputTokens: ctx.estimatedInputTokens,
      inputTokens: ctx.inputTokens,
    };
    let candidates = planCandidates(planInput);
    const limited = ctx.limits.fixed.length > 0 || ctx.limits.perCandidate.length > 0;
    if (ctx.lines.length === 0 && !limited) {
      ctx.reservation = { model: candidates[0]!.models[0]!, tier: decided.tier, amounts: [] };
      await next();
      return;
    }

    const ttlMs = ctx.policy.config.limits.reservationTtlSeconds * 1000;
    const shortfalls: Shortfall[] = [];
    /** Limit lines that refused: a candidate subject to one of them is not tried. */
    const blocked = new Set<string>();
    /** A token limit that refused a candidate it could never admit (its worst case is more than the limit). */
    let tooLarge: { line: LimitLine; requested: number } | undefined;
    let holder: QuotaStore | undefined;
    const skewed = () => new GatewayError('QUOTA_STORE_UNAVAILABLE', "The quota store's clock and this gateway's disagree on a limit's current window; try again shortly.");
    /** How often the call's budget lines were resolved again at the store's clock. */
    let budgetLinesMoved = 0;
    /**
     * Reserves `candidate` on its lines and limits, all or none; `atMost` bounds the budget lines'
     * states (`ReserveOptions.atMost`). Undefined when a limit that already refused covers the
     * candidate; 'moved' when the call's budget lines are of another bucket by the store's clock
     * (a rolling window's): the call was decided on budgets of a window the store is not in, so it is
     * read and decided again (`decideAgain`) before anything is reserved.
     */
    const attempt = async (candidate: Candidate, atMost?: number[]) => {
      // A store with a clock of its own refuses lines whose bucket is not current by it: measured,
      // and the lines resolved again by it. Twice more at most (a bucket's edge between).
      for (let tries = 1; ; tries++) {
        const sentAt = now();
        try {
          return await attemptOnce(candidate, atMost);
        } catch (err) {
          if (!(err instanceof ClockSkewError)) throw err;
          const offsetMs = ledger.learnStoreTime(err.storeTime, sentAt);
          if (offsetMs !== undefined) ctx.log.warn({ event: 'store_clock_skew', offsetMs }, "this replica's clock differs from the quota store's; rate limits and rolling budgets follow the store's");
          if (tries === 3) throw skewed();
          if (ctx.lines.some((l) => l.line.bucket)) {
            const lines = ledger.linesFor(ctx.policy, principal);
            if (lines.length !== ctx.lines.length || lines.some((l, i) => l.line.usageKey !== ctx.lines[i]!.line.usageKey)) {
              if (++budgetLinesMoved === 3) throw skewed();
              ctx.lines = lines;
              return 'moved' as const;
            }
          }
        }
      }
    };
    /** Reads the call's budgets and decides on them again, then figures the input and plans anew (a deny throws). */
    const decideAgain = async () => {
      ctx.reservation = undefined;
      await readAndDecide(ctx, ledger, now);
      await figureInput(ctx, { providerFor: opts.providerFor });
      decided = ctx.decision as ServedDecision;
      planInput = { policy: ctx.policy, decision: decided, request, budgets: ctx.budgets, estimatedInputTokens: ctx.estimatedInputTokens, inputTokens: ctx.inputTokens };
      candidates = planCandidates(planInput);
    };
    const attemptOnce = async (candidate: Candidate, atMost?: number[]) => {
      // The limit lines of the moment of this attempt: a read, a decision again or a count of tokens
      // before it may have taken the time of a bucket, and a line of an earlier bucket misses the current one.
      const limits = limited ? candidateLimits(ctx.limits, candidate.tier, candidate.models[0]!.ref, ledger.limitNow(), ledger.keyPrefix) : [];
      if (blocked.size > 0 && limits.some((l) => blocked.has(l.line.reservedKey))) return undefined;
      // Only the lines that cover the candidate's tier are reserved (and checked), limits with them.
      const lines = reservedLines(ctx.lines, candidate);
      const budgetCount = lines.length;
      const held: { line: LimitLine; amount: number }[] = [];
      // The worst case in tokens is worked out only for a token limit: requests and caps take 1.
      let worstTokens = -1;
      for (const line of limits) {
        if (worstTokens < 0 && line.limit.kind === 'tokens') worstTokens = Math.max(...candidate.models.map((m) => inputTokensFor(planInput, m) + outputCap(request.maxTokens, m, candidate.clamp)));
        const amount = limitAmount(line.limit, worstTokens);
        held.push({ line, amount });
        lines.push(ledgerLine(line, amount));
      }
      const outcome = await withStore(ctx, ledger, (s) => {
        holder = s;
        // The dispatch step follows at once (nothing but local code between them): a store may write
        // the dispatch mark with the reservation instead of in a round trip of its own.
        const opts = atMost ? { dispatching: true, atMost: candidate.lines.map((i) => atMost[i]!) } : { dispatching: true };
        return s.reserve(ctx.id, lines, ttlMs, reservationMeta(ctx, candidate.tier, candidate.models[0]!.ref, held), opts);
      });
      if (outcome.ok) {
        // A line the store charged in a bucket after its own (it reached the store late) settles there.
        outcome.late?.forEach((late, i) => {
          if (late > 0 && i >= budgetCount) held[i - budgetCount]!.line = laterLimitLine(held[i - budgetCount]!.line, late, ledger.keyPrefix);
        });
        ctx.decision = admittedDecision(decided, candidate, shortfalls[0]);
        ctx.outputClamp = candidate.clamp;
        ctx.reservation = { model: candidate.models[0]!, tier: candidate.tier, amounts: candidate.amounts, ...(held.length > 0 ? { limits: held } : {}) };
      }
      return { outcome, limits };
    };

    if (ctx.budgetsAssumed) {
      // Decided on budgets assumed untouched (the decide step): the first candidate, the decided
      // tier whole, is what a decision on read budgets would reserve first, so it is reserved with
      // the bounds under which the two decisions are the same, and the states the store found
      // become the call's budgets. A refusal, for any reason, proves nothing: read, decide again on
      // what was read (a refusal throws there), figure the input for that decision, and plan.
      ctx.budgetsAssumed = false;
      const first = candidates[0]!;
      const bounds = assumptionBounds(ctx.policy, decided, ctx.budgets);
      // Not worth a round trip when the assumed budgets cannot take it or a bound is below nothing held.
      const fits = !shortfallIn(ctx.budgets, first) && bounds.every((b) => b >= 0);
      let made: Awaited<ReturnType<typeof attempt>>;
      try {
        made = fits ? await attempt(first, bounds) : undefined;
      } catch (err) {
        // As if the read had failed: nothing was decided.
        ctx.decision = undefined;
        throw err;
      }
      if (typeof made === 'object' && made.outcome.ok) {
        const { states } = made.outcome;
        ctx.budgets = states ? ctx.lines.map((l, i) => budgetState(l, states[i]!.used, states[i]!.reserved)) : await readBudgets(ctx, ledger);
      } else await decideAgain();
    }
    if (!ctx.reservation) {
      /** How often the decided tier's threshold moved between a read and the reservation. */
      let thresholdMoved = 0;
      for (let i = 0; i < candidates.length; i++) {
        // The decided tier is reserved only if every threshold that let it stand still does: calls
        // decided on one read at once must not all find the budget above it (`thresholdBounds`).
        const bounds = i === 0 ? thresholdBounds(ctx.policy, decided, ctx.budgets) : undefined;
        const bounded = bounds?.some((b) => b !== Infinity) ? bounds : undefined;
        const made = await attempt(candidates[i]!, bounded);
        if (!made) continue;
        if (made === 'moved') {
          // Planned on budgets of a window the store is not in: from the first candidate of a new plan.
          shortfalls.length = 0;
          await decideAgain();
          i = -1;
          continue;
        }
        const { outcome, limits } = made;
        if (outcome.ok) break;
        if (bounded && outcome.used + outcome.reserved + outcome.requested <= outcome.limit && ++thresholdMoved < 3) {
          // Refused by a threshold, not the limit: other calls took the budget under it since the
          // read. Decided again on what the budget holds now, the call steps down and says why.
          shortfalls.length = 0;
          await decideAgain();
          i = -1;
          continue;
        }
        const limit = limits.find((l) => l.line.budgetId === outcome.budgetId && l.subject === outcome.subject);
        if (limit) {
          blocked.add(limit.line.reservedKey);
          if (outcome.requested > outcome.limit) {
            tooLarge ??= { line: limit, requested: outcome.requested };
            continue;
          }
          // A refusal in a bucket after the line's own gives that bucket's window.
          const retry = retryAt(outcome.late ? laterLimitLine(limit, outcome.late, ledger.keyPrefix) : limit, outcome, ledger.limitNow());
          const remaining = Math.max(0, outcome.limit - outcome.used - outcome.reserved);
          if (!ctx.rateLimited || retry < ctx.rateLimited.retryAt) ctx.rateLimited = { line: limit, retryAt: retry, remaining };
        } else shortfalls.push(outcome);
      }
    }
    if (!ctx.reservation || !holder) {
      // A limit that refused wins over a budget: once its window moves on, the call may be served.
      if (ctx.rateLimited) {
        const err = rateLimitedError(ctx.rateLimited.line, ctx.rateLimited.retryAt, ctx.rateLimited.remaining, ledger.limitNow());
        ctx.decision = { effect: 'deny', code: 'RATE_LIMITED', requestedTier: decided.requestedTier, requestedModel: decided.requestedModel, reason: err.message };
        throw err;
      }
      // No wait admits the call: the caller is told to ask for less, not when to retry.
      if (tooLarge) throw tooLargeForLimitError(tooLarge.line, tooLarge.requested, request.maxTokens);
      const reported = reportedShortfall(decided, shortfalls, ctx.budgets);
      const refusal = exhaustedDecision(decided, reported, ctx.budgets);
      ctx.decision = refusal;
      throw exhaustedError(refusal, reported);
    }

    ctx.reservation.store = holder;
    // Renewed while the call runs, so a call longer than the TTL keeps its reservation (a cap's slot).
    ledger.hold(ctx.id, holder, ttlMs);
    try {
      await next();
    } finally {
      ledger.unhold(ctx.id);
      // What the call consumed, fixed before the answer leaves; the meter step commits the charge
      // and the decision event together (Ledger.commit).
      if (ctx.usage && (ctx.usage.inputTokens > 0 || ctx.usage.outputTokens > 0)) {
        ctx.charged = chargeLines(ctx.lines, ctx.usage, ctx.costMicroUsd ?? costMicroUsd((ctx.served?.model ?? ctx.reservation.model).price, ctx.usage), ctx.reservation.tier).map((l) => l.amount);
        const overrun = [
          ...overrunOf(ctx.reservation.amounts, ctx.charged).map(({ lineIndex, amount }) => {
            const l = ctx.lines[lineIndex]!;
            return { budget: l.budget.config.id, subject: l.subject, amount, unit: l.budget.unit === 'usd' ? ('micro_usd' as const) : ('tokens' as const) };
          }),
          // A token limit is charged what was used too (the meter step), past its worst case when the provider reports more.
          ...(ctx.reservation.limits ?? []).flatMap(({ line, amount }) => {
            const excess = limitCharge(line.limit, ctx.usage, true) - amount;
            return excess > 0 && line.limit.kind === 'tokens' ? [{ budget: line.limit.config.id, subject: line.subject, amount: excess, unit: 'tokens' as const }] : [];
          }),
        ];
        if (overrun.length > 0) {
          // Charged in full all the same: the provider billed it. The event, the metrics and my_budget say so.
          ctx.overrun = overrun;
          ctx.log.warn({ event: 'budget_overrun', overrun: overrun.map(({ budget, subject, amount }) => ({ budget, subject, amount })) }, 'the provider billed more than was reserved');
        }
      }
    }
  };
}
