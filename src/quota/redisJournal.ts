/**
 * The journal of the Redis ledger, seen from the gateway: where its streams and rollups live, how
 * an entry is prepared for the scripts (its body text and that text's SHA-256; the rollup fields a
 * decision event adds are in rollups.ts), the events recovery commits, and the audit that reads it all back
 * (`verifyRedisJournal`). docs/quota.md ("The journal on Redis") has the long form.
 *
 * Layout: on a single node every entry goes to one stream, `<prefix>{journal}:j`, so the journal
 * has one total order. On a Redis Cluster a script may only touch one slot, so each budget line
 * journals in a stream of its own hash tag, `R:j` beside its reservedKey R; an entry of a call
 * charged to three lines is then three entries (one per line, each naming its line), the decision
 * event going with the first line in reservedKey order. Entries without a line (refusals, releases
 * of a request whose lines are unknown) go to `<prefix>{journal}:j`. Order holds within a stream.
 */
import { hash } from 'node:crypto';
import { encodeDimension, rollupFields, rollupWho, ROLLUP_VERSION_FIELD } from './rollups.js';
import { bodyHash, CAP_UNIT, eventJson, GENESIS, limitUnitsOf, teamsOf, verifyChain, type ChainFault, type EntryBody, type EntryLine, type JournalEntry } from './journal.js';
import type { DecisionRecord } from './store.js';

/** The stream, its head and its rollup hashes, all in one slot. */
export interface JournalKeys {
  stream: string;
  head: string;
  /** The rollup hash of one UTC day (`YYYY-MM-DD`). */
  roll(day: string): string;
}

/** Keys of the journal whose base is `base`: `<prefix>{journal}` or a line's reservedKey. */
export function journalKeys(base: string): JournalKeys {
  return { stream: `${base}:j`, head: `${base}:jh`, roll: (day) => `${base}:roll:${day}` };
}

/** The base of the `{journal}` keys under a store prefix. */
export function globalJournalBase(prefix: string): string {
  return `${prefix}{journal}`;
}

let cachedDay = { from: 0, to: -1, day: '' };

/** The UTC day of an epoch-ms instant, `YYYY-MM-DD` (the last one computed is kept: most calls share a day). */
export function dayOf(ms: number): string {
  if (ms >= cachedDay.from && ms < cachedDay.to) return cachedDay.day;
  const from = Math.floor(ms / 86_400_000) * 86_400_000;
  cachedDay = { from, to: from + 86_400_000, day: new Date(from).toISOString().slice(0, 10) };
  return cachedDay.day;
}

/** An entry ready for a script: its body as it will be stored, and the SHA-256 of that text. */
export interface PreparedEntry {
  /**
   * The body's UTF-8 bytes: hashed and sent as they are, so the text is encoded once, not again
   * by the hash and by the client's command buffer (a settle's body is most of its bytes).
   */
  body: Buffer;
  h: string;
}

/**
 * An entry's body as the Redis journal stores it: JSON in a fixed key order (kind, id, at,
 * expiresAt, lines, meta, event, settledBy, state, then any other field in the body's own order;
 * undefined fields left out; the event's own fields in the order the gateway built them). `h` is the SHA-256 of this text,
 * and the audit hashes the text as stored, so no canonical form has to be rebuilt to check it
 * (entries written before this change are canonical JSON, which the same rule verifies).
 */
export function entryText(body: EntryBody): string {
  let out = `{"kind":${JSON.stringify(body.kind)},"id":${JSON.stringify(body.id)},"at":${jsonNum(body.at)}`;
  if (body.expiresAt !== undefined) out += `,"expiresAt":${jsonNum(body.expiresAt)}`;
  if (body.lines !== undefined) {
    out += ',"lines":[';
    for (let i = 0; i < body.lines.length; i++) out += (i > 0 ? ',' : '') + lineText(body.lines[i]!);
    out += ']';
  }
  if (body.meta !== undefined) out += `,"meta":${JSON.stringify(body.meta)}`;
  // The event's text is kept for the event log, which writes the same text (eventJson).
  if (body.event !== undefined) out += `,"event":${eventJson(body.event)}`;
  if (body.settledBy !== undefined) out += `,"settledBy":${JSON.stringify(body.settledBy)}`;
  if (body.state !== undefined) out += `,"state":${JSON.stringify(body.state)}`;
  // Any other field an entry kind carries (an alert's, say) follows, in its own order: never dropped.
  for (const key of Object.keys(body)) {
    const value = (body as unknown as Record<string, unknown>)[key];
    if (!ORDERED_FIELDS.has(key) && value !== undefined) out += `,${JSON.stringify(key)}:${JSON.stringify(value)}`;
  }
  return `${out}}`;
}

const ORDERED_FIELDS: ReadonlySet<string> = new Set(['kind', 'id', 'at', 'expiresAt', 'lines', 'meta', 'event', 'settledBy', 'state']);

/**
 * One entry line's JSON, fields in the journal's order: budgetId, subject, usageKey, reservedKey,
 * amount, expiresAt. A line that carries its text already (a rate limit's kept line) gives that.
 */
export function lineText(l: EntryLine & { text?: string; head?: string }): string {
  if (l.text !== undefined) return l.text;
  return `${l.head ?? lineHead(l)}${jsonNum(l.amount)},"expiresAt":${jsonNum(l.expiresAt)}}`;
}

/** A line's JSON at another amount than its own (its text, if it has one, holds its own). */
function lineTextAt(l: EntryLine & { head?: string }, amount: number): string {
  return `${l.head ?? lineHead(l)}${jsonNum(amount)},"expiresAt":${jsonNum(l.expiresAt)}}`;
}

/**
 * A line's JSON up to its amount: the same for every call on the line in one window, so the lines
 * calls share (a budget's, src/policy/budgets.ts, and a rate limit's, src/policy/limits.ts) are
 * made with it as their `head`, and `lineText` makes it afresh only for a line without one.
 */
export function lineHead(l: Pick<EntryLine, 'budgetId' | 'subject' | 'usageKey' | 'reservedKey'>): string {
  return `{"budgetId":${JSON.stringify(l.budgetId)},"subject":${JSON.stringify(l.subject)},"usageKey":${JSON.stringify(l.usageKey)},"reservedKey":${JSON.stringify(l.reservedKey)},"amount":`;
}

/** A number as JSON writes it. */
const jsonNum = (n: number): string => (Number.isFinite(n) ? String(n) : 'null');

export function prepare(body: EntryBody): PreparedEntry {
  const bytes = Buffer.from(entryText(body));
  return { body: bytes, h: bodyHash(bytes) };
}

// ---------------------------------------------------------------------------------------------
// Rollups (the fields themselves: rollups.ts)

/** Every UTC day from `from` to `to` (inclusive), `YYYY-MM-DD`. */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= end; t += 86_400_000) out.push(dayOf(t));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Recovery

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

const frag = (v: string | undefined): string => (v === undefined ? '' : JSON.stringify(v));

/**
 * The placeholder the profile's charged list holds where each line's reserved amount goes (the Lua
 * fills them in line order). JSON escapes every control character, so it never occurs otherwise.
 */
export const AMOUNT_SLOT = '\u0001';

/** Marks an R:i value of the profile format (JSON fragments, the old format's third part, start with `"`). */
export const PROFILE_FORMAT = '~1';

/** What the call's event line keeps for recovery apart from the amounts: the same for every call of one caller, model, tier, policy and lines. */
export interface RecoveryProfile {
  /** The event's parts, one a line (see recoveryInfo), the charged list with AMOUNT_SLOT for each amount. */
  text: string;
  /** The SHA-1 (hex) of `text`: its field in R:p. */
  digest: string;
}

/** What a reservation sends for recovery. */
export interface RecoveryInfo {
  /** Per line (in the order given), its entry line's JSON, as the recover or release entry lists it. */
  lines: string[];
  /** The event's static parts, kept once per line and digest in R:p of the first line. */
  profile: RecoveryProfile;
  /** Each line's reserved amount, comma-separated, in the order of the profile's slots (budget lines, then limit lines): the per-call part of the event. */
  amounts: string;
}

const MAX_PROFILES = 10_000;
const profiles = new Map<string, RecoveryProfile>();

/**
 * What a reservation keeps for recovery. Each line's R:i value is `<line JSON>\n<request id JSON>`;
 * the line that carries the call's event (the first in reservedKey order) adds `\n~1\n<digest>\n<amounts>`,
 * the digest naming the profile in R:p: the event's parts, one a line, as JSON fragments (empty when
 * absent): transport, policy version, user, teams, cost centre, model, tier, the charged list (an
 * AMOUNT_SLOT for each amount), the rollup dimensions of the recovered and of the released event,
 * and, when the reservation holds rate-limit lines (`meta.limits`), their limits_charged list
 * (slots again; the amounts list the budgets' lines first, then the limits'). JSON never holds a raw newline, so the parts split cleanly. The Lua (`recover` in
 * redisScripts.ts) builds the `recover` or `release` body from these and hashes it. A profile is
 * built once per distinct input and kept (up to 10,000, oldest dropped first).
 */
export function recoveryInfo(lines: EntryLine[], meta: DecisionRecord | undefined): RecoveryInfo {
  const m = meta ?? {};
  const units = (m.units ?? {}) as Record<string, unknown>;
  const limitUnits = limitUnitsOf(m);
  // The amounts go in the order of the profile's slots: the budgets' lines, then the limits'.
  let amounts = '';
  let limitAmounts = '';
  const texts: string[] = [];
  const input: unknown[] = [m.transport, m.policyVersion, m.user, m.teams, m.costCenter, m.model, m.tier];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    const unit = limitUnits.get(l.budgetId);
    // A cap's slot is given back by recovery as by a settle: its line is listed at 0.
    texts.push(unit === CAP_UNIT ? lineTextAt(l, 0) : lineText(l));
    if (unit === undefined) amounts += amounts === '' ? String(l.amount) : `,${l.amount}`;
    else limitAmounts += unit === CAP_UNIT ? ',0' : `,${l.amount}`;
    input.push(l.budgetId, l.subject, units[l.budgetId], unit);
  }
  if (limitAmounts !== '') amounts = amounts === '' ? limitAmounts.slice(1) : amounts + limitAmounts;
  const key = JSON.stringify(input);
  let profile = profiles.get(key);
  if (!profile) {
    const text = profileText(lines, m, units, limitUnits);
    profile = { text, digest: hash('sha1', text) };
    if (profiles.size >= MAX_PROFILES) profiles.delete(profiles.keys().next().value!);
    profiles.set(key, profile);
  }
  return { lines: texts, profile, amounts };
}

function profileText(lines: EntryLine[], m: DecisionRecord, units: Record<string, unknown>, limitUnits: Map<string, string>): string {
  const teams = teamsOf(m);
  let charged = '[';
  let limits = '';
  for (const x of lines) {
    const unit = limitUnits.get(x.budgetId);
    if (unit !== undefined) {
      limits += `${limits === '' ? '[' : ','}{"amount":${AMOUNT_SLOT},"limit":${JSON.stringify(x.budgetId)},"subject":${JSON.stringify(x.subject)},"unit":${JSON.stringify(unit)}}`;
      continue;
    }
    if (charged.length > 1) charged += ',';
    charged += `{"amount":${AMOUNT_SLOT},"budget":${JSON.stringify(x.budgetId)},"subject":${JSON.stringify(x.subject)},"unit":${JSON.stringify(str(units[x.budgetId]) ?? 'tokens')}}`;
  }
  charged += ']';
  if (limits !== '') limits += ']';
  // The recovered event names the model and tier served; the released one the model asked for and no tier.
  const dims = `${rollupWho(str(m.user), teams, str(m.costCenter))}|${encodeDimension(str(m.model))}`;
  const parts = [
    frag(str(m.transport) ?? 'unknown'),
    frag(str(m.policyVersion) ?? 'unknown'),
    frag(str(m.user)),
    teams ? JSON.stringify(teams) : '',
    frag(str(m.costCenter)),
    frag(str(m.model)),
    frag(str(m.tier)),
    charged,
    `${dims}|${encodeDimension(str(m.tier))}`,
    `${dims}|`,
  ];
  // The limits' list, when the call had any, after the parts profiles first had: the Lua finds
  // them where it always did, and a profile without limits is the one earlier versions wrote.
  if (limits !== '') parts.push(limits);
  return parts.join('\n');
}

/** The rollup dimensions of an event recovered without its profile (no user, teams, cost centre, model or tier). */
export const NO_PROFILE_DIMS = `${rollupWho(undefined, undefined, undefined)}|${encodeDimension(undefined)}|${encodeDimension(undefined)}`;

// ---------------------------------------------------------------------------------------------
// Verification

/** One stream entry as XRANGE returns it. */
export interface RawStreamEntry {
  id: string;
  message: Record<string, string>;
}

/** What `verifyRedisJournal` needs from Redis. */
export interface JournalReader {
  /** Every journal stream key (`…:j`) and every head key (`…:jh`) under the prefix, on every master. */
  scan(): Promise<{ streams: string[]; heads: string[] }>;
  /** Up to `count` entries of `stream` from `start` (an id, or `(id` for after it). */
  range(stream: string, start: string, count: number): Promise<RawStreamEntry[]>;
  get(key: string): Promise<string | null>;
  hGetAll(key: string): Promise<Record<string, string>>;
  hExists(key: string, field: string): Promise<boolean>;
}

/** The verdict on one stream. */
export interface StreamReport {
  stream: string;
  entries: number;
  firstSeq: number;
  lastSeq: number;
  /** The stream no longer starts at its first entry (trimmed by retention, or its start deleted). */
  trimmed: boolean;
  /** The first entry that fails, with the stream id it sits at when it exists. */
  fault?: ChainFault & { streamId?: string };
}

export interface JournalVerifyReport {
  ok: boolean;
  streams: StreamReport[];
  /** Usage counters still alive, checked against the sum of charges (settle, recover, admin) the journal holds for them. */
  counters: { checked: number; skipped: number; mismatches: { usageKey: string; counter: number; journal: number }[] };
  /** Charge entries and their events: a request's charges must carry its event once. */
  events: { charges: number; missing: { id: string; stream: string; seq: number }[]; pending: string[] };
  /**
   * Rollup hashes of fully journaled days, recomputed from the events; the version field (`#`)
   * must be the link of an entry that added to the hash (a mismatch names the last one).
   */
  rollups: { checked: number; mismatches: { key: string; field: string; rollup: number | string; journal: number | string }[] };
}

export interface VerifyOptions {
  /** Entries may have been trimmed by retention: a stream may start after its first entry. Default false. */
  trimmed?: boolean;
  /** XRANGE page size. Default 1000. */
  pageSize?: number;
}

const USAGE_START = /:u:(-?\d+)$/;

/**
 * Reads every journal stream in pages and checks: the hash chain of each (verifyChain, naming the
 * first entry that fails, and against the head the store keeps beside it); that each live usage
 * counter equals the sum of the charges journaled for it (only where the journal covers the
 * counter's whole window); that every charged request has its decision event in the journal
 * (unless its reservation is still open on the line that carries it); and that each fully
 * journaled day's rollups equal what its events add up to.
 */
export async function verifyRedisJournal(reader: JournalReader, opts: VerifyOptions = {}): Promise<JournalVerifyReport> {
  const pageSize = opts.pageSize ?? 1000;
  const { streams, heads } = await reader.scan();
  const report: JournalVerifyReport = {
    ok: true,
    streams: [],
    counters: { checked: 0, skipped: 0, mismatches: [] },
    events: { charges: 0, missing: [], pending: [] },
    rollups: { checked: 0, mismatches: [] },
  };
  const charges = new Map<string, number>();
  /** Per request id: its charge entries, and whether one carried the event. */
  const charged = new Map<string, { withEvent: boolean; at: { stream: string; seq: number } }>();
  /** Per request id: the reservedKey of the line that carries its event (the first of its lines). */
  const eventLine = new Map<string, string>();
  /** Per rollup key: what the events of its entries add up to. */
  const rolled = new Map<string, Map<string, number>>();
  /**
   * Per rollup key: the links of the entries that added to it, last one last. Its version field is
   * one of them: the entry that made the hash, or one that added to it after its day was over.
   */
  const addedBy = new Map<string, Set<string>>();
  /** The latest instant before which some stream lost entries; windows starting before it are not checked. */
  let coveredFrom = -Infinity;
  /** Days (per rollup key base) that a trimmed stream does not cover whole. */
  const partialBefore = new Map<string, number>();

  const streamSet = new Set(streams);
  for (const head of heads) {
    const stream = `${head.slice(0, -1)}`;
    if (!streamSet.has(stream)) {
      const raw = await reader.get(head);
      const seq = Number(raw?.split(' ')[0] ?? 0);
      report.streams.push({ stream, entries: 0, firstSeq: 0, lastSeq: 0, trimmed: false, fault: { seq: 1, reason: `the stream is gone but its head says ${seq} entries were written` } });
    }
  }

  for (const stream of [...streams].sort()) {
    const base = stream.slice(0, -2);
    const headRaw = await reader.get(`${stream}h`);
    const head = headRaw ? { seq: Number(headRaw.slice(0, headRaw.indexOf(' '))), link: headRaw.slice(headRaw.indexOf(' ') + 1) } : undefined;
    const entries: (JournalEntry & { streamId: string; text: string })[] = [];
    let parseFault: StreamReport['fault'];
    let start = '-';
    for (;;) {
      const page = await reader.range(stream, start, pageSize);
      for (const raw of page) {
        const m = raw.message;
        let body: EntryBody;
        try {
          body = JSON.parse(m.body ?? '') as EntryBody;
        } catch {
          parseFault ??= { seq: Number(m.seq), reason: `entry ${m.seq} has a body that is not JSON`, streamId: raw.id };
          continue;
        }
        entries.push({ seq: Number(m.seq), h: m.h ?? '', prev: m.prev ?? '', link: m.link ?? '', body, text: m.body ?? '', streamId: raw.id });
      }
      if (page.length < pageSize) break;
      start = `(${page[page.length - 1]!.id}`;
    }
    const first = entries[0];
    const trimmed = first !== undefined && (first.seq !== 1 || first.prev !== GENESIS);
    const sr: StreamReport = { stream, entries: entries.length, firstSeq: first?.seq ?? 0, lastSeq: entries[entries.length - 1]?.seq ?? 0, trimmed };
    let fault: StreamReport['fault'] = parseFault;
    if (!fault) {
      const anchor = trimmed && opts.trimmed ? { prev: first!.prev, seq: first!.seq } : {};
      const found = verifyChain(entries, { ...anchor, head });
      if (found) fault = { ...found, streamId: entries.find((e) => e.seq === found.seq)?.streamId };
      else if (trimmed && !opts.trimmed) fault = { seq: 1, reason: `the journal starts at entry ${first!.seq}: entries were removed from its beginning (no retention is configured)`, streamId: first!.streamId };
    }
    if (fault) sr.fault = fault;
    report.streams.push(sr);
    if (trimmed) {
      coveredFrom = Math.max(coveredFrom, first!.body.at);
      partialBefore.set(base, first!.body.at);
    }

    for (const e of entries) {
      const b = e.body;
      // On a cluster the event goes with the first of a call's lines in reservedKey order: the
      // settle entries of the other lines name it (journals written before one entry per call
      // name it by their reserve entries).
      const first = b.kind === 'reserve' ? b.lines?.[0]?.reservedKey : b.eventLine;
      if (first !== undefined) {
        const known = eventLine.get(b.id);
        if (known === undefined || first < known) eventLine.set(b.id, first);
      }
      if (b.kind === 'settle' || b.kind === 'recover' || b.kind === 'admin') {
        // A charge after its counter's window ended is journaled but not counted (the scripts' rule).
        for (const l of b.lines ?? []) if (b.at < l.expiresAt) charges.set(l.usageKey, (charges.get(l.usageKey) ?? 0) + l.amount);
      }
      if (b.kind === 'settle' || b.kind === 'recover') {
        report.events.charges += 1;
        const c = charged.get(b.id);
        if (!c) charged.set(b.id, { withEvent: b.event !== undefined, at: { stream, seq: e.seq } });
        else if (b.event !== undefined) c.withEvent = true;
      }
      if (b.event && (b.kind === 'settle' || b.kind === 'recover' || b.kind === 'release' || b.kind === 'refuse')) {
        const key = `${base}:roll:${dayOf(b.at)}`;
        let fields = rolled.get(key);
        if (!fields) rolled.set(key, (fields = new Map()));
        const add = rollupFields(b.event);
        for (let i = 0; i < add.length; i += 2) fields.set(add[i] as string, (fields.get(add[i] as string) ?? 0) + (add[i + 1] as number));
        if (add.length > 0) {
          let links = addedBy.get(key);
          if (!links) addedBy.set(key, (links = new Set()));
          links.add(e.link);
        }
      }
    }
  }

  for (const [id, c] of charged) {
    if (c.withEvent) continue;
    const line = eventLine.get(id);
    if (line && (await reader.hExists(line, id))) report.events.pending.push(id);
    else report.events.missing.push({ id, ...c.at });
  }

  for (const [usageKey, sum] of [...charges].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const start = USAGE_START.exec(usageKey);
    if (!start || Number(start[1]) < coveredFrom) {
      report.counters.skipped += 1;
      continue;
    }
    const raw = await reader.get(usageKey);
    if (raw === null) {
      report.counters.skipped += 1;
      continue;
    }
    report.counters.checked += 1;
    if (Number(raw) !== sum) report.counters.mismatches.push({ usageKey, counter: Number(raw), journal: sum });
  }

  for (const [key, fields] of [...rolled].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const base = key.slice(0, key.lastIndexOf(':roll:'));
    const day = key.slice(key.lastIndexOf(':') + 1);
    const from = partialBefore.get(base);
    if (from !== undefined && Date.parse(`${day}T00:00:00Z`) < from) continue;
    const stored = await reader.hGetAll(key);
    if (Object.keys(stored).length === 0) continue;
    report.rollups.checked += 1;
    // A hash written before versions existed has none.
    const version = stored[ROLLUP_VERSION_FIELD];
    const links = addedBy.get(key);
    if (version !== undefined && !links?.has(version)) report.rollups.mismatches.push({ key, field: ROLLUP_VERSION_FIELD, rollup: version, journal: links ? [...links].at(-1)! : '' });
    for (const field of new Set([...Object.keys(stored), ...fields.keys()])) {
      if (field === ROLLUP_VERSION_FIELD) continue;
      const r = Number(stored[field] ?? 0);
      const j = fields.get(field) ?? 0;
      if (r !== j) report.rollups.mismatches.push({ key, field, rollup: r, journal: j });
    }
  }

  report.ok =
    report.streams.every((s) => !s.fault) && report.counters.mismatches.length === 0 && report.events.missing.length === 0 && report.rollups.mismatches.length === 0;
  return report;
}
