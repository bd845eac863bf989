/**
 * CSV for the files finance opens in a spreadsheet (`usage export`, `usage report --format csv`,
 * `usage refusals --format csv`). Their text cells carry what callers chose: user ids, teams and
 * cost centres from keys and token claims, and model names a caller sent (a refused or failed call
 * is reported under the model it asked for). A spreadsheet runs a cell that begins with `=`, `+`,
 * `-` or `@` (or a tab or carriage return before one) as a formula, so such a cell is written with
 * a leading `'` (OWASP's CSV injection guidance), which the spreadsheet shows as text. Numbers, and
 * text that is exactly a decimal number, are written as they are.
 */
import { CSV_COLUMNS, FOCUS_COLUMNS, formatMicroUsd, type FocusRow, type UsageGroup } from '../metering/focus.js';

const FORMULA_START = /^[=+\-@\t\r]/;
const DECIMAL = /^-?\d+(\.\d+)?$/;

/** One cell: neutralised when a spreadsheet would run it, quoted when it holds a comma, quote or line break. */
export function csvCell(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '';
  let s = String(v);
  if (typeof v === 'string' && FORMULA_START.test(s) && !DECIMAL.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Rows of cells as CSV text, one line each, ending with a line break. */
export function csvText(rows: readonly (readonly (string | number | null | undefined)[])[]): string {
  return rows.map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
}

/** `usage export --format csv`: one row per period, model and principal, in CSV_COLUMNS. */
export function usageExportCsv(groups: readonly UsageGroup[]): string {
  return csvText([
    CSV_COLUMNS,
    ...groups.map((g) => [g.periodStart, g.periodEnd, g.user, g.teams.join(';'), g.costCenter, g.provider, g.model, g.tier, g.requests, g.inputTokens, g.outputTokens, g.cachedInputTokens, formatMicroUsd(g.costMicroUsd)]),
  ]);
}

/** `usage export --format focus`: the FOCUS 1.2 rows in FOCUS_COLUMNS. */
export function focusExportCsv(rows: readonly FocusRow[]): string {
  return csvText([FOCUS_COLUMNS, ...rows.map((r) => FOCUS_COLUMNS.map((c) => r[c]))]);
}
