import { GatewayError } from '../../errors.js';
import type { Policy } from '../../policy/load.js';
import { modelsToCount } from '../../policy/plan.js';
import type { Provider } from '../../providers/provider.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';

export interface EstimateStepOptions {
  /** The provider as built for the call's policy snapshot. */
  providerFor: (policy: Policy, name: string) => Provider | undefined;
}

/**
 * Counts the call's input exactly when the bound the decide step set does not fit: the planner
 * says which models a count could help (`modelsToCount`), and each model's provider counts it
 * (OpenAI models with their own tokenizer, locally; Anthropic and Bedrock through their counting
 * API when the policy enables `countTokens`). A model whose provider cannot count, or whose count
 * fails, keeps the bound: a count never refuses a call the bound would have admitted. The reserve
 * step plans with the counts.
 * Reads: decision, budgets, lines, estimatedInputTokens, request. Writes: inputTokens.
 */
export function estimateInput(opts: EstimateStepOptions): Middleware<CallContext> {
  return async function estimate(ctx, next) {
    const decided = ctx.decision;
    if (decided && decided.effect !== 'deny' && ctx.lines.length > 0) {
      const { request } = admitted(ctx);
      const models = modelsToCount({ policy: ctx.policy, decision: decided, request, budgets: ctx.budgets, estimatedInputTokens: ctx.estimatedInputTokens });
      const counts = new Map<string, number>();
      await Promise.all(
        models.map(async (model) => {
          const provider = opts.providerFor(ctx.policy, model.provider);
          if (!provider?.countTokens) return;
          try {
            const n = await provider.countTokens({ model: model.modelId, system: request.system, messages: request.messages, maxTokens: request.maxTokens, signal: ctx.signal });
            if (n !== undefined) counts.set(model.ref, n);
          } catch (err) {
            if (err instanceof GatewayError && err.code === 'CANCELLED') throw err;
            ctx.log.warn({ err, model: model.ref, event: 'count_tokens_failed' }, 'the input could not be counted; the bound stands');
          }
        }),
      );
      if (ctx.signal.aborted) throw new GatewayError('CANCELLED', 'The call was cancelled.');
      if (counts.size > 0) ctx.inputTokens = counts;
    }
    await next();
  };
}
