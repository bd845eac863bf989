import { GatewayError } from '../../errors.js';
import type { ModelInfo } from '../../policy/load.js';
import type { QuotaStore, ReserveOutcome } from '../../quota/store.js';
import { affordableOutput, amountFor, chargeLines, outputTokensFor } from '../budgets.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';
import { withStore } from './storeAccess.js';

export interface ReserveStepOptions {
  store: QuotaStore;
  fallbackStore: QuotaStore;
}

/**
 * The output tokens a call may produce on `model`: what was asked, within the model's own ceiling
 * and within what the remaining budgets can pay for (the clamp).
 */
export function outputCap(ctx: CallContext, model: ModelInfo): number {
  return outputTokensFor(ctx.request.maxTokens, model, ctx.outputClamp?.tokens);
}

/**
 * Reserves the worst case (estimated input + max output, priced at the dearest model of the tier)
 * on every budget line at once, stepping down a tier when a reservation is refused. After the
 * steps below it finish, charges what was actually consumed and releases the rest, success or not.
 */
export function reserveAndSettle(opts: ReserveStepOptions): Middleware<CallContext> {
  return async function reserve(ctx, next) {
    const decision = ctx.decision;
    if (!decision || decision.effect === 'deny') throw new Error('reserve step ran without an allow decision');
    if (ctx.lines.length === 0) {
      ctx.reservation = { model: decision.candidates[0]!, tier: decision.tier, amounts: [] };
      await next();
      return;
    }

    const ttlMs = ctx.policy.config.limits.reservationTtlSeconds * 1000;
    const tiers = [decision.tier, ...decision.fallbackTiers];
    let refusal: Extract<ReserveOutcome, { ok: false }> | undefined;
    let holder: QuotaStore | undefined;
    // First every tier at the max tokens asked for (a cheaper tier keeps the answer whole), then, if
    // none fits, every tier again with max tokens lowered to what the budgets can still pay for,
    // unless that leaves fewer than limits.minOutputTokens: then the caller is told the budget is exhausted.
    const tierModels = (tier: string) =>
      tier === decision.tier ? decision.candidates : ctx.policy.config.tiers[tier]!.map((r) => ctx.policy.models.get(r)!);
    const plans: { tier: string; clamp?: { tokens: number; budgetId: string } }[] = tiers.map((tier) => ({ tier }));
    for (const tier of tiers) {
      const models = tierModels(tier);
      const affordable = affordableOutput(ctx.budgets, models, ctx.estimatedInputTokens);
      const wanted = Math.max(...models.map((m) => outputCap(ctx, m)));
      if (affordable && affordable.tokens < wanted && affordable.tokens >= ctx.policy.config.limits.minOutputTokens) {
        plans.push({ tier, clamp: affordable });
      }
    }
    for (const plan of plans) {
      const { tier } = plan;
      const models = tierModels(tier);
      ctx.outputClamp = plan.clamp;
      const amounts = ctx.lines.map((l) =>
        Math.max(...models.map((m) => amountFor(l.budget, m, { inputTokens: ctx.estimatedInputTokens, outputTokens: outputCap(ctx, m) }))),
      );
      const outcome = await withStore(ctx, opts, (s) => {
        holder = s;
        return s.reserve(ctx.id, ctx.lines.map((l, i) => ({ ...l.line, amount: amounts[i]! })), ttlMs);
      });
      if (outcome.ok) {
        if (tier !== decision.tier) {
          ctx.decision = {
            ...decision,
            effect: 'tier_down',
            tier,
            candidates: models,
            fallbackTiers: [],
            budgetId: refusal?.budgetId,
            ruleId: undefined,
            reason: `Budget ${refusal?.budgetId} cannot cover a ${decision.tier} call; served by tier ${tier}.`,
          };
        }
        if (ctx.outputClamp && ctx.decision) {
          ctx.decision = {
            ...ctx.decision,
            reason: `${ctx.decision.reason}; max_tokens lowered to ${ctx.outputClamp.tokens}, all that budget ${ctx.outputClamp.budgetId} can pay for`,
          };
        }
        ctx.reservation = { model: models[0]!, tier, amounts };
        break;
      }
      refusal ??= outcome;
      ctx.outputClamp = undefined;
    }
    if (!ctx.reservation || !holder) {
      const line = ctx.lines.find((l) => l.budget.config.id === refusal?.budgetId && l.subject === refusal?.subject);
      const resetsAt = line ? new Date(line.resetsAt).toISOString() : undefined;
      const left = refusal ? Math.max(0, refusal.limit - refusal.used - refusal.reserved) : 0;
      throw new GatewayError(
        'BUDGET_EXHAUSTED',
        `Budget ${refusal?.budgetId} (${line?.budget.config.scope} ${refusal?.subject}) cannot cover this call: ${left} ${line?.budget.unit === 'usd' ? 'micro-USD' : 'tokens'} left, ${refusal?.requested} needed. It resets at ${resetsAt}.`,
        { budgetId: refusal?.budgetId, subject: refusal?.subject, remaining: left, requested: refusal?.requested, resetsAt },
      );
    }

    const store = holder;
    try {
      await next();
    } finally {
      // settle() fixes ctx.charged before its first await, so the answer is complete either way.
      const writing = settle(ctx, store, opts);
      if (ctx.policy.config.limits.settleBeforeReply) await writing;
      else ctx.settling = writing;
    }
  };
}

/** Charges what the call consumed (or releases its reservation). Never rejects. */
async function settle(ctx: CallContext, store: QuotaStore, opts: ReserveStepOptions): Promise<void> {
  await settleOn(ctx, store);
  // A call served fail-open on the local ledger is also charged to the shared one, which keeps
  // it for replay until the store is back, so the outage's usage is not lost from the books.
  if (store === opts.fallbackStore && opts.store !== opts.fallbackStore && ctx.charged) {
    const lines = chargeLines(ctx.lines, ctx.served?.model ?? ctx.reservation!.model, ctx.usage!);
    await opts.store.settle(ctx.id, lines).catch((err: unknown) => ctx.log.error({ err, event: 'settle_failed' }, 'fail-open usage could not be queued'));
  }
}

async function settleOn(ctx: CallContext, store: QuotaStore): Promise<void> {
  try {
    if (ctx.usage && (ctx.usage.inputTokens > 0 || ctx.usage.outputTokens > 0)) {
      const model = ctx.served?.model ?? ctx.reservation!.model;
      const lines = chargeLines(ctx.lines, model, ctx.usage);
      ctx.charged = lines.map((l) => l.amount);
      await store.settle(ctx.id, lines);
    } else {
      await store.release(ctx.id);
    }
  } catch (err) {
    // The store queues what it could not write and replays it; the caller's result stands.
    ctx.storeError ??= 'settle_failed';
    ctx.log.error({ err, event: 'settle_failed' }, 'settlement could not be written now');
  }
}
