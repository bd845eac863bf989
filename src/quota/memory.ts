import { recoveredLines, type EntryBody, type EntryLine, type JournalEntry } from './journal.js';
import type { AlertLedger, DecisionRecord, EventListener, LedgerLine, LineState, QuotaStore, ReserveOptions, ReserveOutcome } from './store.js';

interface Reservation {
  lines: EntryLine[];
  expiresAt: number;
  dispatched: boolean;
  meta?: DecisionRecord;
}

/**
 * How long a settled request id is remembered so a repeated settle is not counted twice, and how
 * many are kept at most. In one process a repeat can only come from the same call's own retry, so a
 * short window is enough; an unbounded one grows by every call ever made. 100,000 ids are four
 * minutes at 420 calls a second (issue 21: 200,000 cost ~22 MB of heap and a 10 MB snapshot at
 * every segment change, and the map's table doubled once more ~62,000 settles past the bound, so the
 * memory store's RSS was still rising in a soak warmed up past 200,000 calls).
 */
const SETTLED_MEMORY_MS = 15 * 60_000;
const SETTLED_MAX = 100_000;

/** Limits a test can lower. */
export interface MemoryStoreOptions {
  /** Settled request ids remembered at most (default 100,000); the oldest is forgotten first. */
  settledMax?: number;
}

/** Where the embedded store writes its journal (src/quota/fileJournal.ts); absent for a store that keeps nothing. */
export interface JournalWriter {
  /**
   * Appends one entry; written before it returns, so a killed process keeps it (fsync is grouped).
   * Throws (QUOTA_STORE_UNAVAILABLE) when it cannot be written: for what a call may not go on without.
   */
  append(body: EntryBody): JournalEntry;
  /**
   * Appends one entry, or keeps it to write once the journal can be written again (true: written
   * now): for what records a call that happened. Without it, `append` is used.
   */
  appendOrKeep?(body: EntryBody): boolean;
  /** Told of each kept entry once it is written; the store sets it. */
  onLateWrite?: ((body: EntryBody) => void) | undefined;
  /** Writes what is buffered and lets the directory go. */
  close(): Promise<void>;
}

/** What a recovery did with the reservations a previous process left open. */
export interface RecoveryReport {
  charged: { id: string; lines: EntryLine[] }[];
  released: string[];
}

function entryLine(l: LedgerLine): EntryLine {
  return { budgetId: l.budgetId, subject: l.subject, usageKey: l.usageKey, reservedKey: l.reservedKey, amount: l.amount, expiresAt: l.expiresAt };
}

/**
 * The embedded single-process ledger. Each operation runs synchronously inside one event-loop
 * turn, which makes check-and-add atomic without locks. With a journal (the default of `tollgate
 * serve` without Redis) every change is appended to it in that same turn, a charge together with
 * its decision event, and a restart replays it (`restore`, then `recover`); without one, state is
 * lost on exit (the fail-open fallback and tests).
 */
export class MemoryQuotaStore implements QuotaStore, AlertLedger {
  readonly kind = 'memory';
  readonly guarded: boolean = true;
  private readonly counters = new Map<string, { value: number; expiresAt: number }>();
  private readonly reserved = new Map<string, number>();
  private readonly reservations = new Map<string, Reservation>();
  private readonly settled = new Map<string, number>();
  private readonly listeners: EventListener[] = [];
  /** Alert marks (key -> lapses at, epoch ms): journaled with the alert they mark, so a restart keeps them. */
  private readonly alertMarks = new Map<string, number>();
  /** Alert counters (refusal spikes); not journaled, so a restart starts them again. */
  private readonly alertCounts = new Map<string, { value: number; expiresAt: number }>();
  private lastSweep = 0;
  private readonly settledMax: number;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly journal?: JournalWriter,
    opts: MemoryStoreOptions = {},
  ) {
    this.settledMax = opts.settledMax ?? SETTLED_MAX;
    // A kept entry's event goes out once the entry is written, as every other event does.
    if (journal) {
      journal.onLateWrite = (body) => {
        if (body.event) this.emit(body.event);
      };
    }
  }

  /** Whether the store writes a journal (and so has something to restore and recover). */
  get journaled(): boolean {
    return this.journal !== undefined;
  }

  /**
   * With `dispatching` the reservation's entry carries the dispatch mark (`dispatched: true`) and
   * `dispatch` writes nothing: one entry where a served call wrote two (issue 21), and a restart
   * charges it as it would a reservation followed by a `dispatch` entry.
   */
  async reserve(requestId: string, lines: LedgerLine[], ttlMs: number, meta?: DecisionRecord, opts: ReserveOptions = {}): Promise<ReserveOutcome> {
    this.sweep();
    if (this.reservations.has(requestId) || this.settled.has(requestId)) return { ok: true };
    const { atMost } = opts;
    const states: LineState[] | undefined = atMost ? [] : undefined;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      const used = this.sum(line.readKeys);
      const reserved = this.reserved.get(line.reservedKey) ?? 0;
      if (used + reserved + line.amount > line.limit || used + reserved > (atMost?.[i] ?? Infinity)) {
        const buckets = line.readKeys.map((k) => this.sum([k]));
        return { ok: false, budgetId: line.budgetId, subject: line.subject, used, reserved, limit: line.limit, requested: line.amount, buckets };
      }
      states?.push({ used, reserved });
    }
    const expiresAt = this.now() + ttlMs;
    const taken = lines.map(entryLine);
    const dispatched = opts.dispatching === true;
    this.journal?.append({ kind: 'reserve', id: requestId, at: this.now(), lines: taken, expiresAt, meta, dispatched: dispatched || undefined });
    this.hold(requestId, { lines: taken, expiresAt, dispatched, meta });
    return states ? { ok: true, states } : { ok: true };
  }

  async dispatch(requestId: string): Promise<void> {
    const r = this.reservations.get(requestId);
    if (!r || r.dispatched) return;
    this.journal?.append({ kind: 'dispatch', id: requestId, at: this.now() });
    r.dispatched = true;
  }

  /** Not journaled: a restart closes open reservations through recovery whatever their expiry. */
  async extend(requestId: string, ttlMs: number): Promise<void> {
    const r = this.reservations.get(requestId);
    if (r) r.expiresAt = Math.max(r.expiresAt, this.now() + ttlMs);
  }

  async settle(requestId: string, lines: LedgerLine[], event?: DecisionRecord): Promise<void> {
    if (this.settled.has(requestId)) return;
    const charged = lines.map(entryLine);
    // The call happened: if the journal cannot take its entry now, the charge counts at once and
    // the entry (with its event) is written as soon as it can be.
    const written = this.keep({ kind: 'settle', id: requestId, at: this.now(), lines: charged, settledBy: 'call', event });
    this.applyCharge(requestId, charged);
    if (event && written) this.emit(event);
  }

  async release(requestId: string, event?: DecisionRecord): Promise<void> {
    const written = this.journal && (this.reservations.has(requestId) || event) ? this.keep({ kind: 'release', id: requestId, at: this.now(), event }) : true;
    this.drop(requestId);
    if (event && written) this.emit(event);
  }

  async record(event: DecisionRecord): Promise<void> {
    if (this.keep({ kind: 'refuse', id: String(event['request.id'] ?? ''), at: this.now(), event })) this.emit(event);
  }

  async recordAction(id: string, action: Record<string, unknown>): Promise<void> {
    this.keep({ kind: 'console', id, at: this.now(), action });
  }

  /** Journals an entry now or keeps it for later (see JournalWriter); true when written now, or when there is no journal. */
  private keep(body: EntryBody): boolean {
    if (!this.journal) return true;
    if (this.journal.appendOrKeep) return this.journal.appendOrKeep(body);
    this.journal.append(body);
    return true;
  }

  onEvent(listener: EventListener): void {
    this.listeners.push(listener);
  }

  /**
   * Live usage counters whose key matches `pattern`, a glob where `*` stands for any run of
   * characters (the subset of Redis globs the operator views use), sorted by key.
   */
  async listUsage(pattern: string): Promise<{ key: string; used: number }[]> {
    this.sweep();
    const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    const now = this.now();
    const found: { key: string; used: number }[] = [];
    for (const [key, c] of this.counters) if (c.expiresAt > now && /:u:-?\d+$/.test(key) && re.test(key)) found.push({ key, used: c.value });
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async claimAlert(key: string, expiresAt: number, alert: DecisionRecord): Promise<boolean> {
    const now = this.now();
    const held = this.alertMarks.get(key);
    if (held !== undefined && held > now) return false;
    this.keep({ kind: 'alert', id: String(alert.id ?? key), at: now, alert, mark: { key, expiresAt } });
    this.alertMarks.set(key, expiresAt);
    return true;
  }

  async noteAlert(alert: DecisionRecord): Promise<void> {
    this.keep({ kind: 'alert', id: String(alert.id ?? ''), at: this.now(), alert });
  }

  async countAlert(key: string, by: number, expiresAt: number): Promise<number> {
    const now = this.now();
    const c = this.alertCounts.get(key);
    if (c && c.expiresAt > now) {
      c.value += by;
      return c.value;
    }
    this.alertCounts.set(key, { value: by, expiresAt });
    return by;
  }

  async read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    this.sweep();
    return lines.map((l) => ({ used: this.sum(l.readKeys), reserved: this.reserved.get(l.reservedKey) ?? 0 }));
  }

  async close(): Promise<void> {
    await this.journal?.close();
    this.counters.clear();
    this.reserved.clear();
    this.reservations.clear();
    this.settled.clear();
    this.alertMarks.clear();
    this.alertCounts.clear();
  }

  /**
   * Applies journal entries written by an earlier process, without writing or emitting anything:
   * counters, open reservations and recently settled ids come back as they were.
   */
  restore(entries: Iterable<EntryBody>): void {
    for (const body of entries) {
      switch (body.kind) {
        case 'snapshot':
          this.restoreSnapshot(body.state ?? {});
          break;
        case 'reserve':
          // Journals before the one-entry reservation marked dispatch in an entry of its own (below).
          if (!this.settled.has(body.id)) this.hold(body.id, { lines: body.lines ?? [], expiresAt: body.expiresAt ?? 0, dispatched: body.dispatched === true, meta: body.meta });
          break;
        case 'dispatch': {
          const r = this.reservations.get(body.id);
          if (r) r.dispatched = true;
          break;
        }
        case 'settle':
        case 'recover':
          if (!this.settled.has(body.id)) this.applyCharge(body.id, body.lines ?? [], body.at);
          break;
        case 'release':
          this.drop(body.id);
          break;
        case 'alert':
          if (body.mark) this.alertMarks.set(body.mark.key, body.mark.expiresAt);
          break;
        default:
          break;
      }
    }
  }

  /**
   * Closes the reservations a previous process left open: a call that reached a provider
   * (dispatched) is charged at its reservation, never more, with an event saying `settled_by:
   * recovery`; one that never did is released, with an event saying nothing was charged.
   */
  recover(eventFor: (id: string, r: { lines: EntryLine[]; meta?: DecisionRecord; dispatched: boolean }) => DecisionRecord): RecoveryReport {
    const report: RecoveryReport = { charged: [], released: [] };
    for (const [id, r] of [...this.reservations]) {
      const event = eventFor(id, r);
      let written: boolean;
      if (r.dispatched) {
        const lines = recoveredLines(r.lines, r.meta);
        written = this.keep({ kind: 'recover', id, at: this.now(), lines, settledBy: 'recovery', event });
        this.applyCharge(id, lines);
        report.charged.push({ id, lines });
      } else {
        written = this.keep({ kind: 'release', id, at: this.now(), event });
        this.drop(id);
        report.released.push(id);
      }
      if (written) this.emit(event);
    }
    return report;
  }

  /** The state a new journal segment starts from (live counters, open reservations, recent settlements). */
  snapshot(): Record<string, unknown> {
    this.sweep(true);
    return {
      counters: Object.fromEntries(this.counters),
      reservations: Object.fromEntries(this.reservations),
      settled: this.settledFlat(),
      alertMarks: Object.fromEntries(this.alertMarks),
    };
  }

  /**
   * The settled ids as a snapshot holds them: id, remembered until, id, remembered until..., oldest
   * first. One flat array of strings and numbers, not an object keyed by id: the entry's hash
   * (canonical JSON) sorts an object's keys and goes through it value by value, which for 200,000
   * ids held the event loop ~0.4 s at every segment change (issue 21); a flat array of plain values
   * is one JSON.stringify.
   */
  private settledFlat(): (string | number)[] {
    const flat: (string | number)[] = [];
    for (const [id, until] of this.settled) flat.push(id, until);
    return flat;
  }

  private restoreSnapshot(state: Record<string, unknown>): void {
    this.counters.clear();
    this.reserved.clear();
    this.reservations.clear();
    this.settled.clear();
    const counters = (state.counters ?? {}) as Record<string, { value: number; expiresAt: number }>;
    for (const [key, c] of Object.entries(counters)) this.counters.set(key, { value: c.value, expiresAt: c.expiresAt });
    const reservations = (state.reservations ?? {}) as Record<string, Reservation>;
    for (const [id, r] of Object.entries(reservations)) this.hold(id, { lines: r.lines, expiresAt: r.expiresAt, dispatched: r.dispatched, meta: r.meta });
    if (Array.isArray(state.settled)) {
      const flat = state.settled as (string | number)[];
      for (let i = 0; i + 1 < flat.length; i += 2) this.settled.set(String(flat[i]), Number(flat[i + 1]));
    } else {
      // Snapshots written before issue 21 hold an object keyed by id.
      for (const [id, until] of Object.entries((state.settled ?? {}) as Record<string, number>)) this.settled.set(id, until);
    }
    // A snapshot written under a larger bound keeps its newest ids.
    for (const id of this.settled.keys()) {
      if (this.settled.size <= this.settledMax) break;
      this.settled.delete(id);
    }
    this.alertMarks.clear();
    const marks = (state.alertMarks ?? {}) as Record<string, number>;
    for (const [key, until] of Object.entries(marks)) this.alertMarks.set(key, until);
  }

  private hold(requestId: string, r: Reservation): void {
    for (const l of r.lines) this.reserved.set(l.reservedKey, (this.reserved.get(l.reservedKey) ?? 0) + l.amount);
    this.reservations.set(requestId, r);
  }

  private applyCharge(requestId: string, lines: EntryLine[], at = this.now()): void {
    this.drop(requestId);
    for (const line of lines) {
      // A charge whose window has ended changes no counter (as on Redis); the journal still has it.
      if (line.expiresAt <= at) continue;
      const counter = this.counters.get(line.usageKey);
      if (counter && counter.expiresAt > at) {
        counter.value += line.amount;
        counter.expiresAt = Math.max(counter.expiresAt, line.expiresAt);
      } else {
        this.counters.set(line.usageKey, { value: line.amount, expiresAt: line.expiresAt });
      }
    }
    this.settled.set(requestId, at + SETTLED_MEMORY_MS);
    if (this.settled.size > this.settledMax) {
      // Maps iterate in insertion order: the first entry is the oldest.
      const oldest = this.settled.keys().next();
      if (!oldest.done) this.settled.delete(oldest.value);
    }
  }

  private emit(event: DecisionRecord): void {
    for (const l of this.listeners) l(event);
  }

  private sum(keys: string[]): number {
    const now = this.now();
    let total = 0;
    for (const key of keys) {
      const c = this.counters.get(key);
      if (c && c.expiresAt > now) total += c.value;
    }
    return total;
  }

  private drop(requestId: string): void {
    const r = this.reservations.get(requestId);
    if (!r) return;
    this.reservations.delete(requestId);
    for (const l of r.lines) {
      const left = (this.reserved.get(l.reservedKey) ?? 0) - l.amount;
      if (left > 0) this.reserved.set(l.reservedKey, left);
      else this.reserved.delete(l.reservedKey);
    }
  }

  /** Forgets old counters and settled ids, and (without a journal) lapsed reservations; at most once a second. */
  private sweep(force = false): void {
    const now = this.now();
    if (!force && now - this.lastSweep < 1000 && now >= this.lastSweep) return;
    this.lastSweep = now;
    // With a journal a reservation stays until its call settles or releases it (a provider call has
    // its own timeout); the TTL is for reservations whose process is gone, which recovery closes.
    if (!this.journal) for (const [id, r] of this.reservations) if (r.expiresAt <= now) this.drop(id);
    for (const [key, c] of this.counters) if (c.expiresAt <= now) this.counters.delete(key);
    // Settled ids go in as they settle, so the oldest come first: stop at the first one still
    // remembered instead of going through all of them every second (a clock set back only keeps
    // some longer; the count bound holds regardless).
    for (const [id, until] of this.settled) {
      if (until > now) break;
      this.settled.delete(id);
    }
    for (const [key, until] of this.alertMarks) if (until <= now) this.alertMarks.delete(key);
    for (const [key, c] of this.alertCounts) if (c.expiresAt <= now) this.alertCounts.delete(key);
  }
}
