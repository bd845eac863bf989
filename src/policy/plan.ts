/**
 * The reservation planner: pure, no I/O. From the decision and the budgets' state it lists, in
 * order, what the admit step may try to reserve (tier, models, amount per budget line, output
 * clamp) and says what the caller is told when none fits. The reserve step tries the candidates
 * against the quota store; `simulate` and `explain` try them against a usage snapshot with the
 * store's own check (`used + reserved + amount <= limit`). Both read the outcome from here, so
 * what `explain` says is what a call gets.
 *
 * Order: every tier from the decided one down at the max tokens asked for (a cheaper tier keeps
 * the answer whole), then every tier again with max tokens lowered to what the budgets can still
 * pay for, unless that leaves fewer than `limits.minOutputTokens`.
 *
 * A candidate is reserved on the budget lines that cover its tier only (a budget's `tiers`), so a
 * budget for the dearer tiers that cannot cover the call lets it fall back to a tier it does not
 * cover, charged to that tier's own budget if it has one.
 *
 * Input tokens: a model's own figure when the pipeline made one (`inputTokens`: an exact count,
 * or a bound tighter than the byte bound), else the byte bound (`estimatedInputTokens`,
 * src/providers/estimate.ts); each is at least what the provider bills for the input. The planner
 * never counts: `modelsToCount` says when a count could change the outcome, and the pipeline's
 * estimate step counts and plans again.
 */
import type { CompletionInput } from '../call/request.js';
import { GatewayError } from '../errors.js';
import { lineAt, type LedgerLine } from '../quota/store.js';
import { affordableOutput, amountFor, outputTokensFor, type BudgetLine } from './budgets.js';
import type { BudgetState, Decision } from './decide.js';
import { covers, type ModelInfo, type Policy } from './load.js';

/** A decision that lets the call go ahead (before the reservation). */
export type ServedDecision = Extract<Decision, { effect: 'allow' | 'tier_down' }>;
/** A refusal. */
export type DenyDecision = Extract<Decision, { effect: 'deny' }>;

/** Max output tokens lowered to what a budget can pay for. */
export interface OutputClamp {
  tokens: number;
  budgetId: string;
}

/** One thing the admit step may reserve. */
export interface Candidate {
  tier: string;
  /** The tier's models in failover order. */
  models: ModelInfo[];
  clamp?: OutputClamp;
  /** The worst case on each budget line, in the line's unit, in the order of `budgets`; 0 on a line that does not cover the tier. */
  amounts: number[];
  /** The budget lines (indices into `budgets`) that cover the tier: the ones reserved, checked and charged. */
  lines: number[];
}

/** A budget line that could not take a candidate's amount (the quota store's refusal). */
export interface Shortfall {
  budgetId: string;
  subject: string;
  limit: number;
  used: number;
  reserved: number;
  requested: number;
}

export interface PlanInput {
  policy: Policy;
  decision: ServedDecision;
  request: Pick<CompletionInput, 'maxTokens'>;
  budgets: readonly BudgetState[];
  /** The bound on the call's input tokens, whichever model serves it. */
  estimatedInputTokens: number;
  /** Input figures by model ref (exact counts or tighter bounds), where the pipeline made them; the bound stands for any other model. */
  inputTokens?: ReadonlyMap<string, number>;
}

/** The input tokens a plan reserves for `model`: its own figure if there is one, else the bound. */
export function inputTokensFor(input: Pick<PlanInput, 'estimatedInputTokens' | 'inputTokens'>, model: ModelInfo): number {
  return input.inputTokens?.get(model.ref) ?? input.estimatedInputTokens;
}

/** The output tokens a call may produce on `model` under a candidate's clamp. */
export function outputCap(maxTokens: number, model: ModelInfo, clamp?: OutputClamp): number {
  return outputTokensFor(maxTokens, model, clamp?.tokens);
}

/** The ordered candidates for one call. Empty budgets give one candidate, the decided tier. */
export function planCandidates(input: PlanInput): Candidate[] {
  const { policy, decision, request, budgets } = input;
  const inputOf = (m: ModelInfo) => inputTokensFor(input, m);
  const tierModels = (tier: string) => (tier === decision.tier ? decision.candidates : [...policy.tierModels.get(tier)!]);
  const linesFor = (tier: string) => budgets.flatMap((b, i) => (covers(b.budget, tier) ? [i] : []));
  const amountsFor = (tier: string, models: ModelInfo[], clamp?: OutputClamp) =>
    budgets.map((b) =>
      covers(b.budget, tier) ? Math.max(...models.map((m) => amountFor(b.budget, m, { inputTokens: inputOf(m), outputTokens: outputCap(request.maxTokens, m, clamp) }))) : 0,
    );
  if (budgets.length === 0) return [{ tier: decision.tier, models: decision.candidates, amounts: [], lines: [] }];

  const tiers = [decision.tier, ...decision.fallbackTiers];
  const whole: Candidate[] = tiers.map((tier) => {
    const models = tierModels(tier);
    return { tier, models, amounts: amountsFor(tier, models), lines: linesFor(tier) };
  });
  const clamped: Candidate[] = [];
  for (const tier of tiers) {
    const models = tierModels(tier);
    const lines = linesFor(tier);
    const affordable = affordableOutput(lines.map((i) => budgets[i]!), models, inputOf);
    const wanted = Math.max(...models.map((m) => outputCap(request.maxTokens, m)));
    if (affordable && affordable.tokens < wanted && affordable.tokens >= policy.config.limits.minOutputTokens) {
      clamped.push({ tier, models, clamp: affordable, amounts: amountsFor(tier, models, affordable), lines });
    }
  }
  return [...whole, ...clamped];
}

function distinctModels(candidates: readonly Candidate[]): ModelInfo[] {
  const seen = new Set<string>();
  const out: ModelInfo[] = [];
  for (const c of candidates) {
    for (const m of c.models) {
      if (seen.has(m.ref)) continue;
      seen.add(m.ref);
      out.push(m);
    }
  }
  return out;
}

/**
 * The models whose exact input count could admit a call that the figures at hand do not (the
 * bound, or a tighter bound per model in `inputTokens`): none when the first candidate (the
 * decided tier, the whole answer) fits the snapshot on them; otherwise every model of every tier
 * the call may be served by that is not counted yet (`counted`). Counting them lets the planner
 * try each tier, whole and clamped, at what its models really bill.
 */
export function modelsToCount(input: PlanInput, counted: ReadonlySet<string> = new Set()): ModelInfo[] {
  const candidates = planCandidates(input);
  if (input.budgets.length === 0 || !shortfallIn(input.budgets, candidates[0]!)) return [];
  return distinctModels(candidates).filter((m) => !counted.has(m.ref));
}

/** The ledger lines a candidate reserves: the lines covering its tier, each with its amount. */
export function reservedLines(lines: readonly BudgetLine[], candidate: Candidate): LedgerLine[] {
  return candidate.lines.map((i) => lineAt(lines[i]!.line, candidate.amounts[i]!));
}

/** The first line of a snapshot that cannot take the candidate's amounts, as the store would report it. */
export function shortfallIn(budgets: readonly BudgetState[], candidate: Candidate): Shortfall | undefined {
  for (const i of candidate.lines) {
    const b = budgets[i]!;
    const amount = candidate.amounts[i]!;
    if (b.used + b.reserved + amount > b.budget.limit) {
      return { budgetId: b.budget.config.id, subject: b.subject, limit: b.budget.limit, used: b.used, reserved: b.reserved, requested: amount };
    }
  }
  return undefined;
}

/** The decision once `candidate` is reserved; `first` is the first refusal met on the way, if any. */
export function admittedDecision(decided: ServedDecision, candidate: Candidate, first?: Shortfall): ServedDecision {
  // Copies whose fields change, every one of them already there (decide writes them all): a spread
  // followed by fields would cost a hidden class a call (test/unit/hidden-classes.test.ts).
  let decision = decided;
  if (candidate.tier !== decided.tier) {
    decision = { ...decided };
    decision.effect = 'tier_down';
    decision.tier = candidate.tier;
    decision.candidates = candidate.models;
    decision.fallbackTiers = [];
    decision.budgetId = first?.budgetId;
    decision.ruleId = undefined;
    decision.reason = `Budget ${first?.budgetId} cannot cover a ${decided.tier} call; served by tier ${candidate.tier}.`;
  }
  if (candidate.clamp) {
    decision = { ...decision };
    decision.reason = `${decision.reason}; max_tokens lowered to ${candidate.clamp.tokens}, all that budget ${candidate.clamp.budgetId} can pay for`;
  }
  return decision;
}

/**
 * The shortfall a refusal reports when no candidate fits, from those met in order: the first one on
 * a budget that covers the last tier tried. With budgets that cover every tier that is the first one
 * met; when a budget for the dearer tiers ran out first, it is the one that stopped the cheapest tier.
 */
export function reportedShortfall(decided: ServedDecision, shortfalls: readonly Shortfall[], budgets: readonly BudgetState[]): Shortfall {
  const last = decided.fallbackTiers.at(-1) ?? decided.tier;
  const coversLast = (s: Shortfall) => budgets.some((b) => b.budget.config.id === s.budgetId && covers(b.budget, last));
  return shortfalls.find(coversLast) ?? shortfalls[0]!;
}

/** The refusal when no candidate fits, for the shortfall it reports, with the line's reset time. */
export function exhaustedDecision(decided: ServedDecision, first: Shortfall, budgets: readonly BudgetState[]): DenyDecision {
  const b = budgets.find((s) => s.budget.config.id === first.budgetId && s.subject === first.subject);
  const left = Math.max(0, first.limit - first.used - first.reserved);
  const unit = b?.budget.unit === 'usd' ? 'micro-USD' : 'tokens';
  const resets = b ? new Date(b.resetsAt).toISOString() : undefined;
  return {
    effect: 'deny',
    code: 'BUDGET_EXHAUSTED',
    requestedTier: decided.requestedTier,
    requestedModel: decided.requestedModel,
    budgetId: first.budgetId,
    resetsAt: b?.resetsAt,
    reason: `Budget ${first.budgetId} (${b?.budget.config.scope} ${first.subject}) cannot cover this call: ${left} ${unit} left, ${first.requested} needed. It resets at ${resets}.`,
  };
}

/** The error a caller gets for an exhausted-budget refusal from the planner. */
export function exhaustedError(decision: DenyDecision, first: Shortfall): GatewayError {
  return new GatewayError('BUDGET_EXHAUSTED', decision.reason, {
    budgetId: first.budgetId,
    subject: first.subject,
    remaining: Math.max(0, first.limit - first.used - first.reserved),
    requested: first.requested,
    resetsAt: decision.resetsAt === undefined ? undefined : new Date(decision.resetsAt).toISOString(),
  });
}
