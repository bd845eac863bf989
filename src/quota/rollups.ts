/**
 * Day rollups of decision events: what a day's calls add up to per user, set of teams, cost
 * centre, model and tier. One definition for both stores: the Redis scripts add `rollupArgs` to a
 * day's rollup hash in the step that journals the event, and the readers of the embedded journal
 * (`tollgate usage report --data-dir`, the console) add each event with `addEventRollup`, which
 * goes through the same fields, so a report reads the same from either store.
 *
 * A field is `<metric>|<user>|<teams>|<cost centre>|<model>|<tier>`, each dimension URL-encoded
 * (empty when the event has none), teams sorted and joined by `,`: a user in several teams counts
 * once, under the set of their teams, so summing any dimension never counts a call twice. Metrics:
 * `calls` (every decision event), `input_tokens`, `output_tokens`, `cost_micro_usd`,
 * `refused:<code>` (outcome refused), `failed:<code>` (outcome failed), `recovered` (charged by
 * recovery). A day's rollups count the entries whose `at` falls on it. Dry runs (events with
 * `tollgate.dry_run`) add nothing. A Redis rollup hash also has one field that is not a rollup,
 * its version (ROLLUP_VERSION_FIELD).
 */
import type { DecisionRecord } from './store.js';

/** What a rollup row (and a report's row or total) counts. */
export interface UsageFigures {
  calls: number;
  inputTokens: number;
  outputTokens: number;
  costMicroUsd: number;
  /** Calls charged by recovery (at their reservation; no token counts). */
  recovered: number;
  /** Refused calls by error code. */
  refused: Record<string, number>;
  /** Failed calls (bad input, provider or store failure, cancellation) by error code. */
  failed: Record<string, number>;
}

/** One day and combination of dimensions, with its counters. */
export interface UsageRollup extends UsageFigures {
  day: string;
  /** Empty when the event named none (a refusal before authentication, say). */
  user: string;
  /** Sorted as the rollup fields sort them (by their encoded names). */
  teams: string[];
  costCenter: string;
  model: string;
  tier: string;
}

/** One dimension as a rollup field spells it: URL-encoded, empty when absent. */
export const encodeDimension = (v: unknown): string => (typeof v === 'string' ? encodeURIComponent(v) : '');
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** The user, teams and cost centre part of the dimensions (recovery builds its fields from it too). */
export function rollupWho(user: unknown, teams: unknown, costCenter: unknown): string {
  let t = '';
  if (Array.isArray(teams)) {
    const names: string[] = [];
    for (const x of teams as unknown[]) if (typeof x === 'string') names.push(encodeDimension(x));
    t = names.length > 1 ? names.sort().join(',') : (names[0] ?? '');
  }
  return `${encodeDimension(user)}|${t}|${encodeDimension(costCenter)}`;
}

/** The dimensions part of an event's rollup fields: user, teams, cost centre, model, tier. */
function dimensions(event: DecisionRecord): string {
  const model = event['tollgate.model.served'] ?? event['gen_ai.request.model'];
  return `${rollupWho(event['user.id'], event['user.teams'], event['user.cost_center'])}|${encodeDimension(model)}|${encodeDimension(event['tollgate.tier.served'])}`;
}

/**
 * The rollup increments an event adds, as the scripts take them: the dimensions once, then
 * metric, increment, metric, increment... (the hash field is `<metric>|<dimensions>`).
 */
export function rollupArgs(event: DecisionRecord): (string | number)[] {
  // A dry run (an estimate, a token count) is not a call: it is journaled and counts nowhere.
  if (event['tollgate.dry_run'] !== undefined) return [];
  const out: (string | number)[] = [dimensions(event), 'calls', 1];
  const add = (metric: string, n: number) => {
    if (n !== 0) out.push(metric, n);
  };
  add('input_tokens', Math.round(num(event['gen_ai.usage.input_tokens'])));
  add('output_tokens', Math.round(num(event['gen_ai.usage.output_tokens'])));
  add('cost_micro_usd', Math.round(num(event['tollgate.cost_usd']) * 1e6));
  const code = typeof event['error.code'] === 'string' ? (event['error.code'] as string) : 'UNKNOWN';
  if (event.outcome === 'refused') add(`refused:${encodeURIComponent(code)}`, 1);
  if (event.outcome === 'failed') add(`failed:${encodeURIComponent(code)}`, 1);
  if (event['tollgate.settled_by'] === 'recovery' && event.outcome === 'success') add('recovered', 1);
  return out;
}

/** The rollup increments an event adds, as a flat list: field, increment, field, increment... */
export function rollupFields(event: DecisionRecord): (string | number)[] {
  const args = rollupArgs(event);
  const out: (string | number)[] = [];
  for (let i = 1; i < args.length; i += 2) out.push(`${args[i] as string}|${args[0] as string}`, args[i + 1]!);
  return out;
}

/** A new row of `day` and `dims` (the dimensions part of a field); none when `dims` is not five parts. */
function newRow(day: string, dims: string): UsageRollup | undefined {
  const parts = dims.split('|');
  if (parts.length !== 5) return undefined;
  const [user, teams, costCenter, model, tier] = parts as [string, string, string, string, string];
  return {
    day,
    user: decodeURIComponent(user),
    teams: teams ? teams.split(',').map((t) => decodeURIComponent(t)) : [],
    costCenter: decodeURIComponent(costCenter),
    model: decodeURIComponent(model),
    tier: decodeURIComponent(tier),
    calls: 0,
    inputTokens: 0,
    outputTokens: 0,
    costMicroUsd: 0,
    recovered: 0,
    refused: {},
    failed: {},
  };
}

/** The row of `day` and `dims` in `rows` (keyed by `<day>|<dims>`), made when it is new. */
function rowOf(rows: Map<string, UsageRollup>, day: string, dims: string): UsageRollup | undefined {
  const key = `${day}|${dims}`;
  let row = rows.get(key);
  if (row) return row;
  row = newRow(day, dims);
  if (row) rows.set(key, row);
  return row;
}

function addMetric(row: UsageRollup, metric: string, n: number): void {
  if (metric === 'calls') row.calls += n;
  else if (metric === 'input_tokens') row.inputTokens += n;
  else if (metric === 'output_tokens') row.outputTokens += n;
  else if (metric === 'cost_micro_usd') row.costMicroUsd += n;
  else if (metric === 'recovered') row.recovered += n;
  else if (metric.startsWith('refused:')) {
    const code = decodeURIComponent(metric.slice(8));
    row.refused[code] = (row.refused[code] ?? 0) + n;
  } else if (metric.startsWith('failed:')) {
    const code = decodeURIComponent(metric.slice(7));
    row.failed[code] = (row.failed[code] ?? 0) + n;
  }
}

/**
 * The field of a rollup hash that is not a rollup: its version, the link of a journal entry that
 * added to the hash, written in the same script step (redisScripts.ts, `rollup`) when the hash is
 * made and on every write into a day that is over by Redis's own clock, never on a write into the
 * day Redis calls today. So an unchanged version means an unchanged hash only for a day that was
 * over when the hash was read: a reader may keep such a hash's rows and check this one field
 * before using them again (admin/redisRollups.ts), and reads the last two days whole. A hash
 * written before this field existed has none until a write gives it one (the first write of a new
 * row, or a write into its day once that day is over).
 */
export const ROLLUP_VERSION_FIELD = '#';

/** One rollup hash read whole. */
export interface RollupHash {
  day: string;
  /** Its ROLLUP_VERSION_FIELD as read in the same reply; none when it has none. */
  version?: string;
  /** Its rows, sorted by dimensions; read-only (a reader that keeps them hands them out again). */
  rows: UsageRollup[];
  /** Each row's dimensions as the fields spell them (the sort key). */
  dims: string[];
}

/** The dimensions of a field, decoded: what rows of any day with the same dimensions share. */
export type RollupNames = Map<string, Pick<UsageRollup, 'user' | 'teams' | 'costCenter' | 'model' | 'tier'> | null>;

/**
 * A day's rollup hash from its fields and values as HGETALL sends them: field, value, field,
 * value... `names` keeps the decoded dimensions between the hashes of one read (the same users
 * come back every day); rows share their `teams` arrays through it, which no reader changes.
 */
export function rollupHash(day: string, flat: readonly string[], names: RollupNames = new Map()): RollupHash {
  const byDims = new Map<string, UsageRollup>();
  let version: string | undefined;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const field = flat[i]!;
    const bar = field.indexOf('|');
    if (bar < 0) {
      if (field === ROLLUP_VERSION_FIELD) version = flat[i + 1];
      continue;
    }
    const dims = field.slice(bar + 1);
    let row = byDims.get(dims);
    if (!row) {
      let n = names.get(dims);
      if (n === undefined) {
        const r = newRow(day, dims);
        n = r ? { user: r.user, teams: r.teams, costCenter: r.costCenter, model: r.model, tier: r.tier } : null;
        names.set(dims, n);
      }
      if (n === null) continue;
      row = { day, ...n, calls: 0, inputTokens: 0, outputTokens: 0, costMicroUsd: 0, recovered: 0, refused: {}, failed: {} };
      byDims.set(dims, row);
    }
    const v = Number(flat[i + 1]);
    // The four metrics of every call, told apart by length and prefix without cutting the field.
    if (bar === 5 && field.startsWith('calls')) row.calls += v;
    else if (bar === 12 && field.startsWith('input_tokens')) row.inputTokens += v;
    else if (bar === 13 && field.startsWith('output_tokens')) row.outputTokens += v;
    else if (bar === 14 && field.startsWith('cost_micro_usd')) row.costMicroUsd += v;
    else addMetric(row, field.slice(0, bar), v);
  }
  const dims = [...byDims.keys()].sort();
  return { day, version, rows: dims.map((d) => byDims.get(d)!), dims };
}

function addRow(to: UsageRollup, r: UsageRollup): void {
  to.calls += r.calls;
  to.inputTokens += r.inputTokens;
  to.outputTokens += r.outputTokens;
  to.costMicroUsd += r.costMicroUsd;
  to.recovered += r.recovered;
  for (const [code, n] of Object.entries(r.refused)) to.refused[code] = (to.refused[code] ?? 0) + n;
  for (const [code, n] of Object.entries(r.failed)) to.failed[code] = (to.failed[code] ?? 0) + n;
}

/**
 * The rows of rollup hashes summed per day and dimensions, sorted by day, then dimensions (the
 * dimensions as their fields spell them). A day with one hash (always, on a single node) gives its rows as
 * they are, not copied; several (a cluster's lines) are added up into new rows.
 */
export function mergeRollupHashes(hashes: readonly RollupHash[]): UsageRollup[] {
  const byDay = new Map<string, RollupHash[]>();
  for (const h of hashes) {
    if (h.rows.length === 0) continue;
    const list = byDay.get(h.day);
    if (list) list.push(h);
    else byDay.set(h.day, [h]);
  }
  const out: UsageRollup[] = [];
  for (const day of [...byDay.keys()].sort()) {
    const list = byDay.get(day)!;
    if (list.length === 1) {
      for (const r of list[0]!.rows) out.push(r);
      continue;
    }
    const sum = new Map<string, UsageRollup>();
    for (const h of list) {
      h.rows.forEach((r, i) => {
        const m = sum.get(h.dims[i]!);
        if (m) addRow(m, r);
        else sum.set(h.dims[i]!, { ...r, teams: [...r.teams], refused: { ...r.refused }, failed: { ...r.failed } });
      });
    }
    for (const d of [...sum.keys()].sort()) out.push(sum.get(d)!);
  }
  return out;
}

/** Adds one decision event, committed on `day`, into `rows`: what `rollupArgs` adds to that day's rollup hash. */
export function addEventRollup(rows: Map<string, UsageRollup>, day: string, event: DecisionRecord): void {
  const args = rollupArgs(event);
  if (args.length === 0) return;
  const row = rowOf(rows, day, args[0] as string)!;
  for (let i = 1; i < args.length; i += 2) addMetric(row, args[i] as string, args[i + 1] as number);
}
