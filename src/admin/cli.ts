/**
 * `tollgate usage`: operator commands on the shared ledger.
 *
 *   tollgate usage [show] [--budget B] [--subject S] [--json]   usage in the current window
 *   tollgate usage top [--budget B] [--limit N] [--json]        the biggest consumers
 *   tollgate usage adjust --budget B --subject S --amount N     add N to usage, in the budget's unit (--amount=-N subtracts)
 *   tollgate usage credit --budget B --subject S --amount N     give N back (same as adjust with -N)
 *   tollgate usage export --events <file>... --from <ISO> --to <ISO> [--format csv|focus] [--granularity day|month]
 *                         [--user U] [--team T] [--cost-center C] [--json]
 *                                                               usage and cost per period x model x principal, from decision events
 *
 * They need the shared store (`--redis` or REDIS_URL): the embedded store lives inside one server
 * process and cannot be reached from another. `export` reads decision event files instead: the
 * ledger keeps totals per budget, the events keep the model and cost of every call.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayError } from '../errors.js';
import { settingsFromEnv } from '../main.js';
import { loadPolicyFile } from '../policy/load.js';
import { aggregateUsage, focusCsv, parseEventLines, toFocusRows, usageCsv, type Granularity } from '../metering/focus.js';
import type { DecisionEvent } from '../metering/events.js';
import { RedisQuotaStore } from '../quota/redis.js';
import { adjustUsage, topConsumers, usageRows, type UsageRow } from './usage.js';

function table(rows: UsageRow[]): string {
  if (rows.length === 0) return 'no usage in the current window\n';
  const fmt = (r: UsageRow, n: number) => (r.unit === 'usd' ? `$${n.toFixed(4)}` : String(n));
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
    },
  });
  if (positionals[0] === 'export') return exportUsage(values, positionals.slice(1));
  const settings = settingsFromEnv(env);
  const policy = loadPolicyFile(values.policy ? resolve(values.policy) : settings.policyPath);
  const url = values.redis ?? settings.redisUrl;
  const clusterNodes = values.redis ? undefined : settings.redisClusterNodes;
  if (!url && !clusterNodes) throw new GatewayError('INVALID_REQUEST', 'tollgate usage reads the shared ledger: pass --redis <url> or set REDIS_URL or REDIS_CLUSTER_NODES.');
  const now = values.now ? Date.parse(values.now) : Date.now();
  if (Number.isNaN(now)) throw new GatewayError('INVALID_REQUEST', `--now ${values.now} is not an ISO date`);
  const store = new RedisQuotaStore({ url, clusterNodes, prefix: settings.keyPrefix, commandTimeoutMs: settings.storeTimeoutMs, logger: { info() {}, warn() {}, error() {} } });
  const out = (rows: UsageRow[]) => (values.json ? `${JSON.stringify(rows, null, 2)}\n` : table(rows));
  try {
    const [verb = 'show'] = positionals;
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
        const amount = Number(values.amount);
        if (!Number.isFinite(amount)) throw new GatewayError('INVALID_REQUEST', `--amount must be a number, got ${values.amount}`);
        const delta = verb === 'credit' ? -amount : amount;
        return out([await adjustUsage(policy, store, settings.keyPrefix, now, values.budget, values.subject, delta)]);
      }
      default:
        throw new GatewayError('INVALID_REQUEST', `unknown usage command "${verb}": show, top, adjust, credit or export`);
    }
  } finally {
    await store.close();
  }
}

interface ExportValues {
  events?: string[];
  from?: string;
  to?: string;
  format?: string;
  granularity?: string;
  user?: string;
  team?: string;
  'cost-center'?: string;
  json?: boolean;
}

/** `usage export`: event files (from --events and any further arguments) to CSV or FOCUS rows. */
function exportUsage(values: ExportValues, files: string[]): string {
  const paths = [...(values.events ?? []), ...files];
  const usage = 'usage: tollgate usage export --events <file>... --from <ISO> --to <ISO> [--format csv|focus]';
  if (paths.length === 0 || !values.from || !values.to) throw new GatewayError('INVALID_REQUEST', usage);
  const from = Date.parse(values.from);
  const to = Date.parse(values.to);
  if (Number.isNaN(from) || Number.isNaN(to) || from >= to) throw new GatewayError('INVALID_REQUEST', `--from and --to must be ISO times with --from before --to, got ${values.from} and ${values.to}`);
  const format = values.format ?? 'csv';
  if (format !== 'csv' && format !== 'focus') throw new GatewayError('INVALID_REQUEST', `--format must be csv or focus, got ${format}`);
  const granularity = (values.granularity ?? 'day') as Granularity;
  if (granularity !== 'day' && granularity !== 'month') throw new GatewayError('INVALID_REQUEST', `--granularity must be day or month, got ${values.granularity}`);
  const events: DecisionEvent[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new GatewayError('INVALID_REQUEST', `cannot read events file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const parsed = parseEventLines(text);
    // A line cut short by a crash is reported, not silently skipped: the totals would not match.
    if (parsed.malformed.length) process.stderr.write(`tollgate: ${path}: skipped ${parsed.malformed.length} line(s) that are not JSON: ${parsed.malformed.slice(0, 10).join(', ')}\n`);
    events.push(...parsed.events);
  }
  const groups = aggregateUsage(events, { from, to, granularity, user: values.user, team: values.team, costCenter: values['cost-center'] });
  if (format === 'focus') {
    const rows = toFocusRows(groups);
    return values.json ? `${JSON.stringify(rows, null, 2)}\n` : focusCsv(rows);
  }
  return values.json ? `${JSON.stringify(groups, null, 2)}\n` : usageCsv(groups);
}
