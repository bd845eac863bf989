import { GatewayError } from '../../errors.js';
import type { Policy } from '../../policy/load.js';
import { modelsToCount } from '../../policy/plan.js';
import type { ModelInfo } from '../../policy/load.js';
import { MAX_USAGE_TOKENS } from '../../providers/estimate.js';
import type { Provider } from '../../providers/provider.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';

export interface EstimateStepOptions {
  /** The provider as built for the call's policy snapshot. */
  providerFor: (policy: Policy, name: string) => Provider | undefined;
}

/**
 * Replaces the byte bound the decide step set by what each model can really bill, in two passes:
 * 1. every model of the decided tier whose provider figures inputs on every call
 *    (`Provider.estimateInput`, `countTokens: 'always'`): OpenAI models take a bound from their
 *    own vocabulary, locally; Anthropic and Bedrock count through their API. The fallback tiers
 *    matter only when the decided one does not fit, and are then counted in the second pass;
 * 2. when the first candidate still does not fit, the planner says which models a count could
 *    help (`modelsToCount`), and each model's provider counts it exactly (`Provider.countTokens`).
 * A model whose provider has no figure, or whose figure fails, keeps the bound: a figure never
 * refuses a call the bound would have admitted. The reserve step plans with the figures.
 * Reads: decision, budgets, lines, estimatedInputTokens, request. Writes: inputTokens, inputCounted.
 */
export function estimateInput(opts: EstimateStepOptions): Middleware<CallContext> {
  return async function estimate(ctx, next) {
    await figureInput(ctx, opts);
    await next();
  };
}

/**
 * The estimate step's work, also done again by the reserve step when it decided anew on the
 * budgets read (a decision on budgets assumed untouched did not hold): a model figured already
 * keeps its figure, and the count pass looks at the budgets now in `ctx`.
 */
export async function figureInput(ctx: CallContext, opts: EstimateStepOptions): Promise<void> {
  const decided = ctx.decision;
  if (decided && decided.effect !== 'deny' && ctx.lines.length > 0) {
    const { request } = admitted(ctx);
    // The plan's fields in the order the reserve step gives them: one shape for the planner.
    const plan = { policy: ctx.policy, decision: decided, request, budgets: ctx.budgets, estimatedInputTokens: ctx.estimatedInputTokens, inputTokens: undefined };
    const figures = new Map<string, number>(ctx.inputTokens);
    const counted = new Set<string>(ctx.inputCounted);
    // A model whose figure failed is not asked again in the second pass: its provider just failed to count.
    const failed = new Set<string>();
    const ask = (models: readonly ModelInfo[], pass: 'estimate' | 'count') =>
      Promise.all(
        models.map(async (model) => {
          const provider = opts.providerFor(ctx.policy, model.provider);
          const req = { model: model.modelId, system: request.system, messages: request.messages, maxTokens: request.maxTokens, signal: ctx.signal };
          try {
            if (pass === 'estimate') {
              const figure = await provider?.estimateInput?.(req);
              if (!figure) return;
              figures.set(model.ref, figure.tokens);
              if (figure.exact) counted.add(model.ref);
            } else {
              const n: unknown = await provider?.countTokens?.(req);
              if (n === undefined) return;
              // A count from the wire that is not a number of tokens would lower the reservation: the bound stands.
              if (typeof n !== 'number' || !(n >= 0) || n > MAX_USAGE_TOKENS) throw new Error(`the provider counted ${JSON.stringify(n)} tokens`);
              figures.set(model.ref, Math.ceil(n));
              counted.add(model.ref);
            }
          } catch (err) {
            if (err instanceof GatewayError && err.code === 'CANCELLED') throw err;
            failed.add(model.ref);
            ctx.log.warn({ err, model: model.ref, event: 'count_tokens_failed' }, 'the input could not be counted; the bound stands');
          }
        }),
      );
    await ask(figures.size > 0 ? decided.candidates.filter((m) => !figures.has(m.ref)) : decided.candidates, 'estimate');
    await ask(modelsToCount({ policy: plan.policy, decision: plan.decision, request, budgets: plan.budgets, estimatedInputTokens: plan.estimatedInputTokens, inputTokens: figures }, new Set([...counted, ...failed])), 'count');
    if (ctx.signal.aborted) throw new GatewayError('CANCELLED', 'The call was cancelled.');
    if (figures.size > 0) {
      ctx.inputTokens = figures;
      ctx.inputCounted = counted;
    }
  }
}
