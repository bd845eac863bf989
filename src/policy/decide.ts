/**
 * The policy decision: pure, no I/O. Given who calls, what they ask for and the budgets' current
 * state, it says allow, tier_down or deny, which model serves and which rule or budget decided.
 * The pipeline acts on the decision; deciding never touches the store or a provider.
 */
import { GatewayError } from '../errors.js';
import { principalView, type Principal } from '../identity/principal.js';
import type { CompletionInput } from '../call/request.js';
import { contentOf, withContent } from './content.js';
import { covers, type CompiledBudget, type ModelInfo, type Policy } from './load.js';

/** One applicable budget line with its current state, read before deciding. */
export interface BudgetState {
  budget: CompiledBudget;
  subject: string;
  used: number;
  reserved: number;
  resetsAt: number;
}

export interface DecideInput {
  policy: Policy;
  principal: Principal;
  request: CompletionInput;
  estimatedInputTokens: number;
  budgets: BudgetState[];
  now: number;
}

interface Served {
  tier: string;
  requestedTier: string;
  requestedModel?: string;
  /** Models to try in order within the tier (failover). */
  candidates: ModelInfo[];
  /** Less capable tiers to fall back to when a reservation is refused. */
  fallbackTiers: string[];
  ruleId?: string;
  budgetId?: string;
  reason: string;
}

export type Decision =
  | ({ effect: 'allow' | 'tier_down' } & Served)
  | {
      effect: 'deny';
      code: 'POLICY_DENIED' | 'BUDGET_EXHAUSTED' | 'RATE_LIMITED';
      requestedTier: string;
      requestedModel?: string;
      ruleId?: string;
      budgetId?: string;
      resetsAt?: number;
      reason: string;
    };

/** Finds a model by `provider/model` or, when only one provider serves it, by bare model id. */
export function findModel(policy: Policy, name: string): ModelInfo | undefined {
  const exact = policy.models.get(name);
  if (exact) return exact;
  const matches = [...policy.models.values()].filter((m) => m.modelId === name);
  return matches.length === 1 ? matches[0] : undefined;
}

/** Remaining share of a budget line, in percent. */
export function remainingPct(b: BudgetState): number {
  return Math.max(0, ((b.budget.limit - b.used - b.reserved) / b.budget.limit) * 100);
}

function budgetsView(budgets: BudgetState[]): Record<string, unknown> {
  // By id in a Map: a budget named `toString` is a budget like any other.
  const out = new Map<string, { used: number; reserved: number; limit: number; remaining: number; remainingPct: number }>();
  for (const b of budgets) {
    const view = { used: b.used, reserved: b.reserved, limit: b.budget.limit, remaining: b.budget.limit - b.used - b.reserved, remainingPct: remainingPct(b) };
    const prev = out.get(b.budget.config.id);
    if (!prev || view.remainingPct < prev.remainingPct) out.set(b.budget.config.id, view);
  }
  return Object.fromEntries(out);
}

/**
 * Whether `decide` can be given budgets assumed untouched instead of read ones, with the
 * reservation proving the assumption (`assumptionBounds`): no rule reads `budgets` (conservatively,
 * none names it), and every budget covers every tier, so that the first candidate reserves, and
 * the store reports, every line the call's answer and headers show.
 */
export function decidableUnread(policy: Policy, budgets: readonly Pick<BudgetState, 'budget'>[]): boolean {
  let known = unreadRules.get(policy);
  if (known === undefined) {
    known = !policy.rules.some((r) => /\bbudgets\b/.test(r.config.when));
    unreadRules.set(policy, known);
  }
  return known && budgets.every((b) => b.budget.config.tiers === undefined);
}

const unreadRules = new WeakMap<Policy, boolean>();

/**
 * For a decision `decide` made on budgets assumed untouched (`used` and `reserved` 0, with
 * `decidableUnread`), the most each line's used + reserved may be for `decide` to make the same
 * decision on what the line really holds: below exhaustion, and, where the line steps calls down
 * under a threshold and a tier below is left, at or above the threshold. Worked out with the
 * comparisons `decide` makes, so the bound is exact, not an estimate. The reserve step hands the
 * bounds to the store, which checks them atomically with the reservation (`ReserveOptions.atMost`).
 */
export function assumptionBounds(policy: Policy, decision: Extract<Decision, { effect: 'allow' | 'tier_down' }>, budgets: readonly BudgetState[]): number[] {
  const held = thresholdBounds(policy, decision, budgets);
  // Exhausted when limit - held <= 0.
  return budgets.map((b, i) => Math.min(Math.ceil(b.budget.limit) - 1, held[i]!));
}

/**
 * For a decision `decide` made on `budgets`, read or assumed, the most each line's used + reserved
 * may be for the decision's tier to stand against the lines' tier-down thresholds: where a line
 * covering the tier steps calls down under a threshold and a tier below is left, the largest amount
 * held at which `decide` finds the line at or above it; Infinity elsewhere, and on every line when
 * the decision was already stepped down by a threshold (`decide` steps one tier at most). Calls
 * decided on one read at once each find the line above its threshold; checked with the reservation,
 * the bound makes every call served on the tier one that found it so when its reservation was made.
 */
export function thresholdBounds(policy: Policy, decision: Extract<Decision, { effect: 'allow' | 'tier_down' }>, budgets: readonly BudgetState[]): number[] {
  const stepsDown = decision.budgetId === undefined && policy.tiers.indexOf(decision.tier) < policy.tiers.length - 1;
  return budgets.map((b) => {
    const below = b.budget.config.tierDown?.below;
    if (below === undefined || !stepsDown || !covers(b.budget, decision.tier)) return Infinity;
    const { limit } = b.budget;
    const pct = (held: number) => remainingPct({ budget: b.budget, subject: b.subject, used: held, reserved: 0, resetsAt: b.resetsAt });
    // The largest held amount whose remaining share is not under the threshold: remainingPct
    // falls as held grows, so step from the arithmetic guess to the exact boundary.
    const most = Math.ceil(limit) - 1;
    let held = Math.floor(limit - (limit * below) / 100);
    while (held >= 0 && pct(held) < below) held -= 1;
    while (held + 1 <= most && pct(held + 1) >= below) held += 1;
    return held;
  });
}

/** Decides one call. Throws UNKNOWN_MODEL for a model or tier the policy does not know. */
export function decide(input: DecideInput): Decision {
  const { policy, request } = input;
  let requestedTier: string;
  let requestedModel: ModelInfo | undefined;
  if (request.model) {
    requestedModel = findModel(policy, request.model);
    if (!requestedModel) {
      throw new GatewayError('UNKNOWN_MODEL', `Model "${request.model}" is not configured. Use list_models to see the models you may use.`, { model: request.model });
    }
    requestedTier = request.tier && requestedModel.tiers.includes(request.tier) ? request.tier : requestedModel.tiers[0]!;
  } else {
    requestedTier = request.tier ?? policy.defaultTier;
    if (!policy.hasTier(requestedTier)) {
      throw new GatewayError('UNKNOWN_MODEL', `Tier "${requestedTier}" is not configured; tiers are ${policy.tiers.join(', ')}.`, { tier: requestedTier });
    }
  }
  const denyBase = { requestedTier, requestedModel: requestedModel?.ref };
  const asked = requestedModel ?? policy.tierModels.get(requestedTier)![0]!;
  const vars = {
    principal: principalView(input.principal),
    // text, rawText, compactText, decodedSpans, decodedTruncated and secrets: computed when a rule reads them.
    request: withContent(
      {
        model: asked.ref,
        tier: requestedTier,
        provider: asked.provider,
        maxTokens: request.maxTokens,
        inputTokens: input.estimatedInputTokens,
      },
      contentOf(request),
    ),
    budgets: budgetsView(input.budgets),
    now: new Date(input.now),
  };

  let tierIndex = policy.tiers.indexOf(requestedTier);
  let ruleId: string | undefined;
  let budgetId: string | undefined;
  let reason = 'within policy and budget';
  for (const rule of policy.rules) {
    let matched: boolean;
    try {
      matched = rule.matches(vars);
    } catch (err) {
      // A rule that cannot be evaluated fails closed for deny rules and is skipped otherwise.
      if (rule.config.effect !== 'deny') continue;
      return { effect: 'deny', code: 'POLICY_DENIED', ...denyBase, ruleId: rule.config.id, reason: `Rule ${rule.config.id} could not be evaluated (${(err as Error).message.split('\n')[0]}); denied to be safe.` };
    }
    if (!matched) continue;
    if (rule.config.effect === 'deny') {
      return { effect: 'deny', code: 'POLICY_DENIED', ...denyBase, ruleId: rule.config.id, reason: rule.config.message ?? `Denied by rule ${rule.config.id}.` };
    }
    if (rule.config.effect === 'allow') break;
    const cap = policy.tiers.indexOf(rule.config.tier!);
    if (cap > tierIndex) {
      tierIndex = cap;
      ruleId = rule.config.id;
      reason = rule.config.message ?? `Rule ${rule.config.id} limits this caller to tier ${rule.config.tier}.`;
    }
    break;
  }

  // A spent budget refuses the call here only when it covers every tier the call could still be
  // served by; otherwise the planner steps the call down to a tier it does not cover. A threshold
  // steps down only a tier its budget covers.
  const reachable = policy.tiers.slice(tierIndex);
  let lowest: BudgetState | undefined;
  for (const b of input.budgets) {
    if (b.budget.limit - b.used - b.reserved <= 0 && reachable.every((t) => covers(b.budget, t))) {
      return {
        effect: 'deny',
        code: 'BUDGET_EXHAUSTED',
        ...denyBase,
        budgetId: b.budget.config.id,
        resetsAt: b.resetsAt,
        reason: `Budget ${b.budget.config.id} (${b.budget.config.scope} ${b.subject}) is exhausted; it resets at ${new Date(b.resetsAt).toISOString()}.`,
      };
    }
    const below = b.budget.config.tierDown?.below;
    if (below !== undefined && covers(b.budget, reachable[0]!) && remainingPct(b) < below && (!lowest || remainingPct(b) < remainingPct(lowest))) lowest = b;
  }
  if (lowest && tierIndex < policy.tiers.length - 1) {
    tierIndex += 1;
    ruleId = undefined;
    budgetId = lowest.budget.config.id;
    reason = `Budget ${budgetId} has ${(Math.floor(remainingPct(lowest) * 10) / 10).toFixed(1)}% left (under ${lowest.budget.config.tierDown!.below}%), so the call is served one tier down.`;
  }

  const tier = policy.tiers[tierIndex]!;
  const members = [...policy.tierModels.get(tier)!];
  const candidates = tier === requestedTier && requestedModel ? [requestedModel, ...members.filter((m) => m !== requestedModel)] : members;
  return {
    effect: tier === requestedTier ? 'allow' : 'tier_down',
    tier,
    requestedTier,
    requestedModel: requestedModel?.ref,
    candidates,
    fallbackTiers: policy.tiers.slice(tierIndex + 1),
    ruleId,
    budgetId,
    reason,
  };
}
