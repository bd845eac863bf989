/**
 * What the console's pages show, read from the record the gateway already keeps (no database of
 * its own): the journal's day rollups (the Redis store's rollup hashes, or the embedded journal's
 * decisions rolled up the way `tollgate usage report` does it, through the same functions), the
 * decision events of the journal, and the live ledger's counters.
 */
import type { Gateway } from '../gateway/gateway.js';
import type { DecisionEvent } from '../metering/events.js';
import { explainCall, explainRequest, formatExplanation } from '../policy/explain.js';
import type { Policy } from '../policy/load.js';
import { budgetScope } from '../policy/schema.js';
import type { UsageMap } from '../policy/simulate.js';
import type { Principal } from '../identity/principal.js';
import { RedisQuotaStore } from '../quota/redis.js';
import { GatewayError } from '../errors.js';
import { isJournalDir, type Decision } from '../admin/journalReader.js';
import { addFigures, buildReport, dayOf, periodOf, refusalReport, REPORT_DIMENSIONS, type Decisions, type RefusalRow, type ReportDimension, type ReportFigures, type ReportRow } from '../admin/report.js';
import { JournalRollups } from '../admin/journalRollups.js';
import { RedisRefusals } from '../admin/redisRefusals.js';
import { RedisRollups } from '../admin/redisRollups.js';
import { decisionsOf } from '../admin/sources.js';
import type { UsageRollup } from '../quota/rollups.js';
import { usageRows, type UsageRow, type UsageSource } from '../admin/usage.js';

const DAY_MS = 86_400_000;
/** The longest custom range the console reads (the Redis rollups live 400 days). */
const MAX_DAYS = 400;
/** Days the trend chart covers when the window is one day. */
const TREND_DAYS_FOR_DAY = 14;

/** Where the console reads from. */
export interface ConsoleSources {
  gateway: Gateway;
  keyPrefix: string;
  /** The embedded store's journal directory, when the gateway keeps one. */
  dataDir?: string;
  /** The embedded journal's day rollups, kept between views (made on first use). */
  rollups?: JournalRollups;
  /** The Redis store's day rollup hashes, kept between views and checked by version (made on first use). */
  redisRollups?: RedisRollups;
  /** The Redis journal's refused calls, kept between views and read on from where the last view stopped (made on first use). */
  redisRefusals?: RedisRefusals;
  now: () => number;
}

export type WindowName = 'day' | 'week' | 'month' | 'custom';
export const WINDOWS: readonly WindowName[] = ['day', 'week', 'month', 'custom'];

/** UTC days `start` (inclusive) to `end` (exclusive), `YYYY-MM-DD`. */
export interface DayRange {
  window: WindowName;
  start: string;
  end: string;
}

const ms = (day: string) => Date.parse(`${day}T00:00:00Z`);
const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;
/** A day of the calendar: Date.parse takes 2026-02-31 for 3 March, which would show other days' figures. */
const isDay = (day: string | undefined): day is string => day !== undefined && DAY_RE.test(day) && !Number.isNaN(ms(day)) && dayOf(ms(day)) === day;

/** The current day, ISO week or month (UTC) that `now` falls in, or the custom days `from` to `to` (both included). */
export function rangeOf(window: string | undefined, now: number, from?: string, to?: string): DayRange {
  const w = (window ?? 'week') as WindowName;
  if (!WINDOWS.includes(w)) throw new GatewayError('INVALID_REQUEST', `The window must be one of ${WINDOWS.join(', ')}.`);
  if (w !== 'custom') return { window: w, ...periodOf(dayOf(now), w) };
  if (!isDay(from) || !isDay(to) || from > to) {
    throw new GatewayError('INVALID_REQUEST', 'A custom window needs from and to, as YYYY-MM-DD days of the calendar, with from on or before to.');
  }
  const end = dayOf(ms(to) + DAY_MS);
  if ((ms(end) - ms(from)) / DAY_MS > MAX_DAYS) throw new GatewayError('INVALID_REQUEST', `A custom window covers at most ${MAX_DAYS} days.`);
  return { window: 'custom', start: from, end };
}

/** Where the decisions are: the Redis journal, the embedded one, or none (an in-memory store keeps no record). */
export function journalKind(src: ConsoleSources): 'redis' | 'embedded' | 'none' {
  if (src.gateway.store instanceof RedisQuotaStore) return 'redis';
  return src.dataDir && isJournalDir(src.dataDir) ? 'embedded' : 'none';
}

/** Each request's decision once (a Redis recovery may carry one on several lines). */
async function* once(all: Decisions): AsyncGenerator<Decision> {
  const seen = new Set<string>();
  for await (const d of all) {
    const id = d.event['request.id'];
    if (seen.has(id)) continue;
    seen.add(id);
    yield d;
  }
}

/** Every decision the journal holds, oldest first. */
export async function* decisions(src: ConsoleSources): AsyncGenerator<Decision> {
  const kind = journalKind(src);
  if (kind === 'redis') {
    const { redisDecisions } = await import('../admin/redisJournal.js');
    yield* once(redisDecisions(src.gateway.store as RedisQuotaStore));
  } else if (kind === 'embedded') {
    yield* once(decisionsOf({ kind: 'journal', dir: src.dataDir! }, () => undefined, {}));
  }
}

/** The day rollups of a range, as `tollgate usage report` reads them from the same store. */
export async function rollupsIn(src: ConsoleSources, range: { start: string; end: string }): Promise<UsageRollup[]> {
  const kind = journalKind(src);
  if (kind === 'redis') return (src.redisRollups ??= new RedisRollups(src.gateway.store as RedisQuotaStore, { now: src.now })).read(range.start, dayOf(ms(range.end) - DAY_MS));
  if (kind === 'embedded') return (src.rollups ??= new JournalRollups(src.dataDir!)).read(range.start, range.end);
  return [];
}

/** One report row per value of a dimension over the whole range (periods merged). */
export type Breakdown = ReportRow[];

export interface TrendPoint {
  day: string;
  calls: number;
  tokens: number;
  costMicroUsd: number;
}

export interface Overview {
  range: DayRange;
  journal: 'redis' | 'embedded' | 'none';
  total: ReportFigures;
  by: Record<ReportDimension, Breakdown>;
  notes: string[];
  /** One point per day, zeros included: the range, or the last 14 days for a one-day window. */
  trend: TrendPoint[];
}

function merged(rows: ReportRow[], range: DayRange): ReportRow[] {
  const out = new Map<string, ReportRow>();
  for (const r of rows) {
    const m = out.get(r.key);
    if (!m) out.set(r.key, { ...r, periodStart: range.start, periodEnd: range.end, refused: { ...r.refused }, failed: { ...r.failed } });
    else addFigures(m, r);
  }
  return [...out.values()].sort((a, b) => b.costMicroUsd - a.costMicroUsd || b.calls - a.calls || (a.key < b.key ? -1 : 1));
}

function trendOf(rollups: UsageRollup[], start: string, end: string): TrendPoint[] {
  const byDay = new Map<string, TrendPoint>();
  for (let t = ms(start); t < ms(end); t += DAY_MS) byDay.set(dayOf(t), { day: dayOf(t), calls: 0, tokens: 0, costMicroUsd: 0 });
  for (const r of rollups) {
    const p = byDay.get(r.day);
    if (!p) continue;
    p.calls += r.calls;
    p.tokens += r.inputTokens + r.outputTokens;
    p.costMicroUsd += r.costMicroUsd;
  }
  return [...byDay.values()];
}

/** Spend, tokens and calls in the range by cost centre, team, user, model and tier, with the daily trend. */
export async function overview(src: ConsoleSources, range: DayRange): Promise<Overview> {
  const trendStart = range.window === 'day' ? dayOf(ms(range.end) - TREND_DAYS_FOR_DAY * DAY_MS) : range.start;
  const all = await rollupsIn(src, { start: trendStart, end: range.end });
  const rollups = all.filter((r) => r.day >= range.start && r.day < range.end);
  const periodWindow = range.window === 'custom' ? 'day' : range.window;
  const by = {} as Record<ReportDimension, Breakdown>;
  let total: ReportFigures | undefined;
  const notes: string[] = [];
  for (const dim of REPORT_DIMENSIONS) {
    const report = buildReport(rollups, dim, periodWindow);
    by[dim] = merged(report.rows, range);
    total ??= report.total;
    notes.push(...report.notes);
  }
  return { range, journal: journalKind(src), total: total!, by, notes, trend: trendOf(all, trendStart, range.end) };
}

// -------------------------------------------------------------------------------------------------
// Budgets

export interface BudgetLine extends UsageRow {
  /** Usage per hour since the window began, in the budget's unit. */
  burnPerHour: number;
  /** When the line runs out at that rate (ISO); none when it does not before the reset. */
  exhaustsAt?: string;
  /** Share of the limit used, reserved and projected at the burn rate until the reset (1 = exactly the limit). */
  risk: number;
}

/** The scopes the budgets page filters by: every scope a budget may have, as the policy schema names them. */
export const BUDGET_SCOPES: readonly string[] = budgetScope.options;

/** Every budget line with usage in its current window, riskiest first; `scope` keeps one scope. */
export async function budgetLines(src: ConsoleSources, scope?: string): Promise<BudgetLine[]> {
  if (scope !== undefined && !BUDGET_SCOPES.includes(scope)) throw new GatewayError('INVALID_REQUEST', `The scope must be one of ${BUDGET_SCOPES.join(', ')}, got ${scope}.`);
  const store = src.gateway.store as unknown as Partial<UsageSource>;
  if (typeof store.listUsage !== 'function') return [];
  const now = src.now();
  const policy = src.gateway.policy;
  const rows = await usageRows(policy, store as UsageSource, src.keyPrefix, now);
  return rows
    .filter((r) => !scope || r.scope === scope)
    .map((r) => {
      const hours = Math.max((now - Date.parse(r.windowStart)) / 3_600_000, 1 / 60);
      const burnPerHour = r.used / hours;
      const reset = Date.parse(r.resetsAt);
      const hoursLeft = Math.max(0, (reset - now) / 3_600_000);
      const line: BudgetLine = { ...r, burnPerHour, risk: r.limit > 0 ? (r.used + r.reserved + burnPerHour * hoursLeft) / r.limit : 0 };
      if (r.remaining <= 0) line.exhaustsAt = new Date(now).toISOString();
      else if (burnPerHour > 0) {
        const at = now + (r.remaining / burnPerHour) * 3_600_000;
        if (at < reset) line.exhaustsAt = new Date(at).toISOString();
      }
      return line;
    })
    .sort((a, b) => b.risk - a.risk || a.budgetId.localeCompare(b.budgetId) || a.subject.localeCompare(b.subject));
}

// -------------------------------------------------------------------------------------------------
// Refusals

export interface RefusalSummary {
  rows: RefusalRow[];
  total: number;
  notes: string[];
  perDay: { day: string; refusals: number }[];
  /** The newest refused calls, newest first. */
  recent: { id: string; at: string; user: string; code: string; rule: string; budget: string; reason: string }[];
}

const RECENT = 100;

/** Who was refused in the range, by which rule or budget, with which code; per day; and the latest ones. */
export async function refusals(src: ConsoleSources, range: DayRange): Promise<RefusalSummary> {
  const from = ms(range.start);
  const to = ms(range.end);
  let refused = await refusedIn(src, from, to);
  if (!refused) {
    // Too many to keep: a pass over every decision, each time.
    refused = [];
    for await (const d of decisions(src)) if (d.event.outcome === 'refused' && d.at >= from && d.at < to) refused.push(d);
  }
  const report = await refusalReport(refused, ['user', 'rule', 'budget', 'code'], { from, to });
  const perDay = new Map<string, number>();
  for (let t = from; t < to; t += DAY_MS) perDay.set(dayOf(t), 0);
  for (const d of refused) perDay.set(dayOf(d.at), (perDay.get(dayOf(d.at)) ?? 0) + 1);
  const recent = refused
    .slice(-RECENT)
    .reverse()
    .map((d) => ({
      id: d.event['request.id'],
      at: new Date(d.at).toISOString(),
      user: d.event['user.id'] ?? '',
      code: d.event['error.code'] ?? '',
      rule: d.event['policy.rule_id'] ?? '',
      budget: d.event['policy.budget_id'] ?? '',
      reason: d.event.reason ?? '',
    }));
  return { ...report, perDay: [...perDay].map(([day, n]) => ({ day, refusals: n })), recent };
}

/**
 * The decisions of refused calls committed from `from` to `to` (epoch ms), in journal order, as a
 * pass over every decision finds them; kept between views (the embedded journal's with its
 * rollups), so a view reads only what was written since the last; none when there are too many
 * to keep (tens of thousands), or no journal.
 */
export async function refusedIn(src: ConsoleSources, from: number, to: number): Promise<Decision[] | undefined> {
  const kind = journalKind(src);
  if (kind === 'redis') return (src.redisRefusals ??= new RedisRefusals(src.gateway.store as RedisQuotaStore)).refused(from, to);
  if (kind === 'embedded') return (src.rollups ??= new JournalRollups(src.dataDir!)).refused(from, to);
  return undefined;
}

/**
 * The decision of one request, if the journal holds it: read from the entries (Redis) or segments
 * (embedded) whose request ids hash like it, as noted by the passes that keep the refusals and
 * rollups; by a pass over the journal when Redis held too many decisions to note.
 */
export async function findDecision(src: ConsoleSources, requestId: string): Promise<Decision | undefined> {
  const kind = journalKind(src);
  if (kind === 'redis') {
    const found = await (src.redisRefusals ??= new RedisRefusals(src.gateway.store as RedisQuotaStore)).find(requestId);
    if (found !== null) return found;
  }
  if (kind === 'embedded') return (src.rollups ??= new JournalRollups(src.dataDir!)).find(requestId);
  for await (const d of decisions(src)) if (d.event['request.id'] === requestId) return d;
  return undefined;
}

/** The principal a decision event names (roles are not in events, so none), or none for an unidentified caller. */
export function principalOfEvent(e: DecisionEvent): Principal | undefined {
  if (!e['user.id']) return undefined;
  const p: Principal = {
    user: e['user.id'],
    teams: [...(e['user.teams'] ?? [])],
    groups: [...(e['user.groups'] ?? [])],
    roles: [],
    authMethod: (e['auth.method'] as Principal['authMethod'] | undefined) ?? 'api_key',
  };
  if (e['user.cost_center']) p.costCenter = e['user.cost_center'];
  return p;
}

/**
 * `tollgate explain` for the call a decision event records, under the policy serving now and the
 * caller's usage now: what would decide the same call at this moment, and what would change it.
 */
export async function explainDecision(src: ConsoleSources, policy: Policy, e: DecisionEvent): Promise<string | undefined> {
  const principal = principalOfEvent(e);
  if (!principal) return undefined;
  const usage: Record<string, { used: number; reserved: number }> = Object.create(null);
  try {
    for (const b of await src.gateway.myBudget(principal)) usage[`${b.id}@${b.subject}`] = { used: b.used, reserved: b.reserved };
  } catch {
    // The store is unreachable: explained as if every budget were unused, which the text says.
  }
  const named = e['tollgate.provider.requested'] ? e['gen_ai.request.model'] : undefined;
  const request = explainRequest({ tier: named ? undefined : e['tollgate.tier.requested'], model: named, maxTokens: e['gen_ai.request.max_tokens'] });
  // The prompt is not kept: the call is explained with the input it was reserved with.
  const counted = e['tollgate.input_counted']?.filter((c) => c.exact);
  const inputTokens = counted?.length ? new Map(counted.map((c) => [c.model, c.tokens] as const)) : undefined;
  const estimatedInputTokens = e['tollgate.estimated_input_tokens'] || undefined;
  return formatExplanation(explainCall({ policy, principal, request, usage: usage as UsageMap, now: src.now(), inputTokens, estimatedInputTokens }));
}
