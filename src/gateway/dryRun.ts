/**
 * What a dry run answers, built from its finished call context: an estimate (the decision a call
 * would get now, what it would reserve, its cost range and each budget afterwards) and a token
 * count. The MCP `estimate` tool, POST /v1/tollgate/estimate and POST /v1/messages/count_tokens
 * render these.
 */
import { budgetView, remainingOf, toDisplay, type BudgetView } from '../call/budget.js';
import { outputCap } from '../policy/plan.js';
import type { CallContext } from '../pipeline/context.js';
import type { Decision } from '../policy/decide.js';

/** One budget line as an estimate shows it: now, what the call would reserve on it, and what would be left. */
export interface EstimatedBudget extends BudgetView {
  /** What the call would reserve on this line, in display units (0 on a line that does not cover the tier). */
  reservation: number;
  /** What would remain once it is reserved, in display units. */
  remainingAfter: number;
}

export interface EstimateResult {
  requestId: string;
  decision: {
    effect: 'allow' | 'tier_down' | 'deny';
    /** The refusal the call would meet (deny only). */
    code?: Extract<Decision, { effect: 'deny' }>['code'];
    requestedTier: string;
    /** The tier that would serve the call (not on deny). */
    tier?: string;
    ruleId?: string;
    budgetId?: string;
    reason: string;
    resetsAt?: string;
  };
  /** The model the call would be sent to first, and the tier's failover order (not on deny). */
  model?: string;
  models?: string[];
  /** The output tokens the call could produce (max_tokens after the model's ceiling and any clamp). */
  maxTokens?: number;
  /** The input as admission holds it: the provable bound, and exact counts by model where made. */
  inputTokens: { bound: number; counted: { model: string; tokens: number }[] };
  /** The cost range in USD of a served call: least input and no output, to the reservation's worst case. */
  costUsd?: { min: number; max: number };
  budgets: EstimatedBudget[];
}

/** The estimate a finished dry-run context holds. */
export function estimateResult(ctx: CallContext): EstimateResult {
  const d = ctx.decision!;
  const c = ctx.prediction?.candidate;
  const cost = ctx.prediction?.costMicroUsd;
  const request = ctx.request!;
  const decision: EstimateResult['decision'] =
    d.effect === 'deny'
      ? { effect: 'deny', code: d.code, requestedTier: d.requestedTier, ruleId: d.ruleId, budgetId: d.budgetId, reason: d.reason, resetsAt: d.resetsAt === undefined ? undefined : new Date(d.resetsAt).toISOString() }
      : { effect: d.effect, requestedTier: d.requestedTier, tier: d.tier, ruleId: d.ruleId, budgetId: d.budgetId, reason: d.reason };
  return {
    requestId: ctx.id,
    decision,
    ...(c ? { model: c.models[0]!.ref, models: c.models.map((m) => m.ref), maxTokens: Math.max(...c.models.map((m) => outputCap(request.maxTokens, m, c.clamp))) } : {}),
    inputTokens: { bound: ctx.estimatedInputTokens, counted: [...(ctx.prediction?.counted ?? [])].sort(([a], [b]) => (a < b ? -1 : 1)).map(([model, tokens]) => ({ model, tokens })) },
    ...(cost ? { costUsd: { min: cost.min / 1e6, max: cost.max / 1e6 } } : {}),
    budgets: ctx.budgets.map((b, i) => {
      const amount = c?.lines.includes(i) ? c.amounts[i]! : 0;
      const unit = b.budget.unit;
      const view = budgetView({ id: b.budget.config.id, scope: b.budget.config.scope, subject: b.subject, unit, limit: b.budget.limit, used: b.used, reserved: b.reserved, resetsAt: b.resetsAt });
      return { ...view, reservation: toDisplay(unit, amount), remainingAfter: toDisplay(unit, remainingOf(b.budget.limit, b.used, b.reserved + amount)) };
    }),
  };
}

/** A count_tokens answer. */
export interface TokenCountResult {
  requestId: string;
  /** The model counted for: the first the call would be sent to. */
  model: string;
  inputTokens: number;
  /** False when the provider cannot count and this is admission's provable bound (never less than the billed input). */
  exact: boolean;
}

export function tokenCountResult(ctx: CallContext): TokenCountResult {
  const t = ctx.tokenCount!;
  return { requestId: ctx.id, model: t.model.ref, inputTokens: t.tokens, exact: t.exact };
}
