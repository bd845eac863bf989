/**
 * What the pipeline would do with one call, worked out without a store or a provider: the pure
 * decision, then the reservation step replayed against a given usage snapshot. Policy tests and
 * `tollgate explain` use it so they report what a real call would see, including a budget that
 * cannot cover the reservation (BUDGET_EXHAUSTED) or a step down because a tier does not fit.
 *
 * The replay mirrors src/pipeline/steps/reserve.ts: every tier from the decided one down at the
 * max tokens asked for, then every tier again with max tokens lowered to what the budgets can pay
 * for (not below limits.minOutputTokens). A line fits when used + reserved + amount <= limit,
 * the quota store's own check.
 */
import type { Principal } from '../identity/principal.js';
import { affordableOutput, amountFor, applicableLines, estimateInputTokens, outputTokensFor } from '../pipeline/budgets.js';
import { decide, type BudgetState, type CompletionInput, type Decision } from './decide.js';
import type { Policy } from './load.js';

/** Usage of one budget in the current window, in the budget's display unit (tokens, or USD for dollar budgets). */
export interface UsageInput {
  used: number;
  reserved?: number;
}

/**
 * Usage by budget id (every subject of that budget) or by `budgetId@subject` (one team, one cost
 * centre), the latter taking precedence. Budgets not named start the window unused.
 */
export type UsageMap = Readonly<Record<string, UsageInput>>;

export interface SimulateInput {
  policy: Policy;
  principal: Principal;
  request: CompletionInput;
  usage?: UsageMap;
  now: number;
}

export interface Simulation {
  /** The decision a caller would see after the reservation step. */
  decision: Decision;
  /** The decision before the reservation step (what decide() alone says). */
  decided: Decision;
  budgets: BudgetState[];
  estimatedInputTokens: number;
  /** Max tokens lowered to what a budget can pay for, when that happened. */
  clamp?: { tokens: number; budgetId: string };
}

/** Converts a display amount (tokens or USD) to ledger units (tokens or micro-USD). */
function toLedger(unit: 'tokens' | 'usd', n: number): number {
  return unit === 'usd' ? Math.round(n * 1e6) : n;
}

/** The budget states that apply to `principal` at `now`, filled from `usage`. */
export function budgetStates(policy: Policy, principal: Principal, now: number, usage: UsageMap = {}): BudgetState[] {
  return applicableLines(policy.budgets, principal, now, '').map((l) => {
    const id = l.budget.config.id;
    const u = usage[`${id}@${l.subject}`] ?? usage[id];
    return {
      budget: l.budget,
      subject: l.subject,
      used: toLedger(l.budget.unit, u?.used ?? 0),
      reserved: toLedger(l.budget.unit, u?.reserved ?? 0),
      resetsAt: l.resetsAt,
    };
  });
}

/** Decides one call and replays the reservation against the usage given. */
export function simulate(input: SimulateInput): Simulation {
  const { policy, request } = input;
  const budgets = budgetStates(policy, input.principal, input.now, input.usage);
  const texts = request.messages.map((m) => m.content);
  const estimatedInputTokens = estimateInputTokens(request.system === undefined ? texts : [request.system, ...texts]);
  const decided = decide({ policy, principal: input.principal, request, estimatedInputTokens, budgets, now: input.now });
  const base = { decided, budgets, estimatedInputTokens };
  if (decided.effect === 'deny' || budgets.length === 0) return { ...base, decision: decided };

  const tierModels = (tier: string) => (tier === decided.tier ? decided.candidates : policy.config.tiers[tier]!.map((r) => policy.models.get(r)!));
  const tiers = [decided.tier, ...decided.fallbackTiers];
  const plans: { tier: string; clamp?: { tokens: number; budgetId: string } }[] = tiers.map((tier) => ({ tier }));
  for (const tier of tiers) {
    const models = tierModels(tier);
    const fit = affordableOutput(budgets, models, estimatedInputTokens);
    const wanted = Math.max(...models.map((m) => outputTokensFor(request.maxTokens, m)));
    if (fit && fit.tokens < wanted && fit.tokens >= policy.config.limits.minOutputTokens) plans.push({ tier, clamp: fit });
  }

  let refusal: { budget: BudgetState; requested: number } | undefined;
  for (const plan of plans) {
    const models = tierModels(plan.tier);
    const short = budgets.find((b) => {
      const amount = Math.max(...models.map((m) => amountFor(b.budget, m, { inputTokens: estimatedInputTokens, outputTokens: outputTokensFor(request.maxTokens, m, plan.clamp?.tokens) })));
      const over = b.used + b.reserved + amount > b.budget.limit;
      if (over) refusal ??= { budget: b, requested: amount };
      return over;
    });
    if (short) continue;
    let decision: Decision = decided;
    if (plan.tier !== decided.tier) {
      decision = {
        ...decided,
        effect: 'tier_down',
        tier: plan.tier,
        candidates: models,
        fallbackTiers: [],
        budgetId: refusal?.budget.budget.config.id,
        ruleId: undefined,
        reason: `Budget ${refusal?.budget.budget.config.id} cannot cover a ${decided.tier} call; served by tier ${plan.tier}.`,
      };
    }
    if (plan.clamp) {
      decision = { ...decision, reason: `${decision.reason}; max_tokens lowered to ${plan.clamp.tokens}, all that budget ${plan.clamp.budgetId} can pay for` } as Decision;
    }
    return { ...base, decision, clamp: plan.clamp };
  }

  const b = refusal!.budget;
  const left = Math.max(0, b.budget.limit - b.used - b.reserved);
  return {
    ...base,
    decision: {
      effect: 'deny',
      code: 'BUDGET_EXHAUSTED',
      requestedTier: decided.requestedTier,
      requestedModel: decided.requestedModel,
      budgetId: b.budget.config.id,
      resetsAt: b.resetsAt,
      reason: `Budget ${b.budget.config.id} (${b.budget.config.scope} ${b.subject}) cannot cover this call: ${left} ${b.budget.unit === 'usd' ? 'micro-USD' : 'tokens'} left, ${refusal!.requested} needed. It resets at ${new Date(b.resetsAt).toISOString()}.`,
    },
  };
}
