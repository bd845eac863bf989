/**
 * Budget arithmetic every layer shares: ledger units (tokens, micro-dollars) against what a person
 * reads (tokens, dollars), and the view of one budget line that callers, headers, `explain` and
 * the CLI show. Pure; no store, no policy.
 */

/** A budget's unit in the policy; the ledger keeps dollars as integer micro-dollars. */
export type BudgetUnit = 'tokens' | 'usd';

/** A budget line as a caller sees it, in display units. */
export interface BudgetView {
  id: string;
  scope: string;
  subject: string;
  unit: BudgetUnit;
  limit: number;
  used: number;
  reserved: number;
  remaining: number;
  /**
   * How far `used` is past the limit, present only when it is: a provider billed more than was
   * reserved. `remaining` is then 0, and every call this budget covers is refused until the reset.
   */
  overrun?: number;
  resetsAt: string;
}

/** Ledger units to display units: tokens stay tokens, micro-dollars become dollars. */
export function toDisplay(unit: BudgetUnit, n: number): number {
  return unit === 'usd' ? n / 1e6 : n;
}

/** Display units to ledger units: dollars become whole micro-dollars. */
export function toLedger(unit: BudgetUnit, n: number): number {
  return unit === 'usd' ? Math.round(n * 1e6) : n;
}

/** What is left of a line, never below zero, in ledger units. */
export function remainingOf(limit: number, used: number, reserved: number): number {
  return Math.max(0, limit - used - reserved);
}

/** Reset times as text, kept: the calls on one budget share its window's end (issue 21). */
const resetTexts = new Map<number, string>();

/** `ms` as an ISO 8601 text, made once for each reset time (at most 1,024 kept, then started again). */
function resetText(ms: number): string {
  let text = resetTexts.get(ms);
  if (text === undefined) {
    if (resetTexts.size >= 1024) resetTexts.clear();
    text = new Date(ms).toISOString();
    resetTexts.set(ms, text);
  }
  return text;
}

/** One line's state in ledger units, as the view callers see. */
export function budgetView(line: { id: string; scope: string; subject: string; unit: BudgetUnit; limit: number; used: number; reserved: number; resetsAt: number }): BudgetView {
  const { unit } = line;
  return {
    id: line.id,
    scope: line.scope,
    subject: line.subject,
    unit,
    limit: toDisplay(unit, line.limit),
    used: toDisplay(unit, line.used),
    reserved: toDisplay(unit, line.reserved),
    remaining: toDisplay(unit, remainingOf(line.limit, line.used, line.reserved)),
    ...(line.used > line.limit ? { overrun: toDisplay(unit, line.used - line.limit) } : {}),
    resetsAt: resetText(line.resetsAt),
  };
}
