import { GatewayError } from '../../errors.js';
import type { Policy } from '../../policy/load.js';
import type { Provider } from '../../providers/provider.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';

export interface CountStepOptions {
  /** The provider as built for the call's policy snapshot. */
  providerFor: (policy: Policy, name: string) => Provider | undefined;
}

/**
 * The last step of a count_tokens dry run, in place of the reservation: counts the input for the
 * model the call would be served by first (after a step down), with that model's provider (its
 * tokenizer, or its counting API when the policy enables it). Where the provider cannot count,
 * the answer is admission's provable bound and says so (`exact: false`). Nothing is reserved or
 * sent to be answered. A failed count is PROVIDER_* like a failed call.
 * Reads: decision, request, estimatedInputTokens. Writes: tokenCount.
 */
export function countInput(opts: CountStepOptions): Middleware<CallContext> {
  return async function count(ctx, next) {
    const decided = ctx.decision;
    if (!decided || decided.effect === 'deny') throw new Error('count step ran without an allow decision');
    const { request } = admitted(ctx);
    const model = decided.candidates[0]!;
    const provider = opts.providerFor(ctx.policy, model.provider);
    const n = provider?.countTokens
      ? await provider.countTokens({ model: model.modelId, system: request.system, messages: request.messages, maxTokens: request.maxTokens, signal: ctx.signal })
      : undefined;
    if (ctx.signal.aborted) throw new GatewayError('CANCELLED', 'The call was cancelled.');
    ctx.tokenCount = n === undefined ? { model, tokens: ctx.estimatedInputTokens, exact: false } : { model, tokens: n, exact: true };
    await next();
  };
}
