import { asGatewayError, GatewayError, isRetryable } from '../../errors.js';
import { chargeLines } from '../../policy/budgets.js';
import { limitCharge } from '../../policy/limits.js';
import { chargeableUsage, outputTokenBound } from '../../providers/estimate.js';
import { costOfParts } from '../../providers/prices.js';
import type { ModelInfo } from '../../policy/load.js';
import type { Policy } from '../../policy/load.js';
import type { Provider, Usage } from '../../providers/provider.js';
import type { Middleware } from '../compose.js';
import { admitted, callOutputCap, reservedInputTokens, type CallContext } from '../context.js';

export interface DispatchStepOptions {
  /** The provider as built for the call's policy snapshot, so a hot reload never switches a call midway. */
  providerFor: (policy: Policy, name: string) => Provider | undefined;
  /** Marks the reservation dispatched in the journal; resolves once written, before any byte leaves. */
  dispatched: (ctx: CallContext) => Promise<void>;
  now: () => number;
}

function addUsage(a: Usage | undefined, b: Usage): Usage {
  if (!a) return { ...b };
  return {
    inputTokens: a.inputTokens + b.inputTokens,
    outputTokens: a.outputTokens + b.outputTokens,
    cachedInputTokens: (a.cachedInputTokens ?? 0) + (b.cachedInputTokens ?? 0),
  };
}

/** Adds an attempt's usage to the call's, and prices the call with every attempt at its own model's price. */
function consume(ctx: CallContext, model: ModelInfo, usage: Usage): void {
  ctx.usage = addUsage(ctx.usage, usage);
  (ctx.consumed ??= []).push({ model, usage });
  ctx.costMicroUsd = costOfParts(ctx.consumed.map((c) => ({ price: c.model.price, usage: c.usage })));
}

/** The call's cancellation: the reason it was aborted with when that is one (a shutdown's cut), else the caller's leaving. */
const cancelled = (signal: AbortSignal) =>
  signal.reason instanceof GatewayError && signal.reason.code === 'CANCELLED' ? signal.reason : new GatewayError('CANCELLED', 'The call was cancelled by the caller.');

/**
 * Whether the call's reservation still covers an attempt on `model`: what the failed attempts
 * consumed plus `model`'s worst case (its reserved input and output cap), on every budget line and
 * limit line. A reservation covers one attempt on any model of the tier, not one on each, so once
 * an attempt was charged something (a stream cut after its head) a second attempt may not fit.
 */
function reservationCovers(ctx: CallContext, model: ModelInfo): boolean {
  const reservation = ctx.reservation;
  if (!reservation || !ctx.usage) return true;
  const next: Usage = { inputTokens: reservedInputTokens(ctx, model), outputTokens: callOutputCap(ctx, model) };
  const usage = addUsage(ctx.usage, next);
  const parts = [...(ctx.consumed ?? []), { model, usage: next }].map((c) => ({ price: c.model.price, usage: c.usage }));
  const charged = chargeLines(ctx.lines, usage, costOfParts(parts), reservation.tier);
  if (charged.some((l, i) => l.amount > (reservation.amounts[i] ?? 0))) return false;
  return (reservation.limits ?? []).every((l) => limitCharge(l.line.limit, usage, true) <= l.amount);
}

/**
 * Sends the call to the tier's models in order, failing over on errors another provider may fix
 * (429, 5xx, timeout). Once text has reached the caller it does not fail over, since a second
 * answer would be spliced onto the first. Tokens consumed by failed attempts are still charged,
 * each at the price of the model that consumed them, so it fails over only while the reservation
 * covers them and the next model's worst case: never past a budget.
 *
 * A caller who leaves: before anything is sent, nothing is (and nothing is charged); while the
 * provider has not answered, its request is aborted and nothing is charged; once it had begun
 * answering, the call is charged what the provider reported, else the input reserved for it
 * (`reservedInputTokens`: the exact count or the bound) and the bound of the text that had arrived
 * (one token per UTF-8 byte, at most the output cap: a delta may carry many tokens). A call the
 * provider finished is served and charged in full, whenever the caller left (the adapters see to it).
 * A plain answer whose 2xx head had arrived and whose body failed (cut, stalled, not an answer),
 * the caller there or not, is charged what the provider reported, else the input reserved for it
 * and the output cap: it was generated whole before its head.
 */
export function dispatchToProvider(opts: DispatchStepOptions): Middleware<CallContext> {
  return async function dispatch(ctx) {
    // The reserve step rewrites the decision when it stepped down, so candidates are the reserved tier's.
    const chosen = ctx.decision && ctx.decision.effect !== 'deny' ? ctx.decision.candidates : [];
    const { request } = admitted(ctx);
    // Gone already: no byte leaves and the call is released. (Both stores took the dispatch mark with
    // the reservation, so a crash before that release is charged by recovery: docs/journal.md.)
    if (ctx.signal.aborted) throw cancelled(ctx.signal);
    const started = opts.now();
    let streamed = false;
    // From here a process crash leaves a call the provider may bill: recovery charges it at its reservation.
    if (chosen.length > 0) await opts.dispatched(ctx);
    try {
      for (const model of chosen) {
        const provider = opts.providerFor(ctx.policy, model.provider);
        if (!provider) throw new GatewayError('INTERNAL', `provider ${model.provider} is not built`);
        const t0 = opts.now();
        const req = {
          model: model.modelId,
          system: request.system,
          messages: request.messages,
          maxTokens: callOutputCap(ctx, model),
          temperature: request.temperature,
          signal: ctx.signal,
          // What an adapter charges for the input when the provider reports no usage.
          inputTokens: reservedInputTokens(ctx, model),
        };
        const onText = ctx.onText;
        // Text this attempt passed on to the caller: deltas, and their UTF-8 bytes.
        let deltas = 0;
        let sentBytes = 0;
        try {
          const result = onText
            ? await provider.stream(req, (d) => {
                streamed = true;
                deltas += 1;
                sentBytes += Buffer.byteLength(d, 'utf8');
                onText(d, model.ref);
              })
            : await provider.complete(req);
          ctx.attempts.push({ model: model.ref, provider: provider.name, ok: true, ms: opts.now() - t0 });
          const usage = chargeableUsage(result.usage, req.inputTokens, outputTokenBound(result.text, req.maxTokens));
          // A provider that names no stop reason is read by its output: at the cap it was cut.
          const stopReason = result.stopReason ?? (usage.outputTokens >= req.maxTokens ? 'max_tokens' : 'end_turn');
          ctx.served = { model, responseModel: result.model, text: result.text, stopReason, ...(result.stopSequence ? { stopSequence: result.stopSequence } : {}) };
          consume(ctx, model, usage);
          return;
        } catch (err) {
          const ge = asGatewayError(err);
          const left = ge.code === 'CANCELLED' || ctx.signal.aborted;
          // Failed or left once the provider had begun answering: it bills the call, reported or not.
          const answered = ge.details.answered === true || deltas > 0;
          const reported = ge.details.usage as Usage | undefined;
          // Unreported output: a stream's, the text that went out; a plain answer's, the cap, as
          // it was generated whole before its head (nothing of it was read).
          const outputBound = onText ? Math.min(req.maxTokens, sentBytes) : req.maxTokens;
          const partial = reported
            ? chargeableUsage(reported, req.inputTokens, outputBound)
            : answered ? { inputTokens: req.inputTokens, outputTokens: outputBound } : undefined;
          if (partial) consume(ctx, model, partial);
          ctx.attempts.push({
            model: model.ref,
            provider: provider.name,
            ok: false,
            errorCode: ge.code,
            status: typeof ge.details.status === 'number' ? ge.details.status : undefined,
            reason: ge.message,
            ms: opts.now() - t0,
          });
          if (left) throw cancelled(ctx.signal);
          if (!isRetryable(ge) || streamed) throw ge;
          // Charged for this attempt already: fail over only within what was reserved.
          const following = chosen[chosen.indexOf(model) + 1];
          if (following && !reservationCovers(ctx, following)) throw ge;
        }
      }
      throw new GatewayError('PROVIDER_UNAVAILABLE', `Every provider for tier ${ctx.reservation?.tier} failed; see attempts.`, {
        attempts: ctx.attempts.map(({ model, provider, errorCode, status, reason }) => ({ model, provider, errorCode, status, reason })),
      });
    } finally {
      ctx.upstreamMs = opts.now() - started;
    }
  };
}
