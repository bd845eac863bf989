/**
 * Reading the ledger's record back for operators: the embedded journal's segments (read-only, line
 * by line, without taking the directory's lock, so a running gateway keeps writing), and the
 * decision events that the journal's entries or event log files hold. The audit
 * (`tollgate audit verify`) and the usage sinks (`tollgate usage export|report|refusals`) read
 * through here, so they all see the same entries.
 */
import { isUtf8 } from 'node:buffer';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GatewayError } from '../errors.js';
import { parseEventLines } from '../metering/focus.js';
import type { DecisionEvent } from '../metering/events.js';
import type { EntryBody, EntryKind, EntryLine, JournalEntry } from '../quota/journal.js';

const CURRENT = 'journal.jsonl';
const NEXT = 'journal.next';
const ENDED = /^journal-\d{12}\.jsonl$/;

/** One line of a segment: an entry, or a line that is not one. */
export type JournalLine =
  /**
   * `text`: for an entry of format 2, the body as the line holds it (what `h` hashes), or, when the
   * line is not in the form the gateway writes, the whole line (which then hashes to nothing).
   */
  | { file: string; line: number; entry: JournalEntry; text?: string }
  /** `torn`: the segment's last line is not whole JSON (being written, or cut by a crash); `unreadable`: a line before it is not an entry. */
  | { file: string; line: number; problem: 'torn' | 'unreadable'; detail: string };

/** The names of the ended segments, in order (a running gateway adds one when a segment ends). */
export function endedSegmentNames(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => ENDED.test(f))
    .sort();
}

/** The current segment's file name in `dir` (`journal.next` while a segment change is cut between its renames), if there is one. */
export function currentSegmentName(dir: string): string | undefined {
  return [CURRENT, NEXT].find((name) => existsSync(join(dir, name)));
}

/** Whether `dir` holds an embedded journal. */
export function isJournalDir(dir: string): boolean {
  return existsSync(dir) && (existsSync(join(dir, CURRENT)) || existsSync(join(dir, NEXT)) || endedSegmentNames(dir).length > 0);
}

/** Throws the operator's error for a directory that holds no journal. */
export function requireJournalDir(dir: string): void {
  if (!isJournalDir(dir)) {
    throw new GatewayError('INVALID_REQUEST', `no journal in ${dir} (no journal.jsonl or journal-<seq>.jsonl); pass the gateway's data directory with --data-dir or TOLLGATE_DATA_DIR`);
  }
}

/** Whether a parsed line has the shape of a journal entry. */
export function isEntry(v: unknown): v is JournalEntry {
  if (!v || typeof v !== 'object') return false;
  const e = v as Record<string, unknown>;
  const body = e.body as Record<string, unknown> | undefined;
  return (
    Number.isSafeInteger(e.seq) &&
    typeof e.h === 'string' &&
    typeof e.prev === 'string' &&
    typeof e.link === 'string' &&
    !!body &&
    typeof body === 'object' &&
    typeof body.kind === 'string' &&
    typeof body.id === 'string' &&
    typeof body.at === 'number'
  );
}

/** Where the first byte that is not UTF-8 lies in `line`, or -1 when it is all UTF-8. */
function notUtf8At(line: Buffer): number {
  if (isUtf8(line)) return -1;
  // Decoding puts U+FFFD for a bad sequence: the first one the bytes do not spell out is it.
  let at = 0;
  for (const c of line.toString('utf8')) {
    const cp = c.codePointAt(0)!;
    if (cp === 0xfffd && !(line[at] === 0xef && line[at + 1] === 0xbf && line[at + 2] === 0xbd)) return at;
    at += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return at;
}

/**
 * The body of a format-2 line as its bytes hold it: after the fields the gateway writes before it,
 * in its order and form (chainedLine), up to the closing brace. `h` is the hash of these bytes, so
 * a change that parsing the line would hide (a key repeated, a space, another escape) is seen. A
 * line not in that form gives itself whole, which no `h` matches.
 */
function bodyText(raw: Buffer, e: JournalEntry): string {
  const head = `{"seq":${e.seq},"v":2,"h":"${e.h}","prev":"${e.prev}","link":"${e.link}","body":`;
  const text = raw.toString('utf8');
  return text.startsWith(head) && text.endsWith('}') ? text.slice(head.length, -1) : text;
}

function* segmentLines(file: string, name: string): Generator<JournalLine> {
  const bytes = readFileSync(file);
  const lines: Buffer[] = [];
  for (let start = 0; start < bytes.length; ) {
    const end = bytes.indexOf(0x0a, start);
    lines.push(bytes.subarray(start, end === -1 ? bytes.length : end));
    start = end === -1 ? bytes.length : end + 1;
  }
  // A whole file ends with a newline.
  const whole = bytes.length === 0 || bytes[bytes.length - 1] === 0x0a;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const last = i === lines.length - 1;
    let parsed: unknown;
    let ok = true;
    try {
      parsed = JSON.parse(raw.toString('utf8'));
    } catch {
      ok = false;
    }
    const bad = notUtf8At(raw);
    if (ok && bad === -1 && isEntry(parsed) && (whole || !last)) {
      yield parsed.v === 2 ? { file: name, line: i + 1, entry: parsed, text: bodyText(raw, parsed) } : { file: name, line: i + 1, entry: parsed };
      continue;
    }
    // What the store drops at its next start (readSegment) as torn: a last line that is not whole
    // JSON, and a line that is not JSON followed only by a partial one.
    const tail = last || (i === lines.length - 2 && !whole);
    if (tail && (!ok || !whole)) yield { file: name, line: i + 1, problem: 'torn', detail: `its last line (${raw.length} bytes) is not a whole entry` };
    else if (bad !== -1) yield { file: name, line: i + 1, problem: 'unreadable', detail: `the line holds bytes that are not UTF-8 (at byte ${bad} of the line); tollgate writes JSON text only` };
    else yield { file: name, line: i + 1, problem: 'unreadable', detail: ok ? 'the line is JSON but not a journal entry' : 'the line is not JSON' };
  }
}

/**
 * Every line of every segment of the journal in `dir`, in order: the ended segments
 * (`journal-<first seq>.jsonl`) by name, then the current one (`journal.jsonl`, or
 * `journal.next` when a segment change was cut between its two renames). A segment that ends
 * while this reads (the gateway is running) is read before the current one.
 */
export function* journalLines(dir: string): Generator<JournalLine> {
  requireJournalDir(dir);
  const seen = new Set<string>();
  const readEnded = function* (): Generator<JournalLine> {
    for (const name of endedSegmentNames(dir)) {
      if (seen.has(name)) continue;
      seen.add(name);
      yield* segmentLines(join(dir, name), name);
    }
  };
  yield* readEnded();
  // Segments that ended meanwhile come before the current one.
  yield* readEnded();
  for (const name of [CURRENT, NEXT]) {
    const file = join(dir, name);
    if (!existsSync(file)) continue;
    try {
      yield* segmentLines(file, name);
      return;
    } catch (err) {
      // Renamed away by a segment change between the check and the read.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

/** The error for a line of the journal in `dir` that is not an entry. */
export function notAnEntry(dir: string, file: string, line: number, detail: string): GatewayError {
  return new GatewayError('INVALID_REQUEST', `the journal in ${dir} has a line that is not an entry (${file} line ${line}: ${detail}); run \`tollgate audit verify --data-dir ${dir}\``);
}

/**
 * The journal's entries in order, throwing on a line that is not one. A torn last line of the
 * current segment (being written, or cut by a crash: the store drops it at its next start) is
 * skipped, and said through `warn`.
 */
export function* journalEntries(dir: string, warn?: (message: string) => void): Generator<{ file: string; line: number; entry: JournalEntry }> {
  for (const l of journalLines(dir)) {
    if ('entry' in l) yield l;
    else if (l.problem === 'unreadable' || (l.file !== CURRENT && l.file !== NEXT)) throw notAnEntry(dir, l.file, l.line, l.detail);
    else warn?.(`${dir}: skipped ${l.file} line ${l.line}, a partial entry after the last whole one (being written, or cut by a crash; the gateway drops it at its next start)`);
  }
}

/** The entries of one ended segment of the journal in `dir`, throwing on a line that is not one. */
export function* endedSegmentEntries(dir: string, name: string): Generator<JournalEntry> {
  for (const l of segmentLines(join(dir, name), name)) {
    if ('entry' in l) yield l.entry;
    else throw notAnEntry(dir, l.file, l.line, l.detail);
  }
}

/** A decision as a sink reads it: the event, when it was committed, and the ledger lines it charged. */
export interface Decision {
  event: DecisionEvent;
  /** Epoch ms: the journal entry's time; from an event file, the call's start plus its latency. */
  at: number;
  /** The journal entry that carries it (absent for an event file). */
  kind?: EntryKind;
  /** What the ledger charged with it (settle and recover entries); from an event file, its `tollgate.charged`. */
  charges: { budgetId: string; subject: string; amount: number; unit?: string }[];
}

const CARRIES_EVENT: ReadonlySet<EntryKind> = new Set(['settle', 'recover', 'release', 'refuse']);

function chargesOfEvent(e: DecisionEvent): Decision['charges'] {
  return (e['tollgate.charged'] ?? []).map((c) => ({ budgetId: c.budget, subject: c.subject, amount: c.amount, unit: c.unit }));
}

function chargesOfLines(lines: EntryLine[] | undefined, e: DecisionEvent): Decision['charges'] {
  const units = new Map((e['tollgate.charged'] ?? []).map((c) => [c.budget, c.unit]));
  return (lines ?? []).map((l) => ({ budgetId: l.budgetId, subject: l.subject, amount: l.amount, unit: units.get(l.budgetId) }));
}

/** Whether an entry's body carries a decision event (settle, recover, release and refuse entries with an event). */
export function carriesDecision(body: EntryBody): body is EntryBody & { event: Record<string, unknown> } {
  return CARRIES_EVENT.has(body.kind) && !!body.event;
}

/** The decision an entry carries: settle, recover, release and refuse entries with an event; none for other entries. */
export function decisionOfEntry(entry: JournalEntry): Decision | undefined {
  const b = entry.body;
  if (!carriesDecision(b)) return undefined;
  const event = b.event as unknown as DecisionEvent;
  const charging = b.kind === 'settle' || b.kind === 'recover';
  return { event, at: b.at, kind: b.kind, charges: charging ? chargesOfLines(b.lines, event) : [] };
}

/** The decision events of a journal directory: one per settle, recover, release and refuse entry that carries one; a torn last line skipped is said through `warn`. */
export function* journalDecisions(dir: string, warn?: (message: string) => void, held?: HeldFrom): Generator<Decision> {
  let first = true;
  for (const { entry } of journalEntries(dir, warn)) {
    if (first) requireHeldFrom(entry, held, `The journal in ${dir}`);
    first = false;
    const d = decisionOfEntry(entry);
    if (d) yield d;
  }
}

/** What a reading asks a journal to hold: everything from `from` on, unless `trimmed` (--trimmed) takes what it holds. */
export interface HeldFrom {
  from?: number;
  trimmed?: boolean;
}

/**
 * Throws INVALID_REQUEST when a journal's first entry (`first`: of its first segment, or of a Redis
 * stream) is not entry 1 and comes after the reading's `from`: the entries before it were trimmed
 * by retention or archived, and a reading from `from` would look whole while missing them.
 */
export function requireHeldFrom(first: JournalEntry, held: HeldFrom | undefined, where: string): void {
  if (!held || held.trimmed || held.from === undefined || first.seq <= 1 || !(first.body.at > held.from)) return;
  const since = new Date(first.body.at).toISOString();
  throw new GatewayError(
    'INVALID_REQUEST',
    `${where} starts at entry ${first.seq}, written ${since}: the entries before it were trimmed by retention or archived, so it does not hold what came between ${new Date(held.from).toISOString()} and then. ` +
      `Read from ${since} on (--from), read an archived copy, or pass --trimmed to read what it holds.`,
  );
}

/** The decision events of event log files (JSON lines; other log lines skipped, lines that are not JSON reported through `warn`). */
export function* fileDecisions(paths: readonly string[], warn: (message: string) => void): Generator<Decision> {
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new GatewayError('INVALID_REQUEST', `cannot read events file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const parsed = parseEventLines(text);
    // A line cut short by a crash is reported, not silently skipped: the totals would not match.
    if (parsed.malformed.length) warn(`${path}: skipped ${parsed.malformed.length} line(s) that are not JSON: ${parsed.malformed.slice(0, 10).join(', ')}`);
    for (const event of parsed.events) {
      const start = Date.parse(event.time);
      yield { event, at: start + (typeof event['tollgate.latency_ms'] === 'number' ? event['tollgate.latency_ms'] : 0), charges: chargesOfEvent(event) };
    }
  }
}

/** The embedded journal's directory when none is named, as `tollgate serve` would use it: TOLLGATE_DATA_DIR, else `tollgate-data` under the working directory. */
export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  const dir = env.TOLLGATE_DATA_DIR || 'tollgate-data';
  if (dir === 'none') throw new GatewayError('INVALID_REQUEST', 'TOLLGATE_DATA_DIR is none: that gateway keeps no journal; name a data directory with --data-dir');
  return dir;
}

/** Where a sink reads decisions from. */
export type Source = { kind: 'journal'; dir: string } | { kind: 'events'; files: string[] } | { kind: 'redis'; url: string };

/** The options every reading command takes for its source. */
export interface SourceOptions {
  'data-dir'?: string;
  redis?: string;
  events?: string[];
}

/**
 * The one source named by --data-dir, --redis or --events (and event files given as arguments);
 * none names the embedded journal in TOLLGATE_DATA_DIR, else ./tollgate-data.
 */
export function sourceFrom(values: SourceOptions, files: readonly string[], defaultDataDir: string): Source {
  const eventFiles = [...(values.events ?? []), ...files];
  const named = [values['data-dir'] !== undefined, values.redis !== undefined, eventFiles.length > 0].filter(Boolean).length;
  if (named > 1) throw new GatewayError('INVALID_REQUEST', 'read from one source: --data-dir <dir> (the embedded journal), --redis <url> (the Redis journal) or --events <file>... (event logs)');
  if (values.redis !== undefined) return { kind: 'redis', url: values.redis };
  if (eventFiles.length > 0) return { kind: 'events', files: eventFiles };
  return { kind: 'journal', dir: values['data-dir'] ?? defaultDataDir };
}
