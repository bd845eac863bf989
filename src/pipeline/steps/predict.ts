import { GatewayError } from '../../errors.js';
import type { ModelInfo, Policy } from '../../policy/load.js';
import { admittedDecision, exhaustedDecision, inputTokensFor, outputCap, planCandidates, reportedShortfall, shortfallIn, type Candidate, type Shortfall } from '../../policy/plan.js';
import { costMicroUsd } from '../../providers/prices.js';
import type { Provider } from '../../providers/provider.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';

export interface PredictStepOptions {
  /** The provider as built for the call's policy snapshot. */
  providerFor: (policy: Policy, name: string) => Provider | undefined;
}

/**
 * The reserve step of an estimate: the same planner's candidates (src/policy/plan.ts), in the same
 * order, checked against the budgets the decide step read with the store's own rule
 * (`used + reserved + amount <= limit`), and nothing reserved. With nothing changed in between, the
 * call that follows gets the same candidate, so the same decision, tier, models and clamp.
 * Then the cost range of that candidate: at most the reservation's worst case (the input as
 * admission reserves it, the output cap), at least the exact input at its cheapest rate with no
 * output; the input is counted for that, where the model's provider can count it.
 * Reads: decision, budgets, lines, estimatedInputTokens, inputTokens, request. Writes: decision (a
 * step down, a clamp, or the refusal the call would meet), outputClamp, prediction.
 */
export function predictAdmission(opts: PredictStepOptions): Middleware<CallContext> {
  return async function predict(ctx, next) {
    const decided = ctx.decision;
    if (!decided || decided.effect === 'deny') throw new Error('predict step ran without an allow decision');
    const { request } = admitted(ctx);
    const plan = { policy: ctx.policy, decision: decided, request, budgets: ctx.budgets, estimatedInputTokens: ctx.estimatedInputTokens, inputTokens: ctx.inputTokens };
    const candidates = planCandidates(plan);
    const counted = new Map(ctx.inputTokens ?? []);
    let chosen: Candidate | undefined;
    if (ctx.lines.length === 0) chosen = candidates[0];
    else {
      const shortfalls: Shortfall[] = [];
      for (const candidate of candidates) {
        const short = shortfallIn(ctx.budgets, candidate);
        if (!short) {
          ctx.decision = admittedDecision(decided, candidate, shortfalls[0]);
          chosen = candidate;
          break;
        }
        shortfalls.push(short);
      }
      if (!chosen) {
        ctx.decision = exhaustedDecision(decided, reportedShortfall(decided, shortfalls, ctx.budgets), ctx.budgets);
        ctx.prediction = { counted };
        return;
      }
    }
    ctx.outputClamp = chosen!.clamp;
    await countFor(ctx, chosen!.models, counted, opts);
    const max = Math.max(...chosen!.models.map((m) => costMicroUsd(m.price, { inputTokens: inputTokensFor(plan, m), outputTokens: outputCap(request.maxTokens, m, chosen!.clamp) })));
    // The least a served call can cost: its exact input, all of it read from the prompt cache, and no output.
    const min = Math.min(...chosen!.models.map((m) => {
      const input = counted.get(m.ref) ?? 0;
      return costMicroUsd(m.price, { inputTokens: input, cachedInputTokens: input, outputTokens: 0 });
    }));
    ctx.prediction = { candidate: chosen, costMicroUsd: { min, max }, counted };
    await next();
  };
}

/** Counts the input exactly for each model not counted yet whose provider can; a count that fails leaves that model's low end at 0. */
async function countFor(ctx: CallContext, models: readonly ModelInfo[], counted: Map<string, number>, opts: PredictStepOptions): Promise<void> {
  const { request } = admitted(ctx);
  await Promise.all(
    models
      .filter((m) => !counted.has(m.ref))
      .map(async (model) => {
        const provider = opts.providerFor(ctx.policy, model.provider);
        if (!provider?.countTokens) return;
        try {
          const n = await provider.countTokens({ model: model.modelId, system: request.system, messages: request.messages, maxTokens: request.maxTokens, signal: ctx.signal });
          if (n !== undefined) counted.set(model.ref, n);
        } catch (err) {
          if (err instanceof GatewayError && err.code === 'CANCELLED') throw err;
          ctx.log.warn({ err, model: model.ref, event: 'count_tokens_failed' }, 'the input could not be counted for the estimate\'s cost range');
        }
      }),
  );
  if (ctx.signal.aborted) throw new GatewayError('CANCELLED', 'The call was cancelled.');
}
