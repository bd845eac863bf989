import { GatewayError } from '../../errors.js';
import { decide } from '../../policy/decide.js';
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
 * Reads: principal, request, policy. Writes: estimatedInputTokens, lines, limits, budgets, decision.
 */
export function enforcePolicy(opts: DecideStepOptions): Middleware<CallContext> {
  return async function enforce(ctx, next) {
    const { principal, request } = admitted(ctx);
    const { policy } = ctx;
    // The provable bound on the input (src/providers/estimate.ts); the estimate step may count exactly.
    ctx.estimatedInputTokens = inputTokenBound(request);
    ctx.lines = opts.ledger.linesFor(policy, principal);
    ctx.limits = opts.ledger.limitsFor(policy, principal);
    const states = await withStore(ctx, opts.ledger, (s) => s.read(ctx.lines.map((l) => l.line)));
    ctx.budgets = ctx.lines.map((l, i) => ({ budget: l.budget, subject: l.subject, resetsAt: l.resetsAt, ...states[i]! }));
    const decision = decide({ policy, principal, request, estimatedInputTokens: ctx.estimatedInputTokens, budgets: ctx.budgets, now: opts.now() });
    ctx.decision = decision;
    // An estimate reports the refusal as its answer: nothing below runs, nothing is refused.
    if (decision.effect === 'deny' && ctx.purpose === 'estimate') return;
    if (decision.effect === 'deny') {
      throw new GatewayError(decision.code, decision.reason, {
        ruleId: decision.ruleId,
        budgetId: decision.budgetId,
        resetsAt: decision.resetsAt === undefined ? undefined : new Date(decision.resetsAt).toISOString(),
      });
    }
    await next();
  };
}
