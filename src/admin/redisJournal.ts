/**
 * The Redis journal for operator commands: the audit (`RedisQuotaStore.verify`), the day rollups
 * the store keeps beside its streams (`rollups`), and the decision events of its entries
 * (`journalEntries`), for `tollgate audit verify --redis`, `usage report --redis`, and
 * `usage export|refusals --redis`. The store is opened without its recovery sweep: reading the
 * journal changes nothing.
 */
import { GatewayError } from '../errors.js';
import { settingsFromEnv } from '../main.js';
import type { DecisionEvent } from '../metering/events.js';
import { RedisQuotaStore, type JournalVerifyReport } from '../quota/redis.js';
import type { UsageRollup } from '../quota/rollups.js';
import type { EntryKind } from '../quota/journal.js';
import { requireHeldFrom, type Decision, type HeldFrom } from './journalReader.js';

/** `--redis <url>` names one node; several comma-separated URLs name nodes of a Redis Cluster. */
export function openRedisJournal(target: string, env: NodeJS.ProcessEnv): RedisQuotaStore {
  const settings = settingsFromEnv(env);
  const urls = target.split(',').map((u) => u.trim()).filter(Boolean);
  return new RedisQuotaStore({
    url: urls.length === 1 ? urls[0] : undefined,
    clusterNodes: urls.length > 1 ? urls : undefined,
    prefix: settings.keyPrefix,
    commandTimeoutMs: settings.storeTimeoutMs,
    recover: false,
    logger: { info() {}, warn() {}, error() {} },
  });
}

/** A URL as it may be printed: without its password. */
export function shownUrl(target: string): string {
  return target
    .split(',')
    .map((u) => {
      try {
        const parsed = new URL(u.trim());
        if (parsed.password) parsed.password = '***';
        return parsed.toString().replace(/\/$/, '');
      } catch {
        return '(a URL that does not parse)';
      }
    })
    .join(',');
}

const CARRIES_EVENT: ReadonlySet<EntryKind> = new Set(['settle', 'recover', 'release', 'refuse']);

/**
 * The decision events of every journal stream. On a cluster a call charged to several lines has
 * an entry per line, the event going with the first, so each event is read once; `charges` is
 * left empty (the charges of a call may sit in several streams).
 */
export async function* redisDecisions(store: RedisQuotaStore, held?: HeldFrom): AsyncGenerator<Decision> {
  const streams = new Set<string>();
  for await (const { stream, entry } of store.journalEntries()) {
    if (!streams.has(stream)) {
      streams.add(stream);
      requireHeldFrom(entry, held, `The Redis journal stream ${stream}`);
    }
    const b = entry.body;
    if (!b || !CARRIES_EVENT.has(b.kind) || !b.event) continue;
    yield { event: b.event as unknown as DecisionEvent, at: b.at, kind: b.kind, charges: [] };
  }
}

/**
 * The store's day rollups of the UTC days `from` to `to` (`YYYY-MM-DD`, inclusive). A store with
 * no journal stream under its prefix is named as such (a wrong TOLLGATE_KEY_PREFIX reads nothing).
 */
export async function redisRollups(store: RedisQuotaStore, from: string, to: string, env: NodeJS.ProcessEnv): Promise<UsageRollup[]> {
  // Listing the streams also waits for the first connection, which reading a hash does not.
  if ((await store.journalStreams()).length === 0) {
    throw new GatewayError('INVALID_REQUEST', `no journal stream under the key prefix ${settingsFromEnv(env).keyPrefix} in this Redis; set TOLLGATE_KEY_PREFIX to the gateway's`);
  }
  return store.rollups(from, to);
}

/** The Redis audit as operators read it: the verdict, then every fault it found, each naming where. */
export function formatRedisAudit(target: string, r: JournalVerifyReport): string {
  const out: string[] = [`redis journal ${shownUrl(target)}: ${r.ok ? 'verified' : 'FAILED'}`];
  const entries = r.streams.reduce((n, s) => n + s.entries, 0);
  out.push(`  streams   ${r.streams.length} stream${r.streams.length === 1 ? '' : 's'}, ${entries} entr${entries === 1 ? 'y' : 'ies'}${r.streams.some((s) => s.trimmed) ? ' (trimmed by retention: checked from the first entry kept)' : ''}`);
  for (const s of r.streams) {
    if (s.fault) out.push(`    ${s.stream}: FAILED at entry ${s.fault.seq}${s.fault.streamId ? ` (stream id ${s.fault.streamId})` : ''}: ${s.fault.reason}`);
  }
  out.push(`  counters  ${r.counters.checked} live usage counter${r.counters.checked === 1 ? '' : 's'} checked against the sum of their charges (${r.counters.skipped} not checked: expired, or older than the journal)`);
  for (const m of r.counters.mismatches) out.push(`    ${m.usageKey}: FAILED: the ledger holds ${m.counter}, the journal's charges add up to ${m.journal}`);
  out.push(`  events    ${r.events.charges} charge entr${r.events.charges === 1 ? 'y' : 'ies'}${r.events.pending.length ? `; ${r.events.pending.length} request(s) still open, whose event comes with the last line` : ''}`);
  for (const m of r.events.missing) out.push(`    request ${m.id}: FAILED: charged without its decision event (${m.stream}, entry ${m.seq})`);
  out.push(`  rollups   ${r.rollups.checked} day${r.rollups.checked === 1 ? '' : 's'} of rollups checked against their events`);
  for (const m of r.rollups.mismatches) {
    if (typeof m.rollup === 'string') out.push(`    ${m.key} ${m.field}: FAILED: the hash names ${m.rollup} as its last write, the journal's last entry that added to it is ${m.journal || 'none'}`);
    else out.push(`    ${m.key} ${m.field}: FAILED: the rollup holds ${m.rollup}, the events add up to ${m.journal}`);
  }
  return `${out.join('\n')}\n`;
}
