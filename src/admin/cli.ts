/**
 * `tollgate usage`: operator commands on the shared ledger.
 *
 *   tollgate usage [show] [--budget B] [--subject S] [--json]   usage in the current window
 *   tollgate usage top [--budget B] [--limit N] [--json]        the biggest consumers
 *   tollgate usage adjust --budget B --subject S --amount N     add N to usage, in the budget's unit (--amount=-N subtracts)
 *   tollgate usage credit --budget B --subject S --amount N     give N back (same as adjust with -N)
 *   tollgate usage export [source] --from <ISO> --to <ISO> [--format csv|focus] [--granularity day|month]
 *                         [--user U] [--team T] [--cost-center C] [--json]
 *                                                               usage and cost per period x model x principal, from decision events
 *   tollgate usage report [source] --by team|cost-center|user|model|tier --window day|week|month
 *                         [--from <ISO>] [--to <ISO>] [--format table|csv|json]
 *                                                               tokens, cost, calls, refusals and failures per period
 *   tollgate usage refusals [source] --from <ISO> --to <ISO> [--by user,team,rule,budget,code] [--format table|csv|json]
 *                                                               who was refused, by which rule or budget, with which code
 *
 * show, top, adjust and credit need the shared store (`--redis` or REDIS_URL): the embedded store
 * lives inside one server process and cannot be reached from another. export, report and refusals
 * read decision events from one source: `--data-dir <dir>` (the embedded journal; the default, in
 * TOLLGATE_DATA_DIR or ./tollgate-data), `--redis <url>` (the Redis journal) or `--events <file>...`
 * (event logs). The ledger keeps totals per budget; the events keep the model and cost of every call.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayError } from '../errors.js';
import { settingsFromEnv } from '../main.js';
import { loadPolicyFile } from '../policy/load.js';
import { aggregateUsage, toFocusRows, type Granularity } from '../metering/focus.js';
import type { DecisionEvent } from '../metering/events.js';
import { RedisQuotaStore } from '../quota/redis.js';
import { focusExportCsv, usageExportCsv } from './csv.js';
import { defaultDataDir, sourceFrom, type HeldFrom, type Source, type SourceOptions } from './journalReader.js';
import {
  buildReport,
  dayOf,
  DEFAULT_REFUSAL_DIMENSIONS,
  formatRefusals,
  formatReport,
  REFUSAL_DIMENSIONS,
  refusalReport,
  REPORT_DIMENSIONS,
  REPORT_WINDOWS,
  rollupDecisions,
  type Decisions,
  type OutputFormat,
  type RefusalDimension,
  type ReportDimension,
  type ReportWindow,
  type TimeRange,
  type UsageReport,
} from './report.js';
import { budgetsInStore, requireSamePolicy, requireSourceMatches } from './mismatch.js';
import { decisionsOf } from './sources.js';
import { isoTime } from '../isoTime.js';

/** A Redis URL as messages show it: the password masked. */
function maskPassword(url: string): string {
  return url.replace(/(\/\/[^/:@\s]*:)[^@\s]*@/, '$1***@');
}
import { adjustUsage, topConsumers, usageRows, type UsageRow } from './usage.js';

function table(rows: UsageRow[]): string {
  if (rows.length === 0) return 'no usage in the current window\n';
  // To the micro-dollar, the ledger's unit, as the reports and the console print it.
  const fmt = (r: UsageRow, n: number) => (r.unit === 'usd' ? `$${n.toFixed(6)}` : String(n));
  const lines = rows.map((r) => [r.budgetId, r.scope, r.subject, fmt(r, r.used), fmt(r, r.reserved), fmt(r, r.remaining), fmt(r, r.limit), r.resetsAt]);
  const head = ['budget', 'scope', 'subject', 'used', 'reserved', 'remaining', 'limit', 'resets'];
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

/** Runs a usage subcommand; returns what to print. Throws GatewayError on bad input or store trouble. */
export async function runUsageCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      policy: { type: 'string' },
      redis: { type: 'string' },
      budget: { type: 'string' },
      subject: { type: 'string' },
      limit: { type: 'string' },
      amount: { type: 'string' },
      now: { type: 'string' },
      json: { type: 'boolean' },
      events: { type: 'string', multiple: true },
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string' },
      granularity: { type: 'string' },
      user: { type: 'string' },
      team: { type: 'string' },
      'cost-center': { type: 'string' },
      'data-dir': { type: 'string' },
      by: { type: 'string' },
      window: { type: 'string' },
      'allow-other-budgets': { type: 'boolean' },
      trimmed: { type: 'boolean' },
    },
  });
  const [verb = 'show', ...files] = positionals;
  return usageCommand(verb, values, files, env);
}

/** The options of the usage subcommands, as parsed (each subcommand reads its own). */
export interface UsageValues extends ExportValues {
  policy?: string;
  budget?: string;
  subject?: string;
  limit?: string;
  amount?: string;
  now?: string;
  /** Read a store holding usage of budgets the policy does not declare. */
  'allow-other-budgets'?: boolean;
}

/** Runs one usage subcommand; `files` are event logs named without --events. Returns what to print. */
export async function usageCommand(verb: string, values: UsageValues, files: string[], env: NodeJS.ProcessEnv): Promise<string> {
  if (verb === 'export') return exportUsage(values, files, env);
  if (verb === 'report') return usageReport(values, files, env);
  if (verb === 'refusals') return refusals(values, files, env);
  const settings = settingsFromEnv(env);
  const policy = loadPolicyFile(values.policy ? resolve(values.policy) : settings.policyPath);
  const url = values.redis ?? settings.redisUrl;
  const clusterNodes = values.redis ? undefined : settings.redisClusterNodes;
  if (!url && !clusterNodes) throw new GatewayError('INVALID_REQUEST', 'tollgate usage reads the shared ledger: pass --redis <url> or set REDIS_URL or REDIS_CLUSTER_NODES.');
  const now = values.now ? isoTime('--now', values.now) : Date.now();
  // With a past --now the store acts at that time too, so an adjustment to a window that has ended
  // since (a correction of last week's usage, say) is made and kept as long as that window's counter
  // would be; on the real clock the script would take it as nothing, the window being over. Never a
  // clock ahead of the real one: the store's scripts recover reservations that expired by their
  // clock, and a future clock would recover calls still in flight.
  const store = new RedisQuotaStore({
    url,
    clusterNodes,
    prefix: settings.keyPrefix,
    commandTimeoutMs: settings.storeTimeoutMs,
    // The CLI has no event sinks: recoveries are the gateways' (their sinks hear them).
    recover: false,
    logger: { info() {}, warn() {}, error() {} },
    ...(values.now ? { now: () => Math.min(now, Date.now()) } : {}),
  });
  const out = (rows: UsageRow[]) => (values.json ? `${JSON.stringify(rows, null, 2)}\n` : table(rows));
  try {
    if (!['show', 'top', 'adjust', 'credit'].includes(verb)) {
      throw new GatewayError('INVALID_REQUEST', `unknown usage command "${verb}": show, top, adjust, credit, export, report or refusals`);
    }
    // Read through the wrong policy, the ledger would look empty: check the store holds this policy's budgets.
    const where = `The store ${url ? maskPassword(url) : `cluster ${clusterNodes!.map(maskPassword).join(',')}`} (prefix ${settings.keyPrefix})`;
    requireSamePolicy(policy, await budgetsInStore(store, settings.keyPrefix), where, values['allow-other-budgets']);
    switch (verb) {
      case 'show':
        return out(await usageRows(policy, store, settings.keyPrefix, now, { budgetId: values.budget, subject: values.subject }));
      case 'top': {
        const limit = Number(values.limit ?? 10);
        if (!Number.isInteger(limit) || limit < 1) throw new GatewayError('INVALID_REQUEST', `--limit must be a positive whole number, got ${values.limit}`);
        return out(await topConsumers(policy, store, settings.keyPrefix, now, values.budget, limit));
      }
      case 'adjust':
      case 'credit': {
        if (!values.budget || values.subject === undefined || values.amount === undefined) {
          throw new GatewayError('INVALID_REQUEST', `usage: tollgate usage ${verb} --budget <id> --subject <subject> --amount <n>`);
        }
        // Decimal only: Number() also reads "0x10", "1e3" and "" (as 16, 1000 and 0).
        if (!/^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/.test(values.amount)) throw new GatewayError('INVALID_REQUEST', `--amount must be a decimal number in the budget's unit (tokens, or USD), got ${JSON.stringify(values.amount)}`);
        const amount = Number(values.amount);
        const delta = verb === 'credit' ? -amount : amount;
        return out([await adjustUsage(policy, store, settings.keyPrefix, now, values.budget, values.subject, delta)]);
      }
      default:
        throw new GatewayError('INVALID_REQUEST', `unknown usage command "${verb}": show, top, adjust, credit, export, report or refusals`);
    }
  } finally {
    await store.close();
  }
}

interface ExportValues extends SourceOptions {
  from?: string;
  to?: string;
  format?: string;
  granularity?: string;
  user?: string;
  team?: string;
  'cost-center'?: string;
  json?: boolean;
  by?: string;
  window?: string;
  /** Read a journal trimmed by retention or archived after --from as it is (requireHeldFrom). */
  trimmed?: boolean;
}

/** The source the options name, once it is known to hold the data of the policy they resolve (src/admin/mismatch.ts). */
async function checkedSource(values: UsageValues, files: string[], env: NodeJS.ProcessEnv): Promise<Source> {
  const source = sourceFrom(values, files, defaultDataDir(env));
  if (source.kind !== 'events') {
    const policy = loadPolicyFile(values.policy ? resolve(values.policy) : settingsFromEnv(env).policyPath);
    await requireSourceMatches(policy, source, env, values['allow-other-budgets']);
  }
  return source;
}

/** Decisions of the source, with lines that are not JSON in event files reported on stderr. */
/** The decisions of `source`; a journal trimmed or archived after `from` is refused unless --trimmed (requireHeldFrom). */
function read(source: Source, env: NodeJS.ProcessEnv, held?: HeldFrom): Decisions {
  return decisionsOf(source, (message) => process.stderr.write(`tollgate: ${message}\n`), env, held);
}

/** --from and --to as epoch ms (`from` before `to`, each an ISO time: src/isoTime.ts); each required unless `optional`. */
function timeRange(values: ExportValues, usage: string, optional = false): TimeRange {
  if (!optional && (!values.from || !values.to)) throw new GatewayError('INVALID_REQUEST', usage);
  const from = values.from === undefined ? undefined : isoTime('--from', values.from);
  const to = values.to === undefined ? undefined : isoTime('--to', values.to);
  if (from !== undefined && to !== undefined && from >= to) {
    throw new GatewayError('INVALID_REQUEST', `--from and --to must be ISO times with --from before --to, got ${values.from ?? '(none)'} and ${values.to ?? '(none)'}`);
  }
  return { from, to };
}

function outputFormat(value: string | undefined, json: boolean | undefined): OutputFormat {
  const format = value ?? (json ? 'json' : 'table');
  if (format !== 'table' && format !== 'csv' && format !== 'json') throw new GatewayError('INVALID_REQUEST', `--format must be table, csv or json, got ${format}`);
  return format;
}

/** `usage export`: decision events to CSV or FOCUS rows. */
async function exportUsage(values: UsageValues, files: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const usage = 'usage: tollgate usage export --events <file>... --from <ISO> --to <ISO> [--format csv|focus] (or --data-dir <dir> | --redis <url> instead of --events)';
  const { from, to } = timeRange(values, usage);
  const format = values.format ?? 'csv';
  if (format !== 'csv' && format !== 'focus') throw new GatewayError('INVALID_REQUEST', `--format must be csv or focus, got ${format}`);
  const granularity = (values.granularity ?? 'day') as Granularity;
  if (granularity !== 'day' && granularity !== 'month') throw new GatewayError('INVALID_REQUEST', `--granularity must be day or month, got ${values.granularity}`);
  const source = await checkedSource(values, files, env);
  // The events committed in the window (the time the report counts them at too), then grouped.
  const events = [];
  const committed = new Map<DecisionEvent, number>();
  for await (const d of read(source, env, { from, trimmed: values.trimmed })) {
    if (d.at >= from! && d.at < to!) {
      events.push(d.event);
      committed.set(d.event, d.at);
    }
  }
  const groups = aggregateUsage(events, { from: from!, to: to!, granularity, user: values.user, team: values.team, costCenter: values['cost-center'] }, (e) => committed.get(e)!);
  if (format === 'focus') {
    const rows = toFocusRows(groups);
    return values.json ? `${JSON.stringify(rows, null, 2)}\n` : focusExportCsv(rows);
  }
  return values.json ? `${JSON.stringify(groups, null, 2)}\n` : usageExportCsv(groups);
}

/** `usage report`: rollups per period and dimension, with the ledger's charges beside them. */
async function usageReport(values: UsageValues, files: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const usage = 'usage: tollgate usage report --by team|cost-center|user|model|tier --window day|week|month [--from <ISO>] [--to <ISO>] [--format table|csv|json] [--data-dir <dir> | --redis <url> | --events <file>...]';
  const by = (values.by ?? 'user') as ReportDimension;
  if (!REPORT_DIMENSIONS.includes(by)) throw new GatewayError('INVALID_REQUEST', `--by must be one of ${REPORT_DIMENSIONS.join(', ')}, got ${values.by}; ${usage}`);
  const window = (values.window ?? 'day') as ReportWindow;
  if (!REPORT_WINDOWS.includes(window)) throw new GatewayError('INVALID_REQUEST', `--window must be one of ${REPORT_WINDOWS.join(', ')}, got ${values.window}; ${usage}`);
  const range = timeRange(values, usage, true);
  const format = outputFormat(values.format, values.json);
  const source = await checkedSource(values, files, env);
  if (source.kind === 'redis') return formatReport(await redisReport(source.url, env, range, by, window), format);
  const { rollups, charges } = await rollupDecisions(read(source, env, { from: range.from, trimmed: values.trimmed }), range);
  return formatReport({ ...buildReport(rollups, by, window), charges }, format);
}

/**
 * Days of clock difference allowed between this machine and the gateways that wrote the rollups:
 * a rollup hash lives its retention from its last write, and a gateway writes into the day its
 * clock is on.
 */
const ROLLUP_SLACK_DAYS = 2;

/**
 * The report from the Redis store's day rollups (the charges are not in them): --from and --to
 * widened to whole UTC days, and narrowed to the days that can hold a rollup (the store keeps
 * them TOLLGATE_ROLLUP_DAYS, 400 by default), which are all the days read without them. A range
 * of centuries would otherwise read a hash for each of its days.
 */
async function redisReport(url: string, env: NodeJS.ProcessEnv, range: TimeRange, by: ReportDimension, window: ReportWindow): Promise<UsageReport> {
  const { openRedisJournal, redisRollups } = await import('./redisJournal.js');
  const { rollupTtlMs } = settingsFromEnv(env);
  const now = Date.now();
  const kept = { from: now - rollupTtlMs - ROLLUP_SLACK_DAYS * 86_400_000, to: now + ROLLUP_SLACK_DAYS * 86_400_000 };
  const fromDay = dayOf(Math.max(range.from ?? kept.from, kept.from));
  const toDay = dayOf(Math.min((range.to ?? kept.to) - 1, kept.to));
  const store = openRedisJournal(url, env);
  try {
    const report = buildReport(fromDay <= toDay ? await redisRollups(store, fromDay, toDay, env) : [], by, window);
    const whole = (t: number | undefined) => t === undefined || t % 86_400_000 === 0;
    const narrowed = (range.from !== undefined && range.from < kept.from) || (range.to !== undefined && range.to - 1 > kept.to);
    if (narrowed) report.notes.push(`The Redis store keeps day rollups ${rollupTtlMs / 86_400_000} days: this report covers the days ${fromDay} to ${toDay}.`);
    else if (!whole(range.from) || !whole(range.to)) report.notes.push(`The Redis rollups are per UTC day: this report covers the whole days ${fromDay} to ${toDay}.`);
    return report;
  } finally {
    await store.close();
  }
}

/** `usage refusals`: who was refused, by which rule or budget, with which code, how often. */
async function refusals(values: UsageValues, files: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const usage = 'usage: tollgate usage refusals --from <ISO> --to <ISO> [--by user,team,rule,budget,code] [--format table|csv|json] [--data-dir <dir> | --redis <url> | --events <file>...]';
  const range = timeRange(values, usage);
  const by = (values.by ?? DEFAULT_REFUSAL_DIMENSIONS.join(',')).split(',').map((d) => d.trim()) as RefusalDimension[];
  const unknown = by.filter((d) => !REFUSAL_DIMENSIONS.includes(d));
  if (unknown.length || by.length === 0 || new Set(by).size !== by.length) {
    throw new GatewayError('INVALID_REQUEST', `--by takes one or more of ${REFUSAL_DIMENSIONS.join(', ')}, comma-separated, each once; got ${values.by}`);
  }
  const format = outputFormat(values.format, values.json);
  const source = await checkedSource(values, files, env);
  return formatRefusals(await refusalReport(read(source, env, { from: range.from, trimmed: values.trimmed }), by, range), by, format);
}
