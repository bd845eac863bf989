/**
 * Usage rollups and the reports built on them (`tollgate usage report` and `tollgate usage
 * refusals`), from the decisions a source holds (src/admin/journalReader.ts).
 *
 * A rollup row is one UTC day x user x set of teams x cost centre x model x tier, counting calls
 * (every decision), input and output tokens, cost in micro-dollars, calls charged by recovery, and
 * refused and failed calls by error code. The rows are added up by the same function as the Redis
 * journal's daily rollup hashes (src/quota/rollups.ts), so a report reads the same from either
 * store. A call counts on the day its decision was committed (its journal entry's time; from an
 * event file, its start plus its latency). A user in several teams is one row under the set of
 * their teams; `--by team` counts that call under each of them, while the total counts it once.
 */
import { printable } from '../identity/storedKeys.js';
import type { DecisionEvent } from '../metering/events.js';
import { formatMicroUsd } from '../metering/focus.js';
import { addEventRollup, type UsageFigures, type UsageRollup } from '../quota/rollups.js';
import type { DecisionRecord } from '../quota/store.js';
import { csvText } from './csv.js';
import type { Decision } from './journalReader.js';

const DAY_MS = 86_400_000;

export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export type ReportDimension = 'team' | 'cost-center' | 'user' | 'model' | 'tier';
export const REPORT_DIMENSIONS: readonly ReportDimension[] = ['team', 'cost-center', 'user', 'model', 'tier'];
export type ReportWindow = 'day' | 'week' | 'month';
export const REPORT_WINDOWS: readonly ReportWindow[] = ['day', 'week', 'month'];

/** Shown where a call has no value for a dimension (no teams, no cost centre, refused before a model). */
export const NONE = '(none)';

/** The UTC period a day falls in: its first day and the first day after it (`YYYY-MM-DD`). */
export function periodOf(day: string, window: ReportWindow): { start: string; end: string } {
  const t = Date.parse(`${day}T00:00:00Z`);
  const d = new Date(t);
  if (window === 'day') return { start: day, end: dayOf(t + DAY_MS) };
  if (window === 'week') {
    // ISO weeks: Monday to Sunday.
    const start = t - ((d.getUTCDay() + 6) % 7) * DAY_MS;
    return { start: dayOf(start), end: dayOf(start + 7 * DAY_MS) };
  }
  return { start: dayOf(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)), end: dayOf(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)) };
}

function valuesOf(row: UsageRollup, by: ReportDimension): string[] {
  switch (by) {
    case 'team':
      return row.teams.length ? row.teams : [NONE];
    case 'cost-center':
      return [row.costCenter || NONE];
    case 'user':
      return [row.user || NONE];
    case 'model':
      return [row.model || NONE];
    case 'tier':
      return [row.tier || NONE];
  }
}

/** The figures of a report row or total: those of the rollups it adds up. */
export type ReportFigures = UsageFigures;

export interface ReportRow extends ReportFigures {
  periodStart: string;
  periodEnd: string;
  /** The value of the dimension reported by (a team, a user, ...). */
  key: string;
}

/** What the ledger charged each budget over the same decisions, in the budget's unit. */
export interface BudgetCharge {
  budgetId: string;
  unit: string;
  amount: number;
}

export interface UsageReport {
  by: ReportDimension;
  window: ReportWindow;
  rows: ReportRow[];
  /** Each call once, whatever `by` is. */
  total: ReportFigures;
  /** Present when the source holds the charges (the embedded journal, event files). */
  charges?: BudgetCharge[];
  notes: string[];
}

/** Figures of nothing: zero calls. */
export function emptyFigures(): ReportFigures {
  return { calls: 0, inputTokens: 0, outputTokens: 0, costMicroUsd: 0, recovered: 0, refused: {}, failed: {} };
}

/** Adds `r`'s figures into `into`. */
export function addFigures(into: ReportFigures, r: ReportFigures): void {
  into.calls += r.calls;
  into.inputTokens += r.inputTokens;
  into.outputTokens += r.outputTokens;
  into.costMicroUsd += r.costMicroUsd;
  into.recovered += r.recovered;
  for (const c in r.refused) into.refused[c] = (into.refused[c] ?? 0) + r.refused[c]!;
  for (const c in r.failed) into.failed[c] = (into.failed[c] ?? 0) + r.failed[c]!;
}

export const TEAM_FOOTNOTE = 'A call by a user in several teams counts under each of their teams, so the team rows can add up to more than the total; the total counts each call once.';

/** Groups day rollups into periods and by one dimension. */
export function buildReport(rollups: Iterable<UsageRollup>, by: ReportDimension, window: ReportWindow): UsageReport {
  const total = emptyFigures();
  let multiTeam = false;
  // Rows come many to a day: each day's period is found once, and a period's rows are found by
  // the dimension's value alone (no key made per row).
  const periods = new Map<string, { start: string; end: string; rows: Map<string, ReportRow> }>();
  const periodOfDay = new Map<string, { start: string; end: string; rows: Map<string, ReportRow> }>();
  for (const r of rollups) {
    addFigures(total, r);
    if (r.teams.length > 1) multiTeam = true;
    let period = periodOfDay.get(r.day);
    if (!period) {
      const { start, end } = periodOf(r.day, window);
      period = periods.get(start);
      if (!period) periods.set(start, (period = { start, end, rows: new Map() }));
      periodOfDay.set(r.day, period);
    }
    for (const key of valuesOf(r, by)) {
      let row = period.rows.get(key);
      if (!row) period.rows.set(key, (row = { periodStart: period.start, periodEnd: period.end, key, ...emptyFigures() }));
      addFigures(row, r);
    }
  }
  const rows = [...periods.values()].flatMap((p) => [...p.rows.values()]);
  rows.sort((a, b) => a.periodStart.localeCompare(b.periodStart) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const notes = by === 'team' && multiTeam ? [TEAM_FOOTNOTE] : [];
  return { by, window, rows, total, notes };
}

/** A window on decision times: `from` inclusive, `to` exclusive (epoch ms). */
export interface TimeRange {
  from?: number;
  to?: number;
}

function inRange(at: number, range: TimeRange): boolean {
  return (range.from === undefined || at >= range.from) && (range.to === undefined || at < range.to);
}

/** Decisions as a source yields them: read from files at once, or paged from Redis. */
export type Decisions = Iterable<Decision> | AsyncIterable<Decision>;

/** One pass over the decisions: the day rollups, and what the ledger charged each budget. */
export async function rollupDecisions(decisions: Decisions, range: TimeRange): Promise<{ rollups: UsageRollup[]; charges: BudgetCharge[] }> {
  const rows = new Map<string, UsageRollup>();
  const charges = new Map<string, BudgetCharge>();
  for await (const d of decisions) {
    if (!inRange(d.at, range)) continue;
    // A dry run (estimate, token count) adds no rollup (rollupArgs) and charges nothing.
    addEventRollup(rows, dayOf(d.at), d.event as unknown as DecisionRecord);
    for (const c of d.charges) {
      let b = charges.get(c.budgetId);
      if (!b) charges.set(c.budgetId, (b = { budgetId: c.budgetId, unit: c.unit ?? 'tokens', amount: 0 }));
      b.amount += c.amount;
    }
  }
  return { rollups: [...rows.values()], charges: [...charges.values()].sort((a, b) => (a.budgetId < b.budgetId ? -1 : 1)) };
}

// -------------------------------------------------------------------------------------------------
// Refusals

export type RefusalDimension = 'user' | 'team' | 'rule' | 'budget' | 'code';
export const REFUSAL_DIMENSIONS: readonly RefusalDimension[] = ['user', 'team', 'rule', 'budget', 'code'];
export const DEFAULT_REFUSAL_DIMENSIONS: readonly RefusalDimension[] = ['user', 'rule', 'budget', 'code'];

export interface RefusalRow {
  /** The value of each dimension grouped by, in the order asked. */
  keys: Partial<Record<RefusalDimension, string>>;
  refusals: number;
  /** The latest refused call's time (ISO). */
  last: string;
}

/** Who was refused: the user, or for a caller who could not be identified, what they presented. */
export function refusedCaller(e: DecisionEvent): string {
  if (e['user.id']) return e['user.id'];
  const kind = e['auth.credential.kind'];
  if (!kind || kind === 'none') return '(no credential)';
  return `(unidentified ${kind} ${e['auth.credential.fingerprint'] ?? '?'})`;
}

function refusalValues(e: DecisionEvent, dim: RefusalDimension): string[] {
  switch (dim) {
    case 'user':
      return [refusedCaller(e)];
    case 'team':
      return e['user.teams']?.length ? e['user.teams'] : [NONE];
    case 'rule':
      return [e['policy.rule_id'] ?? ''];
    case 'budget':
      return [e['policy.budget_id'] ?? ''];
    case 'code':
      return [e['error.code'] ?? 'UNKNOWN'];
  }
}

/** Refused calls (outcome `refused`; dry runs are not calls) counted by the dimensions asked; `team` counts a refusal under each of the caller's teams. */
export async function refusalReport(decisions: Decisions, by: readonly RefusalDimension[], range: TimeRange): Promise<{ rows: RefusalRow[]; total: number; notes: string[] }> {
  const rows = new Map<string, RefusalRow>();
  let total = 0;
  let multiTeam = false;
  for await (const d of decisions) {
    const e = d.event;
    if (e.outcome !== 'refused' || e['tollgate.dry_run'] !== undefined || !inRange(d.at, range)) continue;
    total += 1;
    if ((e['user.teams']?.length ?? 0) > 1) multiTeam = true;
    let combos: Partial<Record<RefusalDimension, string>>[] = [{}];
    for (const dim of by) combos = combos.flatMap((c) => refusalValues(e, dim).map((v) => ({ ...c, [dim]: v })));
    const time = new Date(d.at).toISOString();
    for (const keys of combos) {
      const id = JSON.stringify(by.map((dim) => keys[dim]));
      const row = rows.get(id);
      if (!row) rows.set(id, { keys, refusals: 1, last: time });
      else {
        row.refusals += 1;
        if (time > row.last) row.last = time;
      }
    }
  }
  const sorted = [...rows.values()].sort((a, b) => b.refusals - a.refusals || JSON.stringify(by.map((d) => a.keys[d])).localeCompare(JSON.stringify(by.map((d) => b.keys[d]))));
  const notes = by.includes('team') && multiTeam ? ['A refusal of a user in several teams counts under each of their teams, so the rows can add up to more than the total.'] : [];
  return { rows: sorted, total, notes };
}

// -------------------------------------------------------------------------------------------------
// Output

export type OutputFormat = 'table' | 'csv' | 'json';

/**
 * A control character shown as its escape (`\x1b`): cells carry what callers chose (a user id from
 * a token claim, the model name a caller sent), and a terminal acts on an escape sequence it prints.
 */
/** Names with their control characters shown as `\xNN` (one rule with `tollgate keys`: identity/storedKeys.ts). */
export { printable };

/** Columns padded to their widest cell; numbers right-aligned. */
function table(head: string[], cells: string[][], numeric: (i: number) => boolean): string {
  const rows = cells.map((r) => r.map(printable));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return (
    [head, ...rows]
      .map((r) =>
        r
          .map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

const codes = (m: Record<string, number>) =>
  Object.entries(m)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([c, n]) => `${c} ${n}`)
    .join(', ');
const sum = (m: Record<string, number>) => Object.values(m).reduce((a, b) => a + b, 0);

const DIMENSION_HEADER: Record<ReportDimension, string> = { team: 'team', 'cost-center': 'cost_center', user: 'user', model: 'model', tier: 'tier' };

function chargeText(c: BudgetCharge): string {
  return c.unit === 'micro_usd' ? `${c.budgetId} ${formatMicroUsd(c.amount)} USD` : `${c.budgetId} ${c.amount} ${c.unit}`;
}

/** The usage report as a table, CSV or JSON. */
export function formatReport(r: UsageReport, format: OutputFormat): string {
  if (format === 'json') return `${JSON.stringify(r, null, 2)}\n`;
  const refusalCodes = [...new Set([...r.rows.flatMap((x) => Object.keys(x.refused))])].sort();
  if (format === 'csv') {
    const head = ['period_start', 'period_end', DIMENSION_HEADER[r.by], 'calls', 'input_tokens', 'output_tokens', 'cost_usd', 'refused', ...refusalCodes.map((c) => `refused_${c}`), 'failed', 'recovered'];
    const line = (start: string, end: string, key: string, f: ReportFigures) => [
      start,
      end,
      key,
      f.calls,
      f.inputTokens,
      f.outputTokens,
      formatMicroUsd(f.costMicroUsd),
      sum(f.refused),
      ...refusalCodes.map((c) => f.refused[c] ?? 0),
      sum(f.failed),
      f.recovered,
    ];
    return csvText([head, ...r.rows.map((x) => line(x.periodStart, x.periodEnd, x.key, x))]);
  }
  const label = (start: string) => (r.window === 'month' ? start.slice(0, 7) : start);
  const head = [r.window === 'week' ? 'week of' : r.window, DIMENSION_HEADER[r.by], 'calls', 'tokens in', 'tokens out', 'cost USD', 'refused', 'failed', 'recovered'];
  const cells = (f: ReportFigures) => [String(f.calls), String(f.inputTokens), String(f.outputTokens), formatMicroUsd(f.costMicroUsd), sum(f.refused) ? `${sum(f.refused)} (${codes(f.refused)})` : '0', String(sum(f.failed)), String(f.recovered)];
  const rows = r.rows.map((x) => [label(x.periodStart), x.key, ...cells(x)]);
  rows.push(['total', '', ...cells(r.total)]);
  let out = r.rows.length ? table(head, rows, (i) => i >= 2 && i !== 6) : 'no decisions in this range\n';
  if (r.charges?.length) out += `ledger charges: ${r.charges.map(chargeText).join('; ')}\n`;
  for (const n of r.notes) out += `* ${n}\n`;
  return out;
}

/** The refusals report as a table, CSV or JSON. */
export function formatRefusals(r: { rows: RefusalRow[]; total: number; notes: string[] }, by: readonly RefusalDimension[], format: OutputFormat): string {
  if (format === 'json') return `${JSON.stringify({ by, ...r }, null, 2)}\n`;
  const head = [...by, 'refusals', 'last'];
  const rows = r.rows.map((x) => [...by.map((d) => x.keys[d] ?? ''), String(x.refusals), x.last]);
  if (format === 'csv') return csvText([head, ...rows]);
  if (r.rows.length === 0) return 'no refusals in this range\n';
  let out = table(
    head,
    rows.map((x) => x.map((c, i) => (i < by.length && c === '' ? '-' : c))),
    (i) => i === by.length,
  );
  out += `${r.total} refused call${r.total === 1 ? '' : 's'}\n`;
  for (const n of r.notes) out += `* ${n}\n`;
  return out;
}
