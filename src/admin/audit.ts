/**
 * `tollgate audit verify`: checks that the journal is the whole, untouched record of the ledger.
 *
 * For the embedded journal (a data directory), in one pass over every segment from the first:
 * 1. chain: each entry hashes to its `h`, links to the entry before it, the seqs have no gap
 *    (`verifyChain`), and the tail agrees with `head.json`: the head may lag the file by the last
 *    fsync interval, so entries after it are fine, but the entry at its seq must carry its link,
 *    and a journal that ends before it was cut;
 * 2. ledger: the entries are replayed, from the first, into a fresh store (`restore`); at each
 *    segment's opening snapshot the counters and open reservations it states must equal what the
 *    entries before it add up to, so a tampered snapshot or a charge missing from the record
 *    shows; the charges are summed per usage counter (budget, subject and window);
 * 3. events: every settle and recover entry carries its decision event, for its request, saying it
 *    charged exactly the entry's lines; a settle's event names a caller each budget line belongs
 *    to, and the tokens and cost its token and dollar lines were charged; no request is charged
 *    twice; and no event of a release or a refusal claims a charge.
 * The first entry that fails any check is named, with its segment file and line.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayError } from '../errors.js';
import { settingsFromEnv } from '../main.js';
import { loadPolicyFile } from '../policy/load.js';
import { canonicalJson, verifyChain, type EntryBody, type JournalEntry } from '../quota/journal.js';
import { journalHead } from '../quota/journalFiles.js';
import { MemoryQuotaStore, type JournalWriter } from '../quota/memory.js';
import { defaultDataDir, endedSegmentNames, journalLines, requireJournalDir } from './journalReader.js';
import { budgetsInStore, requireSamePolicy } from './mismatch.js';

/** Which check an entry failed. */
export type AuditCheck = 'chain' | 'ledger' | 'events';

export interface AuditFault {
  seq: number;
  check: AuditCheck;
  reason: string;
  /** Where the entry is (absent when it is missing from the end). */
  file?: string;
  line?: number;
}

/** What the charges of the journal add up to on one usage counter. */
export interface CounterTotal {
  usageKey: string;
  budgetId: string;
  subject: string;
  /** Settle and recover entries that charged it. */
  charges: number;
  /** Their sum, in the budget's unit (tokens, or micro-dollars). */
  total: number;
  /** When the counter's window ends (epoch ms): until then the store holds it. */
  expiresAt: number;
}

export interface AuditReport {
  ok: boolean;
  dir: string;
  segments: string[];
  entries: number;
  firstSeq: number;
  lastSeq: number;
  /** What head.json names (absent when there is none yet). */
  head?: { seq: number; link: string };
  /** Snapshots checked against the replay of the entries before them. */
  snapshots: number;
  /** Settle and recover entries (charges), and the other decision events (releases and refusals). */
  charges: number;
  otherEvents: number;
  counters: CounterTotal[];
  /** The time of the last entry (epoch ms; 0 without entries): the budgets whose counters live past it are the ones the journal was charging. */
  lastAt: number;
  /** Things worth knowing that are not failures (a partial last line, no head file yet). */
  notes: string[];
  fault?: AuditFault;
}

/** The replay keeps reservations until they are settled or released, as the journaled store does: this writer takes nothing. */
const KEEP_RESERVATIONS: JournalWriter = {
  append: () => {
    throw new Error('the audit replay writes nothing');
  },
  close: async () => {},
};

type Counter = { value: number; expiresAt: number };

/** A counter that has expired by `at` is gone, as the store's sweep drops it. */
function live(c: Counter | undefined, at: number): Counter | undefined {
  return c && c.expiresAt > at ? c : undefined;
}

/** The first usage counter on which a snapshot and the replay differ, or undefined. */
function counterDifference(replayed: Record<string, Counter>, stated: Record<string, Counter>, at: number): string | undefined {
  for (const key of [...new Set([...Object.keys(replayed), ...Object.keys(stated)])].sort()) {
    const a = live(replayed[key], at);
    const b = live(stated[key], at);
    if (!a && !b) continue;
    // A counter expiring within a second of the snapshot may have been swept at a slightly later clock reading.
    if (!a || !b) {
      if ((a ?? b)!.expiresAt <= at + 1000) continue;
      return b
        ? `the snapshot holds usage counter ${key} = ${b.value}, which no entry before it charged`
        : `the snapshot leaves out usage counter ${key}, which the entries before it charged ${a!.value}`;
    }
    if (a.value !== b.value) return `the snapshot says usage counter ${key} is ${b.value}, the entries before it add up to ${a.value}`;
    if (a.expiresAt !== b.expiresAt) return `the snapshot gives usage counter ${key} the expiry ${b.expiresAt}, the entries before it ${a.expiresAt}`;
  }
  return undefined;
}

function reservationDifference(replayed: Record<string, unknown>, stated: Record<string, unknown>): string | undefined {
  for (const id of [...new Set([...Object.keys(replayed), ...Object.keys(stated)])].sort()) {
    if (!(id in stated)) return `the snapshot leaves out the reservation of request ${id}, which the entries before it hold open`;
    if (!(id in replayed)) return `the snapshot holds a reservation for request ${id}, which no entry before it left open`;
    if (canonicalJson(replayed[id]) !== canonicalJson(stated[id])) return `the snapshot's reservation of request ${id} differs from the one the entries before it hold`;
  }
  return undefined;
}

const fmtLines = (lines: { budget: string; subject: string; amount: number }[]) => (lines.length ? lines.map((l) => `${l.budget}/${l.subject} ${l.amount}`).join(', ') : 'nothing');

/** The lines an event's `tollgate.charged` (by `budget`) or `tollgate.limits_charged` (by `limit`) claims. */
function claimedLines(raw: unknown, id: 'budget' | 'limit'): { budget: string; subject: string; amount: number }[] {
  if (!Array.isArray(raw)) return [];
  return (raw as Record<string, unknown>[]).map((c) => ({ budget: String(c[id]), subject: String(c.subject), amount: Number(c.amount) }));
}

/** Budgets by id with their scope (the policy's), and the reservation each open request holds. */
interface EventContext {
  scopes?: ReadonlyMap<string, string>;
  reserved: Map<string, { seq: number; lines: Set<string> }>;
}

/**
 * Check 3 on a settle's event, which the call wrote from what it knew (a recovery's states only the
 * reservation): its user and figures are of their types; each budget line it charges is its
 * caller's in the budget's scope (a user budget's line the event's user, a team budget's one of its
 * teams, and so on; a budget the policy no longer declares, any of them), a token line is charged
 * the tokens the event says the call used or nothing (a tier the budget does not cover), and a
 * dollar line its cost or nothing. A journal chained again after its events were edited (another
 * user, more tokens, a higher cost) fails here, since the charges, which the ledger check holds to
 * the snapshots, did not change.
 */
function settledEventFault(event: Record<string, unknown>, scopes: ReadonlyMap<string, string> | undefined): string | undefined {
  if (event['user.id'] !== undefined && typeof event['user.id'] !== 'string') return 'has an event whose user.id is not a string';
  for (const field of ['gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens', 'tollgate.cost_usd']) {
    if (event[field] !== undefined && typeof event[field] !== 'number') return `has an event whose ${field} is not a number`;
  }
  const text = (v: unknown) => (typeof v === 'string' ? [v] : []);
  const user = text(event['user.id']);
  const teams = Array.isArray(event['user.teams']) ? (event['user.teams'] as unknown[]).flatMap(text) : [];
  const costCenter = text(event['user.cost_center']);
  const app = text(event['user.app']);
  const byScope: Record<string, string[]> = { user, team: teams, costCenter, application: app, global: ['*'] };
  const caller = new Set(['*', ...user, ...teams, ...costCenter, ...app]);
  const tokens = event['gen_ai.usage.input_tokens'];
  const output = event['gen_ai.usage.output_tokens'];
  const used = typeof tokens === 'number' && typeof output === 'number' ? tokens + output : undefined;
  const cost = typeof event['tollgate.cost_usd'] === 'number' ? Math.round(event['tollgate.cost_usd'] * 1e6) : undefined;
  const charged = Array.isArray(event['tollgate.charged']) ? (event['tollgate.charged'] as Record<string, unknown>[]) : [];
  for (const c of charged) {
    const line = `${String(c.budget)}/${String(c.subject)}`;
    const subject = String(c.subject);
    const scope = scopes?.get(String(c.budget));
    if (user.length > 0 && scope !== undefined && scope in byScope && !byScope[scope]!.includes(subject)) {
      const named = scope === 'user' ? `user is ${user[0]}` : scope === 'team' ? `teams are ${teams.join(', ') || 'none'}` : scope === 'costCenter' ? `cost centre is ${costCenter[0] ?? 'none'}` : scope === 'application' ? `application is ${app[0] ?? 'none'}` : 'scope is global';
      return `charges ${line}, a ${scope} budget, but its event's ${named}`;
    }
    if (user.length > 0 && scope === undefined && !caller.has(subject)) {
      const who = [`user ${user[0]}`, teams.length ? `teams ${teams.join(', ')}` : '', ...costCenter.map((cc) => `cost centre ${cc}`), ...app.map((a) => `application ${a}`)];
      return `charges ${line}, a subject its event's caller is not (${who.filter(Boolean).join(', ')})`;
    }
    if (c.amount === 0) continue;
    if (c.unit === 'tokens' && used !== undefined && c.amount !== used) return `charges ${line} ${String(c.amount)} tokens but its event says the call used ${used} tokens`;
    if (c.unit === 'micro_usd' && cost !== undefined && c.amount !== cost) return `charges ${line} ${String(c.amount)} micro-dollars but its event says the call cost ${cost} micro-dollars`;
  }
  return undefined;
}

/** Check 3 on one entry: a charge carries its event with the same amounts; nothing else claims one. */
function eventFault(e: JournalEntry, chargedAt: Map<string, number>, ctx: EventContext): string | undefined {
  const b: EntryBody = e.body;
  const event = b.event;
  const eventId = event?.['request.id'];
  if (b.kind === 'reserve') ctx.reserved.set(b.id, { seq: e.seq, lines: new Set((b.lines ?? []).map((l) => `${l.budgetId}|${l.subject}`)) });
  if (b.kind === 'settle' || b.kind === 'recover' || b.kind === 'release') {
    // A charge goes to the lines its reservation holds (a line of a tier the budget does not cover
    // is reserved nothing, left out of the reserve entry, and charged 0): one moved to another
    // subject, its event edited to match, is not the call's.
    const held = ctx.reserved.get(b.id);
    ctx.reserved.delete(b.id);
    const stray = held && (b.lines ?? []).find((l) => l.amount > 0 && !held.lines.has(`${l.budgetId}|${l.subject}`));
    if (held && stray) return `entry ${e.seq} (${b.kind}) charges ${stray.budgetId}/${stray.subject}, which its reservation (entry ${held.seq}) does not hold`;
  }
  if (b.kind === 'settle' || b.kind === 'recover') {
    const earlier = chargedAt.get(b.id);
    if (earlier !== undefined) return `entry ${e.seq} charges request ${b.id} a second time (entry ${earlier} charged it)`;
    chargedAt.set(b.id, e.seq);
    if (!event) return `entry ${e.seq} (${b.kind}) charges request ${b.id} without its decision event`;
    if (eventId !== b.id) return `entry ${e.seq} (${b.kind}) charges request ${b.id} but carries the event of request ${String(eventId)}`;
    const lines = (b.lines ?? []).map((l) => ({ budget: l.budgetId, subject: l.subject, amount: l.amount }));
    // The event states the budgets' charges and, apart, the rate limits' (a recovery's event written
    // before its reservation's meta named the limits lists every line under tollgate.charged):
    // together, the entry's lines in order.
    const claimed = [...claimedLines(event['tollgate.charged'], 'budget'), ...claimedLines(event['tollgate.limits_charged'], 'limit')];
    if (canonicalJson(lines) !== canonicalJson(claimed)) return `entry ${e.seq} (${b.kind}) charges ${fmtLines(lines)} but its event says it charged ${fmtLines(claimed)}`;
    const by = event['tollgate.settled_by'];
    if (by !== undefined && b.settledBy !== undefined && by !== b.settledBy) return `entry ${e.seq} was written by ${b.settledBy} but its event says settled_by ${String(by)}`;
    const disagrees = b.kind === 'settle' ? settledEventFault(event, ctx.scopes) : undefined;
    if (disagrees) return `entry ${e.seq} (settle) ${disagrees}`;
    return undefined;
  }
  if ((b.kind === 'release' || b.kind === 'refuse') && event) {
    if (eventId !== b.id) return `entry ${e.seq} (${b.kind}) is for request ${b.id} but carries the event of request ${String(eventId)}`;
    const claimed = [...claimedLines(event['tollgate.charged'], 'budget'), ...claimedLines(event['tollgate.limits_charged'], 'limit')];
    if (claimed.length > 0) return `entry ${e.seq} (${b.kind}) charges nothing but its event says it charged ${fmtLines(claimed)}`;
  }
  return undefined;
}

export interface AuditOptions {
  /**
   * Earlier segments were archived: the journal may start at a later segment's opening snapshot,
   * which is then taken as the starting state (the chain is checked from it). Default false: a
   * journal that does not start at entry 1 fails there.
   */
  trimmed?: boolean;
  /** The policy's budgets by id with their scope: a settle's event is then held to each line's scope. */
  scopes?: ReadonlyMap<string, string>;
}

/**
 * Verifies the embedded journal in `dir`, read-only: a running gateway may keep writing to it.
 * A failure while the gateway ended a segment (its current file renamed away mid-read) is
 * checked once more.
 */
export function verifyJournalDir(dir: string, opts: AuditOptions = {}): AuditReport {
  requireJournalDir(dir);
  const ended = endedSegmentNames(dir).join();
  const report = verifyOnce(dir, opts);
  return report.ok || endedSegmentNames(dir).join() === ended ? report : verifyOnce(dir, opts);
}

function verifyOnce(dir: string, opts: AuditOptions): AuditReport {
  // The head first: whatever is appended while the segments are read comes after it.
  const { head, unreadable } = journalHead(dir);
  const report: AuditReport = { ok: true, dir, segments: [], entries: 0, firstSeq: 0, lastSeq: 0, head, snapshots: 0, charges: 0, otherEvents: 0, counters: [], lastAt: 0, notes: [] };
  if (unreadable) report.notes.push(`head.json cannot be read (${unreadable}): a cut at the end of the journal cannot be told from its last entry`);
  else if (!head) report.notes.push('no head.json yet (nothing fsync\'d): a cut at the end of the journal cannot be told from its last entry');

  let clock = 0;
  const replay = new MemoryQuotaStore(() => clock, KEEP_RESERVATIONS);
  const counters = new Map<string, CounterTotal>();
  const chargedAt = new Map<string, number>();
  const events: EventContext = { scopes: opts.scopes, reserved: new Map() };
  let prev: string | undefined;
  let expected = 1;

  const fail = (fault: AuditFault): AuditReport => {
    report.ok = false;
    report.fault = fault;
    return report;
  };

  for (const l of journalLines(dir)) {
    if (report.segments.at(-1) !== l.file) report.segments.push(l.file);
    if (!('entry' in l)) {
      // A partial last line of the current segment is being written, or was cut by a crash: the next start drops it.
      const current = l.file === 'journal.jsonl' || l.file === 'journal.next';
      if (l.problem === 'torn' && current && (!head || head.seq < expected)) {
        report.notes.push(`${l.file} line ${l.line} is a partial entry after the last whole one (being written, or cut by a crash; the gateway drops it at its next start)`);
        continue;
      }
      return fail({ seq: expected, check: 'chain', reason: `entry ${expected} cannot be read: ${l.detail}`, file: l.file, line: l.line });
    }
    const e = l.entry;
    const at = { file: l.file, line: l.line };
    const first = report.entries === 0;
    if (first && e.seq !== 1) {
      if (!opts.trimmed) return fail({ seq: 1, check: 'chain', reason: `the journal starts at entry ${e.seq}: entries 1 to ${e.seq - 1} are missing (if earlier segments were archived, pass --trimmed)`, ...at });
      if (e.body.kind !== 'snapshot') return fail({ seq: e.seq, check: 'chain', reason: `the journal starts at entry ${e.seq}, which does not open a segment (a snapshot): entries before it are missing`, ...at });
      // The archived history is not here: the chain is checked from this entry, and its snapshot is where the replay starts.
      prev = e.prev;
      expected = e.seq;
      report.notes.push(`the journal starts at entry ${e.seq} (earlier segments archived): its snapshot is taken as the starting state, and the totals cover the entries from there`);
    }

    // 1. The chain, one entry at a time (the head is checked at its own seq and at the end).
    const chain = verifyChain([l.text === undefined ? e : { ...e, text: l.text }], { prev, seq: expected, head: head && e.seq === head.seq ? head : undefined });
    if (chain) return fail({ seq: chain.seq, check: 'chain', reason: chain.reason, ...at });
    prev = e.link;
    expected = e.seq + 1;

    // 3. The event of each charge, and no charge claimed elsewhere.
    const wrong = eventFault(e, chargedAt, events);
    if (wrong) return fail({ seq: e.seq, check: 'events', reason: wrong, ...at });
    const b = e.body;
    if (b.kind === 'settle' || b.kind === 'recover') report.charges += 1;
    else if ((b.kind === 'release' || b.kind === 'refuse') && b.event) report.otherEvents += 1;

    // 2. The ledger: a snapshot must state what the entries before it add up to.
    clock = b.at;
    if (b.kind === 'snapshot' && !(first && e.seq !== 1)) {
      const mine = replay.snapshot() as { counters: Record<string, Counter>; reservations: Record<string, unknown> };
      const stated = (b.state ?? {}) as { counters?: Record<string, Counter>; reservations?: Record<string, unknown> };
      const differs =
        counterDifference(mine.counters, stated.counters ?? {}, b.at) ??
        reservationDifference(JSON.parse(JSON.stringify(mine.reservations)) as Record<string, unknown>, stated.reservations ?? {});
      if (differs) return fail({ seq: e.seq, check: 'ledger', reason: `entry ${e.seq} (snapshot): ${differs}`, ...at });
      report.snapshots += 1;
    }
    if (b.kind === 'settle' || b.kind === 'recover') {
      for (const line of b.lines ?? []) {
        let c = counters.get(line.usageKey);
        if (!c) counters.set(line.usageKey, (c = { usageKey: line.usageKey, budgetId: line.budgetId, subject: line.subject, charges: 0, total: 0, expiresAt: 0 }));
        c.charges += 1;
        c.expiresAt = Math.max(c.expiresAt, line.expiresAt);
        c.total += line.amount;
      }
    }
    replay.restore([b]);
    if (first) report.firstSeq = e.seq;
    report.entries += 1;
    report.lastSeq = e.seq;
    report.lastAt = Math.max(report.lastAt, b.at);
  }

  // The end of the journal against its head.
  if (head && head.seq >= expected) {
    return fail({ seq: expected, check: 'chain', reason: `the journal ends at entry ${expected - 1} but head.json says entry ${head.seq} was written: entries were removed from the end` });
  }
  if (head && report.lastSeq > head.seq) report.notes.push(`head.json names entry ${head.seq}; the ${report.lastSeq - head.seq} after it are not fsync'd yet (at most the fsync interval behind)`);
  report.counters = [...counters.values()].sort((a, b) => (a.usageKey < b.usageKey ? -1 : a.usageKey > b.usageKey ? 1 : 0));
  return report;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The report as operators read it. */
export function formatAudit(r: AuditReport): string {
  const out: string[] = [];
  if (r.fault) {
    const where = r.fault.file ? ` (${r.fault.file} line ${r.fault.line})` : '';
    out.push(`journal ${r.dir}: FAILED at entry ${r.fault.seq}${where}`, `  ${r.fault.check}: ${r.fault.reason}`);
    if (r.entries > 0) out.push(`  entries ${r.firstSeq} to ${r.lastSeq} passed every check before it`);
  } else {
    out.push(
      `journal ${r.dir}: verified`,
      `  entries  ${r.entries === 0 ? 'none' : `${r.firstSeq} to ${r.lastSeq}`} in ${plural(r.segments.length, 'segment')}${r.head ? `; head.json names entry ${r.head.seq}` : ''}`,
      `  chain    unbroken from the first entry to the last`,
      `  ledger   ${plural(r.snapshots, 'snapshot')} equal to the replay of the entries before ${r.snapshots === 1 ? 'it' : 'them'}; ${plural(r.charges, 'charge')} on ${plural(r.counters.length, 'usage counter')}`,
      `  events   every charge carries its decision event with the same amounts; ${plural(r.otherEvents, 'other decision event')} (releases, refusals) ${r.otherEvents === 1 ? 'charges' : 'charge'} nothing`,
    );
  }
  for (const n of r.notes) out.push(`  note: ${n}`);
  if (!r.fault && r.counters.length > 0) {
    const rows = r.counters.map((c) => [c.usageKey, String(c.charges), String(c.total)]);
    const head = ['usage counter', 'charges', 'total'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
    out.push('');
    for (const row of [head, ...rows]) out.push(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  }
  return `${out.join('\n')}\n`;
}

const USAGE = 'usage: tollgate audit verify [--data-dir <dir> | --redis <url>] [--trimmed] [--json]';

/** Runs an audit subcommand; returns what to print and the exit code (0 verified, 1 a check failed). */
export async function runAuditCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<{ out: string; code: number }> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' },
      redis: { type: 'string' },
      trimmed: { type: 'boolean' },
      json: { type: 'boolean' },
      policy: { type: 'string' },
      'allow-other-budgets': { type: 'boolean' },
    },
  });
  if (positionals[0] !== 'verify' || positionals.length > 1) throw new GatewayError('INVALID_REQUEST', USAGE);
  return auditVerify(values, env);
}

/** The options of `tollgate audit verify`, as parsed. */
export interface AuditValues {
  policy?: string;
  /** Verify a journal holding live usage of budgets the policy does not declare. */
  'allow-other-budgets'?: boolean;
  'data-dir'?: string;
  redis?: string;
  trimmed?: boolean;
  json?: boolean;
}

/**
 * `tollgate audit verify`: what to print and the exit code (0 verified, 1 a check failed). A
 * journal that verifies but holds live usage of budgets the policy does not declare (written
 * under another policy) throws StoreMismatchError.
 */
export async function auditVerify(values: AuditValues, env: NodeJS.ProcessEnv): Promise<{ out: string; code: number }> {
  const policyPath = values.policy ? resolve(values.policy) : settingsFromEnv(env).policyPath;
  const samePolicy = (budgets: Iterable<string>, where: string) => requireSamePolicy(loadPolicyFile(policyPath), budgets, where, values['allow-other-budgets']);
  if (values.redis !== undefined && values['data-dir'] !== undefined) throw new GatewayError('INVALID_REQUEST', `${USAGE}: one of --data-dir and --redis`);
  if (values.redis !== undefined) {
    const { formatRedisAudit, openRedisJournal, shownUrl } = await import('./redisJournal.js');
    const store = openRedisJournal(values.redis, env);
    try {
      // Without --trimmed the store decides: a journal with a retention may start after its first entry.
      const report = await store.verify(values.trimmed ? { trimmed: true } : {});
      if (report.ok) samePolicy(await budgetsInStore(store, settingsFromEnv(env).keyPrefix), `The Redis journal at ${shownUrl(values.redis)}`);
      return { out: values.json ? `${JSON.stringify(report, null, 2)}\n` : formatRedisAudit(values.redis, report), code: report.ok ? 0 : 1 };
    } finally {
      await store.close();
    }
  }
  const dir = values['data-dir'] ?? defaultDataDir(env);
  const policy = loadPolicyFile(policyPath);
  const report = verifyJournalDir(dir, { trimmed: values.trimmed, scopes: new Map(policy.budgets.map((b) => [b.config.id, b.config.scope])) });
  if (report.ok) samePolicy(report.counters.filter((c) => c.expiresAt > report.lastAt).map((c) => c.budgetId), `The journal in ${dir}`);
  return { out: values.json ? `${JSON.stringify(report, null, 2)}\n` : formatAudit(report), code: report.ok ? 0 : 1 };
}
