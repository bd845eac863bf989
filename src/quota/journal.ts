/**
 * The journal: one append-only, hash-chained stream of what happened to money and decisions.
 * Reservations, dispatches, settlements (a charge with its decision event, in one entry), releases,
 * recoveries and refusals are all entries; the ledger's counters are what the entries add up to.
 * (The embedded journal writes a reservation made as its call is dispatched as one entry carrying
 * the mark, `dispatched: true`, and no `dispatch` entry.)
 * (The Redis journal writes one entry per call: its reservation and dispatch mark are kept with the
 * reservation and journaled by the entry that closes it; docs/journal.md.)
 *
 * Chain (the same for the embedded file and the Redis stream, so one verifier serves both):
 * - `h`    SHA-256 (hex) of the entry's body as text: on Redis the text as stored; in the embedded
 *          file (`v: 2`) the body as JSON.stringify wrote it into the line, its own field order;
 *          in embedded entries of earlier versions (no `v`) the body as canonical JSON (keys
 *          sorted, no spaces);
 * - `prev` the `link` of the entry before it in the stream (`GENESIS` for the first);
 * - `link` SHA-1 (hex) of `prev + h`. Redis Lua offers only SHA-1, so the gateway computes the
 *   body's SHA-256 and the store links it to the stream's last link in the same atomic step.
 * Editing a body breaks its `h`; deleting, reordering or inserting breaks a `prev`; truncating the
 * tail is caught against the head the store keeps beside the stream.
 */
import { hash } from 'node:crypto';

/** What an entry records. */
export type EntryKind = 'reserve' | 'dispatch' | 'settle' | 'release' | 'recover' | 'refuse' | 'snapshot' | 'admin' | 'console' | 'alert';

/** One budget line an entry reserves or charges, with what it takes to rebuild the counters. */
export interface EntryLine {
  budgetId: string;
  subject: string;
  usageKey: string;
  reservedKey: string;
  amount: number;
  /** Epoch ms after which the usage counter may be forgotten. */
  expiresAt: number;
}

/** The content of an entry, before it is chained. */
export interface EntryBody {
  kind: EntryKind;
  /** The request id (or an admin action's id). */
  id: string;
  /** Epoch ms. */
  at: number;
  lines?: EntryLine[];
  /** For reserve: when the reservation lapses (epoch ms). */
  expiresAt?: number;
  /** For reserve: who and what, so a recovery can say whom it charged. */
  meta?: Record<string, unknown>;
  /**
   * For reserve: the dispatch mark, written with the reservation because the call goes to a provider
   * at once (no `dispatch` entry follows); a recovery charges it. Absent: not dispatched yet, or
   * marked by a `dispatch` entry of its own (as every reservation was before).
   */
  dispatched?: boolean;
  /** The decision event (settle, release, recover, refuse). */
  event?: Record<string, unknown>;
  /** settle or recover: who wrote the charge. */
  settledBy?: 'call' | 'recovery';
  /**
   * settle on a Redis Cluster, in the entries of the lines that do not carry the event: the
   * reservedKey of the line whose entry carries it (the audit waits for it while that line is
   * still reserved).
   */
  eventLine?: string;
  /** snapshot: the state at the start of a segment. */
  state?: Record<string, unknown>;
  /** console: what an operator did in the web console (who, which action, its outcome). */
  action?: Record<string, unknown>;
  /** alert: what happened to an alert (fired, delivered, failed; src/alerts). Changes no counter. */
  alert?: Record<string, unknown>;
  /** alert (fired): the once-only mark the alert took, and when it lapses (epoch ms). */
  mark?: { key: string; expiresAt: number };
}

/** An entry as stored: its body and its place in the chain. */
export interface JournalEntry {
  seq: number;
  /**
   * 2: `h` hashes the body as JSON.stringify writes it (its own field order), which is the text the
   * embedded journal's line holds after `"body":`. Absent: `h` hashes the body's canonical JSON
   * (embedded entries of earlier versions), or the entry's `text` where a store keeps one (Redis).
   */
  v?: 2;
  h: string;
  prev: string;
  link: string;
  body: EntryBody;
}

/** The `prev` of a stream's first entry. */
export const GENESIS = '0'.repeat(40);

/** JSON with object keys sorted at every level and no whitespace; undefined fields are left out. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  // Built by appending, without the filtered, mapped and joined arrays of each level: the file
  // journal writes two or three entries a call, a decision event among them.
  if (Array.isArray(value)) {
    // An array of plain values (no object or array in it) is canonical as JSON.stringify writes it:
    // a snapshot's 200,000 settled ids in one call, not 200,000 (issue 21).
    if (value.every((v) => v === null || typeof v !== 'object')) return JSON.stringify(value);
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      out += `${i > 0 ? ',' : ''}${v === undefined ? 'null' : canonicalJson(v)}`;
    }
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  let out = '{';
  for (const k of Object.keys(record).sort()) {
    const v = record[k];
    if (v === undefined) continue;
    out += `${out.length > 1 ? ',' : ''}${JSON.stringify(k)}:${canonicalJson(v)}`;
  }
  return `${out}}`;
}

/** SHA-256 (hex) of a body's canonical JSON. */
export function bodyHash(body: EntryBody | string | Buffer): string {
  // The one-shot hash: no Hash object per entry (this runs twice per call on the Redis ledger).
  return hash('sha256', typeof body === 'string' || Buffer.isBuffer(body) ? body : canonicalJson(body), 'hex');
}

/** The link of an entry whose body hashes to `h`, after the entry whose link is `prev`. */
export function chainLink(prev: string, h: string): string {
  return hash('sha1', prev + h, 'hex');
}

/**
 * Chains a body after `prev` as earlier versions of the embedded journal did: `h` of its canonical
 * JSON (no `v`). The gateway writes `chainedLine`'s entries; this one lets tests write journals in
 * the older form, which a start and `audit verify` still read.
 */
export function chained(seq: number, prev: string, body: EntryBody): JournalEntry {
  const h = bodyHash(body);
  return { seq, h, prev, link: chainLink(prev, h), body };
}

/**
 * Chains a body after `prev` (format 2) and makes its line's bytes: the body is serialised once, by
 * JSON.stringify, and `h` is the SHA-256 of exactly that text, which the line carries after
 * `"body":` (the line's last field), so `h` can be checked from the line without re-serialising.
 * Canonical JSON cost the file journal more than the hashing itself (issue 21's profiles).
 */
export function chainedLine(seq: number, prev: string, body: EntryBody): { entry: JournalEntry; line: Buffer } {
  // A decision event goes last, as the text the event log writes for it (eventJson: serialised once
  // for both). The line holds the fields in the order written, and that order is what `h` hashes.
  // The entry's body gets the same order, so that it verifies as it is, not only as read back.
  let text: string;
  let ordered = body;
  if (body.event === undefined) text = JSON.stringify(body);
  else {
    const { event, ...rest } = body;
    text = `${JSON.stringify(rest).slice(0, -1)},"event":${eventJson(event)}}`;
    // The stores write the event last already; a copy is made only for a body that does not (on
    // Node 20, a spread given one more field costs about 1 µs: see lineAt in store.ts).
    let last: string | undefined;
    for (const k in body) last = k;
    if (last !== 'event') ordered = Object.assign({}, rest, { event });
  }
  // Encoded to UTF-8 once: hashed, then written as these bytes.
  const bytes = Buffer.from(text, 'utf8');
  const h = bodyHash(bytes);
  const link = chainLink(prev, h);
  // The fields before the body are a number and hex strings: nothing to escape.
  const head = `{"seq":${seq},"v":2,"h":"${h}","prev":"${prev}","link":"${link}","body":`;
  const line = Buffer.allocUnsafe(head.length + bytes.length + 2);
  line.write(head, 0, 'latin1');
  bytes.copy(line, head.length);
  line.write('}\n', head.length + bytes.length, 'latin1');
  return { entry: { seq, v: 2, h, prev, link, body: ordered }, line };
}

/**
 * What an entry's `h` is the SHA-256 of: the text a store kept, the body as JSON.stringify writes it
 * (format 2: what was written, since parsing JSON.stringify's text and writing it again gives the
 * same text), else its canonical JSON.
 */
function hashedForm(e: JournalEntry & { text?: string }): EntryBody | string {
  return e.text ?? (e.v === 2 ? JSON.stringify(e.body) : e.body);
}

/** A failure found by `verifyChain`, naming the first entry that fails. */
export interface ChainFault {
  seq: number;
  reason: string;
}

/**
 * Checks entries in order: each body hashes to its `h`, links to the entry before it, and the
 * sequence has no gap. `head`, when known, is what the store says the last entry is. An entry with
 * `text` (the body as a store keeps it, e.g. the Redis stream) is checked against that text; one
 * without against its body's canonical JSON (the embedded journal).
 */
export function verifyChain(entries: Iterable<JournalEntry & { text?: string }>, opts: { prev?: string; seq?: number; head?: { seq: number; link: string } } = {}): ChainFault | undefined {
  let prev = opts.prev ?? GENESIS;
  let expected = opts.seq ?? 1;
  let last: JournalEntry | undefined;
  for (const e of entries) {
    if (e.seq !== expected) return { seq: expected, reason: `entry ${expected} is missing or out of order (found ${e.seq})` };
    if (bodyHash(hashedForm(e)) !== e.h) return { seq: e.seq, reason: `entry ${e.seq} was altered: its body does not hash to its h` };
    if (e.prev !== prev) return { seq: e.seq, reason: `entry ${e.seq} does not follow the entry before it (prev does not match)` };
    if (chainLink(e.prev, e.h) !== e.link) return { seq: e.seq, reason: `entry ${e.seq} has a link that does not match its prev and h` };
    if (opts.head && e.seq === opts.head.seq && e.link !== opts.head.link) return { seq: e.seq, reason: `entry ${e.seq} is not the entry the head names` };
    prev = e.link;
    expected += 1;
    last = e;
  }
  const head = opts.head;
  if (head && (!last || last.seq < head.seq)) return { seq: (last?.seq ?? expected - 1) + 1, reason: `the journal ends at entry ${last?.seq ?? 0} but its head says ${head.seq}: entries were removed from the end` };
  return undefined;
}

/** A reservation recovery closes: its lines at their reserved amounts, who and what (meta), and whether it was dispatched. */
export interface RecoveredReservation {
  lines: EntryLine[];
  meta?: Record<string, unknown>;
  dispatched: boolean;
}

/** Why recovery found the reservation open: the embedded store's process stopped, or a Redis reservation expired. */
export type RecoveryCause = 'stopped' | 'expired';

export const RECOVERY_REASONS: Record<RecoveryCause, { charged: string; released: string }> = {
  stopped: {
    charged: 'The gateway stopped while the call was with the provider; recovery charged it at its reservation.',
    released: 'The gateway stopped before the call reached a provider; recovery released it and charged nothing.',
  },
  expired: {
    charged: 'The call was with a provider when its reservation expired without a settlement; recovery charged it at its reservation.',
    released: 'The reservation expired before the call reached a provider; recovery released it and charged nothing.',
  },
};

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/**
 * The decision event of a reservation recovery closed at `at` (epoch ms): who and what from the
 * reservation's meta; charged at the reservation when dispatched (outcome success), else released
 * (outcome failed, INTERNAL); `tollgate.settled_by: recovery` either way. The embedded store's
 * recovery at start uses it; the Redis scripts build the same event in Lua (`recoveryEvent` in
 * redisScripts.ts, from the fragments `recoveryInfo` keeps), and a test holds the two equal.
 */
export function recoveryEvent(id: string, r: RecoveredReservation, at: number, cause: RecoveryCause = 'expired'): Record<string, unknown> {
  const meta = r.meta ?? {};
  const units = (meta.units ?? {}) as Record<string, unknown>;
  const limitUnits = limitUnitsOf(meta);
  const reasons = RECOVERY_REASONS[cause];
  const budgetLines = r.lines.filter((l) => !limitUnits.has(l.budgetId));
  const limitLines = r.lines.filter((l) => limitUnits.has(l.budgetId));
  return {
    event: 'tollgate.decision',
    'request.id': id,
    time: new Date(at).toISOString(),
    transport: str(meta.transport) ?? 'unknown',
    effect: r.dispatched ? 'allow' : 'error',
    outcome: r.dispatched ? 'success' : 'failed',
    'error.code': r.dispatched ? undefined : 'INTERNAL',
    'policy.version': str(meta.policyVersion) ?? 'unknown',
    reason: r.dispatched ? reasons.charged : reasons.released,
    'user.id': str(meta.user),
    'user.teams': teamsOf(meta),
    'user.cost_center': str(meta.costCenter),
    'gen_ai.operation.name': 'chat',
    'gen_ai.request.model': str(meta.model),
    'gen_ai.usage.input_tokens': 0,
    'gen_ai.usage.output_tokens': 0,
    'tollgate.tier.served': r.dispatched ? str(meta.tier) : undefined,
    'tollgate.model.served': r.dispatched ? str(meta.model) : undefined,
    'tollgate.charged': r.dispatched ? budgetLines.map((l) => ({ budget: l.budgetId, subject: l.subject, amount: l.amount, unit: str(units[l.budgetId]) ?? 'tokens' })) : undefined,
    'tollgate.limits_charged': r.dispatched && limitLines.length > 0 ? limitLines.map((l) => limitCharged(l, limitUnits.get(l.budgetId)!)) : undefined,
    'tollgate.estimated_input_tokens': 0,
    'tollgate.cost_usd': 0,
    'tollgate.attempts': [],
    'tollgate.latency_ms': 0,
    'tollgate.settled_by': 'recovery',
  };
}

/**
 * A recovered limit line as a call's event lists it: a cap's slot is given back, so it charged
 * nothing (0 `calls_in_flight`, as a settle lists it); a rate limit keeps what it reserved.
 */
function limitCharged(l: EntryLine, unit: string): Record<string, unknown> {
  return { limit: l.budgetId, subject: l.subject, amount: unit === CAP_UNIT ? 0 : l.amount, unit };
}

/**
 * The lines a recovery charges: those reserved, but a cap's at 0, its slot given back as a settle
 * gives it (the entry then lists what its event lists).
 */
export function recoveredLines(lines: EntryLine[], meta: Record<string, unknown> | undefined): EntryLine[] {
  const units = limitUnitsOf(meta ?? {});
  if (!lines.some((l) => units.get(l.budgetId) === CAP_UNIT)) return lines;
  return lines.map((l) => {
    if (units.get(l.budgetId) !== CAP_UNIT) return l;
    // A copy whose field changes keeps the line's hidden class (test/unit/hidden-classes.test.ts).
    const slot = { ...l };
    slot.amount = 0;
    return slot;
  });
}

/** The unit of a concurrency cap's line (LIMIT_UNITS in policy/limits.ts): its slot, never a charge. */
export const CAP_UNIT = 'calls_in_flight';

/**
 * The rate limits of a reservation's meta, by id, with the unit each is charged in (`requests`,
 * `tokens`, `calls_in_flight`): its lines are the limits', the rest the budgets'. Reservations
 * made before meta named them have none: every line is then listed as a budget's.
 */
export function limitUnitsOf(meta: Record<string, unknown>): Map<string, string> {
  const limits = meta.limits;
  if (limits === null || typeof limits !== 'object') return new Map();
  return new Map(Object.entries(limits as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** The string teams of a reservation's meta, if it names any. */
export function teamsOf(meta: Record<string, unknown>): string[] | undefined {
  return Array.isArray(meta.teams) ? (meta.teams as unknown[]).filter((t): t is string => typeof t === 'string') : undefined;
}

const eventTexts = new WeakMap<object, string>();

/**
 * The JSON text of a decision event, serialised once: the Redis journal stores it in the entry's
 * body and the event log writes the same text after the entry is written, so a 1.5 KB event is
 * not stringified twice per call (and the log line says exactly what the journal holds). An event
 * is not changed once it is handed to the store; a caller that changes one must build a new object.
 */
export function eventJson(event: object): string {
  let text = eventTexts.get(event);
  if (text === undefined) {
    text = JSON.stringify(event);
    eventTexts.set(event, text);
  }
  return text;
}
