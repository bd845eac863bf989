import { GatewayError } from '../../errors.js';
import { decide } from '../../policy/decide.js';
import type { QuotaStore } from '../../quota/store.js';
import { applicableLines, estimateInputTokens } from '../budgets.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';
import { withStore } from './storeAccess.js';

export interface DecideStepOptions {
  store: QuotaStore;
  fallbackStore: QuotaStore;
  keyPrefix: string;
  now: () => number;
}

/**
 * Reads the state of every budget that applies, then asks the pure policy decision what to do.
 * A deny stops the call here: nothing has been reserved, nothing is charged.
 */
export function enforcePolicy(opts: DecideStepOptions): Middleware<CallContext> {
  return async function enforce(ctx, next) {
    const { request, policy } = ctx;
    const texts = request.messages.map((m) => m.content);
    ctx.estimatedInputTokens = estimateInputTokens(request.system === undefined ? texts : [request.system, ...texts]);
    ctx.lines = applicableLines(policy.budgets, ctx.principal!, opts.now(), opts.keyPrefix);
    const states = await withStore(ctx, opts, (s) => s.read(ctx.lines.map((l) => l.line)));
    ctx.budgets = ctx.lines.map((l, i) => ({ budget: l.budget, subject: l.subject, resetsAt: l.resetsAt, ...states[i]! }));
    const decision = decide({
      policy,
      principal: ctx.principal!,
      request,
      estimatedInputTokens: ctx.estimatedInputTokens,
      budgets: ctx.budgets,
      now: opts.now(),
    });
    ctx.decision = decision;
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
