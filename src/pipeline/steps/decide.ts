import { GatewayError } from '../../errors.js';
import type { BudgetLine } from '../../policy/budgets.js';
import { decidableUnread, decide, type BudgetState } from '../../policy/decide.js';
import { inputTokenBound } from '../../providers/estimate.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { withStore } from './storeAccess.js';

export interface DecideStepOptions {
  ledger: Ledger;
  now: () => number;
}

/**
 * Reads the state of every budget that applies, then asks the pure policy decision what to do.
 * A deny stops the call here: nothing has been reserved, nothing is charged (an estimate stops
 * too, with the deny as its answer rather than a refusal).
 *
 * A call (not a dry run) whose decision cannot turn on what its budgets hold but through the
 * thresholds the reservation can check (`decidableUnread`) is decided without the read: on budgets
 * assumed untouched, with `budgetsAssumed` set. The reserve step then reserves with bounds that
 * prove the assumption made no difference (`assumptionBounds`), in the one atomic store call, and
 * takes the states the store found; when the store refuses, it reads and decides here again
 * (`readAndDecide`). A refusal is always decided on what was read. One round trip to the store
 * less on a call that fits.
 * Reads: principal, request, policy. Writes: estimatedInputTokens, lines, limits, budgets, budgetsAssumed, decision.
 */
export function enforcePolicy(opts: DecideStepOptions): Middleware<CallContext> {
  const { ledger } = opts;
  const unreadable = !ledger.store.guarded || !ledger.fallbackStore.guarded;
  return async function enforce(ctx, next) {
    const { principal, request } = admitted(ctx);
    const { policy } = ctx;
    // The provable bound on the input (src/providers/estimate.ts); the estimate step may count exactly.
    ctx.estimatedInputTokens = inputTokenBound(request);
    ctx.lines = ledger.linesFor(policy, principal);
    ctx.limits = ledger.limitsFor(policy, principal);
    if (!unreadable && ctx.purpose === 'complete' && ctx.lines.length > 0 && decidableUnread(policy, ctx.lines)) {
      ctx.budgets = ctx.lines.map((l) => budgetState(l, 0, 0));
      const decision = decide({ policy, principal, request, estimatedInputTokens: ctx.estimatedInputTokens, budgets: ctx.budgets, now: opts.now() });
      if (decision.effect !== 'deny') {
        ctx.decision = decision;
        ctx.budgetsAssumed = true;
        await next();
        return;
      }
    }
    await readAndDecide(ctx, ledger, opts.now);
    // An estimate reports the refusal as its answer: nothing below runs, nothing is refused.
    if (ctx.decision!.effect === 'deny') return;
    await next();
  };
}

/**
 * A budget line with its state. Every state a call holds is made here, with its fields in one
 * order, so that what reads them (decide, the planner, the budget views) meets one hidden class
 * whether the state was read, assumed or reported by the reservation.
 */
export function budgetState(line: BudgetLine, used: number, reserved: number): BudgetState {
  return { budget: line.budget, subject: line.subject, used, reserved, resetsAt: line.resetsAt };
}

/** The state of each of the call's budget lines, read through the ledger's fail-mode path. */
export async function readBudgets(ctx: CallContext, ledger: Ledger): Promise<BudgetState[]> {
  const states = await withStore(ctx, ledger, (s) => s.read(ctx.lines.map((l) => l.line)));
  return ctx.lines.map((l, i) => budgetState(l, states[i]!.used, states[i]!.reserved));
}

/**
 * Reads the budgets' state and decides on it: sets `budgets` and `decision`, and throws the
 * refusal when the decision is a deny (an estimate keeps it as its answer instead).
 */
export async function readAndDecide(ctx: CallContext, ledger: Ledger, now: () => number): Promise<void> {
  const { principal, request } = admitted(ctx);
  const { policy } = ctx;
  ctx.budgetsAssumed = false;
  ctx.budgets = await readBudgets(ctx, ledger);
  const decision = decide({ policy, principal, request, estimatedInputTokens: ctx.estimatedInputTokens, budgets: ctx.budgets, now: now() });
  ctx.decision = decision;
  if (decision.effect === 'deny' && ctx.purpose !== 'estimate') {
    throw new GatewayError(decision.code, decision.reason, {
      ruleId: decision.ruleId,
      budgetId: decision.budgetId,
      resetsAt: decision.resetsAt === undefined ? undefined : new Date(decision.resetsAt).toISOString(),
    });
  }
}
