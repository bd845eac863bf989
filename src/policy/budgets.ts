/**
 * Which budgets a call is charged to, and how much. One principal can fall under several lines of
 * one budget (a user in two teams is charged to both teams' budgets).
 */
import { principalView, type Principal } from '../identity/principal.js';
import type { BudgetState } from './decide.js';
import { covers, type CompiledBudget, type ModelInfo } from './load.js';
import { costMicroUsd } from '../providers/prices.js';
import type { Usage } from '../providers/provider.js';
import { lineHead } from '../quota/redisJournal.js';
import { lineAt, type LedgerLine } from '../quota/store.js';
import { resolveWindow, type ResolvedWindow } from '../quota/windows.js';

/** A budget line for the current window, amount still unset. */
export interface BudgetLine {
  budget: CompiledBudget;
  subject: string;
  resetsAt: number;
  line: Omit<LedgerLine, 'amount'>;
}

function subjectsOf(budget: CompiledBudget, p: Principal): string[] {
  return principalSubjects(budget.config.scope, p);
}

/** The subjects of a principal in a scope both budgets and limits take (one each, a team each, or none). */
export function principalSubjects(scope: 'user' | 'team' | 'costCenter' | 'application' | 'global', p: Principal): string[] {
  switch (scope) {
    case 'user':
      return [p.user];
    case 'team':
      return p.teams;
    case 'costCenter':
      return p.costCenter ? [p.costCenter] : [];
    case 'application':
      return p.app ? [p.app] : [];
    case 'global':
      return ['*'];
  }
}

/**
 * Keys of one budget line. Everything one line touches shares the `{budget|subject}` hash tag,
 * so on Redis Cluster a line's script stays within one slot.
 */
export function lineKeys(prefix: string, budgetId: string, subject: string, windowStarts: number[], current: number) {
  const tag = `${prefix}{${budgetId}|${encodeURIComponent(subject)}}`;
  return {
    usageKey: `${tag}:u:${current}`,
    readKeys: windowStarts.map((s) => `${tag}:u:${s}`),
    reservedKey: `${tag}:r`,
  };
}

/** Whether an application's call charges a budget of `scope`, under the policy's `applications.charge`. */
export function chargedTo(scope: string, charge: 'both' | 'application' | 'owner'): boolean {
  if (charge === 'application') return scope === 'application' || scope === 'global';
  if (charge === 'owner') return scope !== 'application';
  return true;
}

/** The budget lines that apply to `principal` now. A `when` that fails to evaluate applies the budget (fail safe). */
export function applicableLines(budgets: readonly CompiledBudget[], principal: Principal, now: number, prefix: string, charge: 'both' | 'application' | 'owner' = 'both'): BudgetLine[] {
  const out: BudgetLine[] = [];
  const view = { principal: principalView(principal) };
  for (const budget of budgets) {
    if (principal.app && !chargedTo(budget.config.scope, charge)) continue;
    if (budget.appliesTo) {
      let applies = true;
      try {
        applies = budget.appliesTo(view);
      } catch {
        applies = true;
      }
      if (!applies) continue;
    }
    const w = resolveWindow(budget.config.window, now);
    for (const subject of subjectsOf(budget, principal)) out.push(keptBudgetLine(budget, subject, w, prefix));
  }
  return out;
}

/** Subjects whose lines a budget keeps per key prefix; past it the oldest kept goes. */
const LINES_KEPT = 10_000;
/** Each budget's lines by key prefix, then subject, with the window start they were made for. */
const kept = new WeakMap<CompiledBudget, Map<string, Map<string, { start: number; end: number; line: BudgetLine }>>>();

/**
 * A budget's line for `subject`, reused while the window (a rolling window's current bucket) is the
 * one it was made in: its key strings, and the head of its JSON as the Redis journal lists it, are
 * made once a window rather than every call (and the store hashes strings it has seen). Lines are
 * never changed once made; a call's amounts go on copies.
 */
function keptBudgetLine(budget: CompiledBudget, subject: string, w: ResolvedWindow, prefix: string): BudgetLine {
  let byPrefix = kept.get(budget);
  if (!byPrefix) kept.set(budget, (byPrefix = new Map()));
  let lines = byPrefix.get(prefix);
  if (!lines) byPrefix.set(prefix, (lines = new Map()));
  const found = lines.get(subject);
  if (found && found.start === w.start && found.end === w.resetsAt && found.line.line.expiresAt === w.expiresAt) return found.line;
  const budgetId = budget.config.id;
  const { usageKey, readKeys, reservedKey } = lineKeys(prefix, budgetId, subject, w.readStarts, w.start);
  // Written out, not spread: every budget's line then has the one shape (see lineAt in quota/store.ts).
  const head = lineHead({ budgetId, subject, usageKey, reservedKey });
  // A rolling window's current bucket, checked against a store's own clock as a rate limit's is
  // (LedgerLine.bucket): a replica whose clock is off would charge a bucket the others do not read
  // yet; it ends when the oldest bucket read drops out (resetsAt). A calendar window's counter
  // holds every charge of its window whichever clock chose it.
  const rolling = 'rolling' in budget.config.window;
  const bucket = rolling ? ([w.start, w.resetsAt] as const) : undefined;
  // What a rolling budget holds now has left its window once the current bucket has: the time it
  // is whole again, said as its reset (the oldest bucket leaving frees only what that one holds,
  // often nothing: a caller told that time was refused again).
  const resetsAt = rolling ? w.start + (w.resetsAt - w.start) * w.readStarts.length : w.resetsAt;
  const line: BudgetLine = { budget, subject, resetsAt, line: { budgetId, subject, limit: budget.limit, expiresAt: w.expiresAt, usageKey, readKeys, reservedKey, head, bucket } };
  if (!found && lines.size >= LINES_KEPT) lines.delete(lines.keys().next().value!);
  lines.set(subject, { start: w.start, end: w.resetsAt, line });
  return line;
}

/** What a call costs in one budget's unit: tokens, or micro-dollars. */
export function amountFor(budget: CompiledBudget, model: ModelInfo, usage: Usage): number {
  return budget.unit === 'tokens' ? usage.inputTokens + usage.outputTokens : costMicroUsd(model.price, usage);
}

/**
 * Ledger lines carrying what a call served by `tier` costs on each line: its tokens on a token line,
 * `costMicroUsd` (every attempt priced at the model that consumed it) on a dollar line, nothing on a
 * line that does not cover the tier.
 */
export function chargeLines(lines: BudgetLine[], usage: Usage, costMicroUsd: number, tier: string): LedgerLine[] {
  const tokens = usage.inputTokens + usage.outputTokens;
  return lines.map((l) => lineAt(l.line, covers(l.budget, tier) ? (l.budget.unit === 'tokens' ? tokens : costMicroUsd) : 0));
}

/** The output tokens a call may produce on `model`: what was asked, within the model's own ceiling and the clamp, if any. */
export function outputTokensFor(maxTokens: number, model: ModelInfo, clamp?: number): number {
  return Math.min(maxTokens, model.maxOutputTokens, clamp ?? Number.POSITIVE_INFINITY);
}

/**
 * The most output tokens every budget's remaining amount can pay for on every model of a tier,
 * given each model's input tokens (`inputTokensOf(m)`), and the budget that sets that bound.
 * Undefined when no budget bounds it.
 */
export function affordableOutput(budgets: readonly BudgetState[], models: readonly ModelInfo[], inputTokensOf: (m: ModelInfo) => number): { tokens: number; budgetId: string } | undefined {
  let best: { tokens: number; budgetId: string } | undefined;
  for (const b of budgets) {
    const remaining = b.budget.limit - b.used - b.reserved;
    for (const m of models) {
      const inputTokens = inputTokensOf(m);
      const tokens =
        b.budget.unit === 'tokens'
          ? remaining - inputTokens
          : m.price.outputPerMTok > 0
            ? Math.floor((remaining - inputTokens * m.price.inputPerMTok) / m.price.outputPerMTok)
            : Number.POSITIVE_INFINITY;
      if (!best || tokens < best.tokens) best = { tokens, budgetId: b.budget.config.id };
    }
  }
  return best && Number.isFinite(best.tokens) ? best : undefined;
}
