/**
 * What the pipeline would do with one call, worked out without a store or a provider: the pure
 * decision, then the planner's candidates (plan.ts) tried against a given usage snapshot. Policy
 * tests and `tollgate explain` use it so they report what a real call would see, including a
 * budget that cannot cover the reservation (BUDGET_EXHAUSTED) or a step down because a tier does
 * not fit. The reserve step tries the same candidates against the quota store.
 */
import type { Principal } from '../identity/principal.js';
import { toLedger } from '../call/budget.js';
import { demoInputTokens } from '../providers/demo.js';
import { inputTokenBound } from '../providers/estimate.js';
import { applicableLines } from './budgets.js';
import { applicableLimits, candidateLimits, limitAmount, tooLargeForLimitError, type ApplicableLimits, type LimitLine } from './limits.js';
import type { CompletionInput } from '../call/request.js';
import { decide, type BudgetState, type Decision } from './decide.js';
import type { Policy } from './load.js';
import { admittedDecision, exhaustedDecision, modelsToCount, planCandidates, reportedShortfall, shortfallIn, type OutputClamp, type Shortfall } from './plan.js';

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
  /**
   * Exact input counts by model ref, as the pipeline's estimate step would make them. Without them
   * the simulation reserves the bound, as a call does when the bound fits or no count can be made.
   */
  inputTokens?: ReadonlyMap<string, number>;
  /**
   * The input bound a recorded call was reserved with (its decision event's), instead of the bound
   * of `request`'s text: a call whose prompt was not kept is explained with its own input.
   */
  estimatedInputTokens?: number;
}

export interface Simulation {
  /** The decision a caller would see after the reservation step. */
  decision: Decision;
  /** The decision before the reservation step (what decide() alone says). */
  decided: Decision;
  budgets: BudgetState[];
  estimatedInputTokens: number;
  /** Max tokens lowered to what a budget can pay for, when that happened. */
  clamp?: OutputClamp;
}

/** The usage given for `key`, if given: its own keys only, so a budget named `toString` reads nothing from Object.prototype. */
function ownUsage(usage: UsageMap, key: string): UsageInput | undefined {
  return Object.hasOwn(usage, key) ? usage[key] : undefined;
}

/** The budget states that apply to `principal` at `now`, filled from `usage`. */
export function budgetStates(policy: Policy, principal: Principal, now: number, usage: UsageMap = {}): BudgetState[] {
  return applicableLines(policy.budgets, principal, now, '', policy.config.applications.charge).map((l) => {
    const id = l.budget.config.id;
    const u = ownUsage(usage, `${id}@${l.subject}`) ?? ownUsage(usage, id);
    return {
      budget: l.budget,
      subject: l.subject,
      used: toLedger(l.budget.unit, u?.used ?? 0),
      reserved: toLedger(l.budget.unit, u?.reserved ?? 0),
      resetsAt: l.resetsAt,
    };
  });
}

/**
 * The rate limit a candidate of `tier` (reserved on `model`) would meet, given the usage: the
 * store's own check, `used + reserved + amount > limit`, on each limit line.
 */
function limitIn(limits: ApplicableLimits, usage: UsageMap, tier: string, model: string, worstTokens: number, now: number): LimitHit | undefined {
  for (const l of candidateLimits(limits, tier, model, now, '')) {
    const id = l.limit.config.id;
    const u = ownUsage(usage, `${id}@${l.subject}`) ?? ownUsage(usage, id);
    const requested = limitAmount(l.limit, worstTokens);
    if ((u?.used ?? 0) + (u?.reserved ?? 0) + requested > l.limit.limit) return { id, scope: l.limit.config.scope, subject: l.subject, line: l, requested };
  }
  return undefined;
}

/** A limit line that refuses a candidate, and what the candidate asked of it. */
interface LimitHit {
  id: string;
  scope: string;
  subject: string;
  line: LimitLine;
  requested: number;
}

/** Whether no wait admits the hit: the candidate asks more of the line than its whole limit (the reserve step's INVALID_REQUEST). */
function never(hit: LimitHit): boolean {
  return hit.requested > hit.line.limit.limit;
}

function rateLimited(decided: Extract<Decision, { effect: 'allow' | 'tier_down' }>, hit: { id: string; scope: string; subject: string }): Decision {
  return {
    effect: 'deny',
    code: 'RATE_LIMITED',
    requestedTier: decided.requestedTier,
    requestedModel: decided.requestedModel,
    reason: `Rate limit ${hit.id} (${hit.scope} ${hit.subject}) is reached; retry once its window moves on or a call in flight ends.`,
  };
}

/**
 * The first usage key (`budget` or `budget@subject`) that names no budget or rate limit of
 * `policy`, with the ids it declares: usage given for it would be ignored, so a misspelt id would
 * leave that budget untouched and the decision would not be the one asked about.
 */
export function undeclaredUsage(policy: Policy, keys: Iterable<string>): { id: string; declared: string[] } | undefined {
  const declared = [...policy.budgets.map((b) => b.config.id), ...policy.rateLimits.map((l) => l.config.id)];
  for (const key of keys) {
    const id = key.split('@')[0]!;
    if (!declared.includes(id)) return { id, declared };
  }
  return undefined;
}

/** Decides one call and tries the planner's candidates against the usage given. */
export function simulate(input: SimulateInput): Simulation {
  const { policy, request } = input;
  const budgets = budgetStates(policy, input.principal, input.now, input.usage);
  const estimatedInputTokens = input.estimatedInputTokens ?? inputTokenBound(request);
  const decided = decide({ policy, principal: input.principal, request, estimatedInputTokens, budgets, now: input.now });
  const base = { decided, budgets, estimatedInputTokens };
  if (decided.effect === 'deny') return { ...base, decision: decided };
  const limits = applicableLimits(policy.rateLimits, input.principal, input.now, '');
  const usage = input.usage ?? {};
  const worst = estimatedInputTokens + request.maxTokens;
  if (budgets.length === 0) {
    const hit = limitIn(limits, usage, decided.tier, decided.candidates[0]!.ref, worst, input.now);
    if (hit && never(hit)) throw tooLargeForLimitError(hit.line, hit.requested, request.maxTokens);
    return { ...base, decision: hit ? rateLimited(decided, hit) : decided };
  }

  // The counts are used when the pipeline would count: the bound does not fit the first candidate.
  const bounded = { policy, decision: decided, request, budgets, estimatedInputTokens };
  const toCount = modelsToCount(bounded);
  let counts = input.inputTokens;
  if (toCount.length > 0) {
    // The demo provider's count is its own pure rule: counted here as the pipeline would.
    const demo = toCount.filter((m) => policy.config.providers[m.provider]?.kind === 'demo' && !counts?.has(m.ref));
    const demoCount = input.estimatedInputTokens ?? demoInputTokens(request);
    if (demo.length > 0) counts = new Map([...(counts ?? []), ...demo.map((m) => [m.ref, demoCount] as const)]);
  }
  const plan = counts && toCount.length > 0 ? { ...bounded, inputTokens: counts } : bounded;
  const shortfalls: Shortfall[] = [];
  let limited: LimitHit | undefined;
  let tooLarge: LimitHit | undefined;
  for (const candidate of planCandidates(plan)) {
    const short = shortfallIn(budgets, candidate);
    const hit = short ? undefined : limitIn(limits, usage, candidate.tier, candidate.models[0]!.ref, worst, input.now);
    if (!short && !hit) return { ...base, decision: admittedDecision(decided, candidate, shortfalls[0]), clamp: candidate.clamp };
    if (short) shortfalls.push(short);
    if (hit && never(hit)) tooLarge ??= hit;
    else limited ??= hit;
  }
  // As in the reserve step: a limit that refused wins over a budget, and a call no wait admits is told to ask for less.
  if (limited) return { ...base, decision: rateLimited(decided, limited) };
  if (tooLarge) throw tooLargeForLimitError(tooLarge.line, tooLarge.requested, request.maxTokens);
  return { ...base, decision: exhaustedDecision(decided, reportedShortfall(decided, shortfalls, budgets), budgets) };
}
