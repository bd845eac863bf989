/**
 * `tollgate explain`: for one caller and one request, the decision a real call would get, the rule
 * or budget that decided it, the budgets that apply, and what would change the outcome. Pure: it
 * runs the same decision and reservation replay as the policy tests (simulate.ts), several times
 * with one thing changed, and describes the differences.
 */
import { createHash } from 'node:crypto';
import { decodeJwt, type JWTPayload } from 'jose';
import { GatewayError } from '../errors.js';
import { principalFromClaims } from '../identity/claims.js';
import { looksLikeJwt } from '../identity/jwt.js';
import type { Principal } from '../identity/principal.js';
import { DEFAULT_MAX_TOKENS } from '../call/request.js';
import type { CompletionInput } from '../call/request.js';
import type { Decision } from './decide.js';
import { remainingPct } from './decide.js';
import type { BudgetView } from '../call/budget.js';
import { covers, type Policy } from './load.js';
import { principalInputSchema } from './policyTest.js';
import { simulate, type SimulateInput, type UsageMap } from './simulate.js';

/** A budget as `my_budget` shows it (amounts in display units: tokens, or USD), and how near tier-down it is. */
export interface BudgetReport extends BudgetView {
  remainingPct: number;
  tierDownBelow?: number;
  /** The tiers it covers, when it covers only some (`tiers` in the policy). */
  tiers?: string[];
}

/** The budget lines that count a call served by one tier. */
export interface TierCoverage {
  tier: string;
  /** Budget ids, with the subject when the caller has several lines of one budget (`team_monthly (team a)`). */
  budgets: string[];
}

export interface Explanation {
  principal: Principal;
  request: { tier?: string; model?: string; maxTokens: number };
  decision: Decision;
  /** `rule <id>`, `budget <id>`, or a sentence when nothing limited the call. */
  decidedBy: string;
  budgets: BudgetReport[];
  /** For each tier, most capable first, the budgets a call served by it is checked against and charged to. */
  coverage: TierCoverage[];
  /** What would change the outcome, one sentence each. */
  changes: string[];
}

const display = (unit: 'tokens' | 'usd', n: number) => (unit === 'usd' ? n / 1e6 : n);

/** `1,640,000 tokens`, `$12.50`; under a dollar, to the hundredth of a cent (`$0.0150`). */
function amount(unit: 'tokens' | 'usd', n: number): string {
  if (unit === 'tokens') return `${Math.round(n).toLocaleString('en-US')} tokens`;
  return `$${n.toFixed(n > 0 && n < 1 ? 4 : 2)}`;
}

/** 18, 19.9: one decimal, rounded down so "under 20%" never prints as 20%. */
function pct(n: number): string {
  return `${Math.floor(n * 10) / 10}%`;
}

function servedTier(d: Decision): string | undefined {
  return d.effect === 'deny' ? undefined : d.tier;
}

/** `premium`, `premium and standard`, `premium, standard and economy`. */
function listOf(xs: readonly string[]): string {
  return xs.length <= 1 ? (xs[0] ?? '') : `${xs.slice(0, -1).join(', ')} and ${xs.at(-1)}`;
}

/** Explains one call. Throws UNKNOWN_MODEL for a model or tier the policy does not know. */
export function explainCall(input: SimulateInput): Explanation {
  const { policy } = input;
  const sim = simulate(input);
  const d = sim.decision;
  const budgets: BudgetReport[] = sim.budgets.map((b) => ({
    id: b.budget.config.id,
    scope: b.budget.config.scope,
    subject: b.subject,
    unit: b.budget.unit,
    limit: display(b.budget.unit, b.budget.limit),
    used: display(b.budget.unit, b.used),
    reserved: display(b.budget.unit, b.reserved),
    remaining: display(b.budget.unit, Math.max(0, b.budget.limit - b.used - b.reserved)),
    remainingPct: remainingPct(b),
    tierDownBelow: b.budget.config.tierDown?.below,
    tiers: b.budget.config.tiers ? [...b.budget.config.tiers] : undefined,
    resetsAt: new Date(b.resetsAt).toISOString(),
  }));
  const lineName = (b: (typeof sim.budgets)[number]) =>
    sim.budgets.filter((x) => x.budget === b.budget).length > 1 ? `${b.budget.config.id} (${b.budget.config.scope} ${b.subject})` : b.budget.config.id;
  const coverage: TierCoverage[] = policy.tiers.map((tier) => ({ tier, budgets: sim.budgets.filter((b) => covers(b.budget, tier)).map(lineName) }));
  const chargedTo = (tier: string) => {
    const names = coverage.find((c) => c.tier === tier)!.budgets;
    return names.length > 0 ? `budget${names.length > 1 ? 's' : ''} ${listOf(names)}` : 'no budget';
  };
  const decidedBy = d.ruleId ? `rule ${d.ruleId}` : d.budgetId ? `budget ${d.budgetId}` : 'no rule or budget limited this call';

  const changes: string[] = [];
  const withTier = (tier: string) => simulate({ ...input, request: { ...input.request, model: undefined, tier } }).decision;

  if (d.effect === 'deny' && d.code === 'POLICY_DENIED') {
    const others = policy.tiers.filter((t) => t !== d.requestedTier).map((t) => ({ tier: t, decision: withTier(t) }));
    const open = others.filter((o) => o.decision.effect !== 'deny');
    changes.push(
      open.length > 0
        ? `${d.requestedTier} is denied by rule ${d.ruleId}; ${open.map((o) => (servedTier(o.decision) === o.tier ? o.tier : `${o.tier} (served by ${servedTier(o.decision)})`)).join(', ')} would be allowed`
        : `${d.requestedTier} is denied by rule ${d.ruleId}, and every other tier is denied too for this caller${others.length ? ` (${others.map((o) => `${o.tier}: ${o.decision.ruleId ? `rule ${o.decision.ruleId}` : `budget ${o.decision.budgetId}`}`).join(', ')})` : ''}`,
    );
  }
  if (d.effect === 'tier_down' && d.ruleId) {
    changes.push(`rule ${d.ruleId} caps this caller at ${d.tier}: asking for ${d.requestedTier} is served by ${d.tier}`);
  }

  // The tier after rules and before any budget stepped it down: a threshold moves calls one tier below it.
  const decided = sim.decided;
  const ruled = decided.effect === 'deny' ? decided.requestedTier : decided.budgetId ? policy.tiers[policy.tiers.indexOf(decided.tier) - 1]! : decided.tier;
  const lower = policy.tiers[policy.tiers.indexOf(ruled) + 1];
  const next = lower ? `calls go to ${lower}` : `calls stay on ${ruled}, the last tier`;
  const served = servedTier(d);
  for (const b of sim.budgets) {
    const r = budgets.find((x) => x.id === b.budget.config.id && x.subject === b.subject)!;
    const label = `budget ${lineName(b)}`;
    // A budget that covers some tiers only: a call it cannot take goes to a tier it does not cover.
    const others = r.tiers ? policy.tiers.filter((t) => !r.tiers!.includes(t)) : [];
    const only = r.tiers && others.length > 0 ? ` covers ${listOf(r.tiers)} only and` : '';
    // The tiers a call this budget cannot take goes to: those below the first tier it covers, from
    // the serving tier (or, for a refusal, the tier asked after rules) down, that it does not cover.
    const from = policy.tiers.indexOf(served ?? ruled);
    const bites = policy.tiers.findIndex((t, i) => i >= from && covers(b.budget, t));
    const escape = bites < 0 ? [] : others.filter((t) => policy.tiers.indexOf(t) > bites);
    if (only && served !== undefined && !r.tiers!.includes(served)) {
      if (d.budgetId !== r.id) {
        changes.push(`${label}${only} is not charged for this ${served} call; it has ${amount(r.unit, r.remaining)} left (resets ${r.resetsAt})`);
      } else if (decided.effect !== 'deny' && decided.budgetId === r.id && decided.tier === served) {
        changes.push(`${label}${only} has ${pct(r.remainingPct)} left, under its tier-down threshold of ${r.tierDownBelow}%: the call goes to ${served}, which it does not cover (resets ${r.resetsAt})`);
      } else {
        changes.push(`${label}${only} has ${amount(r.unit, r.remaining)} left, not enough for this call: it goes to ${served}, which it does not cover (resets ${r.resetsAt})`);
      }
      continue;
    }
    if (r.remaining <= 0 || (d.effect === 'deny' && d.code === 'BUDGET_EXHAUSTED' && d.budgetId === r.id)) {
      changes.push(
        escape.length > 0 && d.budgetId !== r.id
          ? `${label}${only} has ${amount(r.unit, r.remaining)} left, not enough for this call; until it resets at ${r.resetsAt}, calls go to ${listOf(escape)}, which it does not cover`
          : `${label} has ${amount(r.unit, r.remaining)} left, not enough for this call; calls are refused until it resets at ${r.resetsAt}`,
      );
      continue;
    }
    const below = r.tierDownBelow;
    if (below === undefined && escape.length > 0) {
      changes.push(`${label}${only} has ${pct(r.remainingPct)} left (${amount(r.unit, r.remaining)}); no tier-down threshold: once it cannot cover a call, the call goes to ${listOf(escape)} (resets ${r.resetsAt})`);
      continue;
    }
    if (below === undefined) {
      changes.push(`${label} has ${pct(r.remainingPct)} left (${amount(r.unit, r.remaining)}); no tier-down threshold: calls are refused once it cannot cover one (resets ${r.resetsAt})`);
      continue;
    }
    if (r.remainingPct < below) {
      changes.push(`${label} has ${pct(r.remainingPct)} left; tier-down threshold ${below}%: under it ${next} (resets ${r.resetsAt})`);
    } else {
      const room = r.remaining - (below / 100) * r.limit;
      changes.push(`${label} has ${pct(r.remainingPct)} left; tier-down threshold ${below}%: after another ${amount(r.unit, room)}, ${next}`);
    }
  }

  if (d.effect === 'tier_down' && decided.effect !== 'deny' && decided.tier !== d.tier) {
    const fellBack = d.budgetId !== undefined && budgets.some((r) => r.id === d.budgetId && r.tiers && !r.tiers.includes(d.tier));
    changes.push(`budget ${d.budgetId} cannot cover a ${decided.tier} call at max_tokens ${input.request.maxTokens}; ${d.tier} fits${fellBack ? `, charged to ${chargedTo(d.tier)}` : ''}`);
  }
  if (sim.clamp) {
    changes.push(`max_tokens was lowered from ${input.request.maxTokens} to ${sim.clamp.tokens}, all budget ${sim.clamp.budgetId} can pay for`);
  }
  if (sim.budgets.length === 0) changes.push('no budget applies to this caller');

  return {
    principal: input.principal,
    request: { tier: input.request.tier, model: input.request.model, maxTokens: input.request.maxTokens },
    decision: d,
    decidedBy,
    budgets,
    coverage,
    changes,
  };
}

/** Formats an explanation for a terminal. */
export function formatExplanation(e: Explanation): string {
  const d = e.decision;
  const p = e.principal;
  const out: string[] = [];
  const via = p.authMethod === 'jwt' ? ` (claims of a token from ${p.credentialId}; signature not checked)` : '';
  out.push(`caller:     ${p.user}${p.teams.length ? ` teams=[${p.teams.join(',')}]` : ''}${p.costCenter ? ` costCenter=${p.costCenter}` : ''}${p.groups.length ? ` groups=[${p.groups.join(',')}]` : ''}${p.roles.length ? ` roles=[${p.roles.join(',')}]` : ''}${via}`);
  out.push(`request:    ${d.requestedModel ? `model ${d.requestedModel} (tier ${d.requestedTier})` : `tier ${d.requestedTier}`}, max_tokens ${e.request.maxTokens}`);
  out.push(
    d.effect === 'deny'
      ? `decision:   deny ${d.code}`
      : `decision:   ${d.effect} -> tier ${d.tier} (${d.candidates.map((m) => m.ref).join(', ')})`,
  );
  out.push(`decided by: ${e.decidedBy}`);
  out.push(`reason:     ${d.reason}`);
  out.push('budgets:');
  if (e.budgets.length === 0) out.push('  (none apply)');
  for (const b of e.budgets) {
    out.push(
      `  ${b.id} (${b.scope} ${b.subject}${b.tiers ? `; ${b.tiers.join(', ')} only` : ''}): ${amount(b.unit, b.remaining)} of ${amount(b.unit, b.limit)} left (${pct(b.remainingPct)}); used ${amount(b.unit, b.used)}, reserved ${amount(b.unit, b.reserved)}` +
        `${b.tierDownBelow !== undefined ? `; tier-down under ${b.tierDownBelow}%` : ''}; resets ${b.resetsAt}`,
    );
  }
  // Which budget counts which tier, when they differ from tier to tier.
  if (e.budgets.some((b) => b.tiers)) {
    out.push('tiers:');
    const width = Math.max(...e.coverage.map((c) => c.tier.length)) + 1;
    const served = d.effect === 'deny' ? undefined : d.tier;
    for (const c of e.coverage) {
      out.push(`  ${`${c.tier}:`.padEnd(width)} ${c.budgets.length > 0 ? c.budgets.join(', ') : '(no budget)'}${c.tier === served ? '   <- serves this call' : ''}`);
    }
  }
  out.push('what would change it:');
  for (const c of e.changes) out.push(`  - ${c}`);
  return out.join('\n') + '\n';
}

/**
 * `--as`: a principal as JSON (`{"user":"bob","groups":["contractors"]}`), an API key listed in the
 * policy, or a JWT from an issuer under `identity.oidc`. The JWT's claims are mapped as the gateway
 * maps them, but its signature and expiry are not checked: explain is offline and answers "what
 * would this caller get", not "is this token valid".
 */
export function principalFromArg(policy: Policy, arg: string): Principal {
  const text = arg.trim();
  if (text.startsWith('{')) {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new GatewayError('INVALID_REQUEST', `--as is not valid JSON: ${(err as Error).message}`);
    }
    const parsed = principalInputSchema.safeParse(raw);
    if (!parsed.success) {
      throw new GatewayError('INVALID_REQUEST', `--as: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
    }
    return { ...parsed.data, authMethod: 'api_key' };
  }
  const entry = policy.apiKeys.get(createHash('sha256').update(text, 'utf8').digest('hex'));
  if ((!entry || entry.disabled) && looksLikeJwt(text)) return principalFromToken(policy, text);
  if (!entry || entry.disabled) throw new GatewayError('AUTH_INVALID', '--as: the API key is not listed (or is disabled) in this policy; pass a principal as JSON instead.');
  return { user: entry.user, teams: [...entry.teams], costCenter: entry.costCenter, groups: [...entry.groups], roles: [...entry.roles], authMethod: 'api_key', credentialId: entry.id };
}

function principalFromToken(policy: Policy, token: string): Principal {
  let payload: JWTPayload;
  try {
    payload = decodeJwt(token);
  } catch (err) {
    throw new GatewayError('INVALID_REQUEST', `--as: the token cannot be decoded: ${(err as Error).message}`);
  }
  const issuer = policy.config.identity.oidc.find((i) => i.issuer === payload.iss);
  if (!issuer) throw new GatewayError('AUTH_INVALID', `--as: the token's issuer ${String(payload.iss)} is not listed under identity.oidc in this policy.`);
  return principalFromClaims(payload, issuer.claims, issuer.issuer, issuer.userPrefix);
}

/** `--usage employee-weekly=1640000,team_monthly@data=12000`: used amounts (tokens, or USD for dollar budgets). */
export function parseUsageArg(arg: string): UsageMap {
  // Without a prototype, so `__proto__=5` names a budget like any other word.
  const out: Record<string, { used: number }> = Object.create(null);
  for (const part of arg.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.lastIndexOf('=');
    const amount = part.slice(eq + 1).trim();
    // Decimal only: Number() would read 0x10 as 16 and 1e3 as 1000.
    if (eq <= 0 || !/^[0-9]+(\.[0-9]+)?$/.test(amount)) {
      throw new GatewayError('INVALID_REQUEST', `--usage: "${part}" is not budgetId=amount (a decimal number, tokens or USD)`);
    }
    const used = Number(amount);
    out[part.slice(0, eq)] = { used };
  }
  return out;
}

/** The request `explain` describes, from its flags; max tokens defaults as in the complete tool. */
export function explainRequest(opts: { tier?: string; model?: string; prompt?: string; maxTokens?: number }): CompletionInput {
  return { messages: [{ role: 'user', content: opts.prompt ?? 'Hello' }], tier: opts.tier, model: opts.model, maxTokens: opts.maxTokens ?? DEFAULT_MAX_TOKENS };
}
