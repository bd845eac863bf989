/**
 * The quota ledger's interface. A reservation covers every budget line of a call or none;
 * settling charges actual usage and releases the rest. Both are idempotent by request id, and
 * reservations expire so a crashed replica cannot pin a budget.
 *
 * Amounts are integers: tokens, or micro-dollars (1e-6 USD) for dollar budgets.
 */

/** One budget a call is charged to, resolved to concrete keys for the current window. */
export interface LedgerLine {
  /** The policy budget id, e.g. `employee-weekly`. */
  budgetId: string;
  /** The subject within the budget's scope, e.g. the user id or team name. */
  subject: string;
  /** The counter that settled usage is added to (the current window or rolling bucket). */
  usageKey: string;
  /** Counters whose sum is the usage the limit is checked against (one for calendar windows, N buckets for rolling). */
  readKeys: string[];
  /** Where live reservations for this budget and subject are tracked. */
  reservedKey: string;
  /** The limit in the budget's unit. */
  limit: number;
  /** The amount to reserve (reserve) or that was consumed (settle). */
  amount: number;
  /** Epoch ms after which usageKey may be forgotten (window end plus slack). */
  expiresAt: number;
  /**
   * The line's JSON as a journal entry lists it (`lineText` in redisJournal.ts), made once for a
   * line many calls share (a rate limit's, src/policy/limits.ts) instead of per entry.
   */
  text?: string;
  /**
   * The line's JSON up to its amount (`lineHead` in redisJournal.ts), made once for a line many
   * calls share (a budget's, src/policy/budgets.ts, or a rate limit's, src/policy/limits.ts): every
   * field before the amount must be this line's.
   */
  head?: string;
  /**
   * A rate limit's or a rolling budget's current bucket, [start, end) in epoch ms (a calendar
   * window's line has none): the line charges the bucket starting at
   * `start` and reads the window ending with it, so it is right only while the store's clock is in
   * it. A store with a clock of its own (Redis's) refuses such a line outside it (ClockSkewError)
   * rather than let a replica whose clock is off charge a bucket the others do not read yet.
   */
  bucket?: readonly [number, number];
  /**
   * With a bucket: the usage keys of the buckets right after it, in order. A reservation reaches
   * the store some time after its line was resolved (under a loaded event loop, hundreds of ms:
   * more than a per-second limit's bucket); when the store's clock has passed the line's bucket by
   * no more buckets than these, the store charges the bucket its clock is in and reads the window
   * ending there (ReserveOutcome `late`), rather than refuse the line as skewed.
   */
  lateKeys?: readonly string[];
}

/**
 * A line's bucket is not current by the store's clock (`storeTime`, epoch ms): the caller's clock
 * differs from the store's by more than what is left of the bucket. Nothing was reserved; the
 * caller resolves its lines again at the store's time (`clockOffsetMs`) and retries.
 */
export class ClockSkewError extends Error {
  constructor(readonly storeTime: number) {
    super(`a line's bucket is not the current one by the quota store's clock (${new Date(storeTime).toISOString()})`);
    this.name = 'ClockSkewError';
  }
}

/**
 * `line` at `amount`: a new line with the line's fields written out, in the order every line is made
 * in (src/policy/budgets.ts, src/policy/limits.ts). Not `{ ...line, amount }`: on Node 20's V8 an
 * object made by a spread and given one more field gets a hidden class of its own each time once the
 * code is optimised (about 1 µs a line, against 0.03), and every function that later reads such lines
 * misses its inline cache (issue 21). `text`, the JSON of one particular amount, is not carried over.
 */
export function lineAt(line: Omit<LedgerLine, 'amount'>, amount: number): LedgerLine {
  return { budgetId: line.budgetId, subject: line.subject, limit: line.limit, expiresAt: line.expiresAt, usageKey: line.usageKey, readKeys: line.readKeys, reservedKey: line.reservedKey, head: line.head, bucket: line.bucket, lateKeys: line.lateKeys, amount };
}

/** Used and reserved amounts of one budget line. */
export interface LineState {
  used: number;
  reserved: number;
}

export type ReserveOutcome =
  | {
      ok: true;
      /**
       * Each line's used and reserved amounts just before this reservation, in the order given:
       * what `read` would have returned then. Given when the reservation was asked with `atMost`
       * and made now (not on the no-op of a repeat).
       */
      states?: LineState[];
      /**
       * Per line, in the order given, how many buckets after its own the line was charged in
       * (LedgerLine.lateKeys): settle it at that bucket. Absent when every line was charged in its own.
       */
      late?: number[];
    }
  | {
      ok: false;
      budgetId: string;
      subject: string;
      used: number;
      reserved: number;
      limit: number;
      requested: number;
      /** What each of the refusing line's `readKeys` holds, in order (a rate limit's retry time is worked out from them). */
      buckets?: number[];
      /** How many buckets after its own the refusing line was checked in (LedgerLine.lateKeys): `buckets` are that window's. */
      late?: number;
    };

/** A decision event as the journal holds it: opaque to the store, committed with the ledger change it explains. */
export type DecisionRecord = Record<string, unknown>;

/** Receives each decision event once the journal holds it (the event log, SIEM, metrics read from here). */
export type EventListener = (event: DecisionRecord) => void;

/** How a reservation is made. */
export interface ReserveOptions {
  /**
   * The call goes to a provider as soon as the reservation holds, with nothing but local code in
   * between (the pipeline's reserve step is followed by its dispatch step). A store may then write
   * the dispatch mark with the reservation, a round trip less on the call path, and `dispatch` has
   * nothing left to write. Recovery reads the mark as if `dispatch` had written it: a replica that
   * dies once the reservation holds has its call charged at the reservation, as one that died just
   * after a separate mark would.
   */
  dispatching?: boolean;
  /**
   * Per line, in the order given, the most its used + reserved may be just before this
   * reservation for the reservation to be made (no bound where absent or not finite). A caller that
   * planned the call on assumed states without reading them (src/pipeline/steps/decide.ts) states
   * here what its plan took for granted; a line over its bound refuses the reservation as a line
   * that cannot take its amount does, and the caller reads and plans again. Checked in the same
   * atomic step as the limits, so nothing can come between the check and the reservation.
   */
  atMost?: readonly number[];
}

export interface QuotaStore {
  /** A short name for logs and metrics (`memory`, `redis`). */
  readonly kind: string;
  /**
   * True when `reserve` honours `ReserveOptions.atMost` and returns the lines' states with a
   * reservation made under it: the pipeline may then reserve a call without reading its budgets first.
   */
  readonly guarded?: boolean;
  /**
   * A store with a clock of its own (Redis's TIME, against which `reserve` checks lines' buckets:
   * ClockSkewError) owns how far that clock is ahead of this process's. `learnTime` measures it from
   * a refused reservation sent at `sentAt` and answered at `receivedAt` (by this process's clock)
   * that found the store's time to be `storeTime` (which proves the offset within [storeTime -
   * receivedAt, storeTime - sentAt]; the offset moves only when what was measured excludes it), and
   * returns the new offset when it moved by 10 ms or more (worth a log line), else undefined. The ledger resolves windows at this process's time
   * plus `clockOffsetMs()`, and the store counts its counters' lifetimes and reservations' expiries
   * by the same (a lifetime counted from a clock hours ahead was over before it began).
   */
  learnTime?(storeTime: number, sentAt: number, receivedAt: number): number | undefined;
  clockOffsetMs?(): number;
  /**
   * Atomically checks `used + reserved + amount <= limit` for every line and, only if all pass,
   * reserves every amount under `requestId` for `ttlMs`. Reserving the same request id twice is a no-op
   * that returns the first outcome's success. `meta` (who, which model) is kept with the
   * reservation so that a recovery can say whom it charged.
   */
  reserve(requestId: string, lines: LedgerLine[], ttlMs: number, meta?: DecisionRecord, opts?: ReserveOptions): Promise<ReserveOutcome>;
  /**
   * Records that the call is about to reach a provider, before any byte leaves. From then on a call
   * that is never settled (its replica crashed) is charged at its reservation by recovery; before
   * it, it is released. Resolves once the mark is written.
   */
  dispatch(requestId: string): Promise<void>;
  /**
   * Pushes the expiry of the reservation `requestId` holds to `ttlMs` from now, on every line it
   * holds; nothing when it holds none (settled, released, or closed by recovery already). The
   * gateway renews the reservations of its calls in flight with it, so a call that runs longer than
   * its TTL (a long stream) keeps what it reserved, a cap's slot included; only a replica that is
   * gone stops renewing. A store whose reservations never lapse under a live process may leave it out.
   * A cap's line (a reservation that is the count) that closed by expiry while its replica could not
   * reach the store (an outage longer than what was left of its TTL) is made again, unchecked: the
   * call is still running, so new calls must see its slot taken. `reasserted` counts such lines.
   * Other lines are not: recovery charged them at their reservation, which keeps them counted.
   */
  extend?(requestId: string, ttlMs: number): Promise<{ reasserted: number } | void>;
  /**
   * Drops the reservation of `requestId` and adds each line's `amount` (actual usage) to its usageKey,
   * and commits `event` with the charge in the same atomic write. Settling a request id that was
   * already settled does nothing, so a settled call is never counted twice.
   */
  settle(requestId: string, lines: LedgerLine[], event?: DecisionRecord): Promise<void>;
  /** Drops the reservation of `requestId` without charging anything, committing `event` with it. Idempotent. */
  release(requestId: string, event?: DecisionRecord): Promise<void>;
  /** Commits a decision event that changes no counter (a refusal before anything was reserved). */
  record(event: DecisionRecord): Promise<void>;
  /**
   * Commits an operator action taken in the web console (a `console` entry: who did what, and
   * whether it was allowed), which changes no counter. A store without a journal keeps nothing.
   */
  recordAction?(id: string, action: Record<string, unknown>): Promise<void>;
  /** Adds a listener for committed decision events. */
  onEvent(listener: EventListener): void;
  /** Current used and reserved amounts, one per line, in order. */
  read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]>;
  close(): Promise<void>;
}

/**
 * What alerts (src/alerts) need from the shared store so that an alert fires once across replicas
 * and restarts, and what becomes of it is in the journal. Both stores implement it.
 */
export interface AlertLedger {
  /**
   * Takes the once-only mark `key` until `expiresAt` and journals `alert` (an `alert` entry) in the
   * same atomic step; false, writing nothing, when the mark is already taken (by this replica, another,
   * or a process before a restart).
   */
  claimAlert(key: string, expiresAt: number, alert: DecisionRecord): Promise<boolean>;
  /** Journals what became of a fired alert (delivered, failed). */
  noteAlert(alert: DecisionRecord): Promise<void>;
  /** Adds `by` to the counter `key` (created to lapse at `expiresAt`) and returns its new value. Not journaled. */
  countAlert(key: string, by: number, expiresAt: number): Promise<number>;
}

/** Whether a store can hold alert marks (the memory and Redis stores can; a test double may not). */
export function isAlertLedger(store: QuotaStore): store is QuotaStore & AlertLedger {
  const s = store as QuotaStore & Partial<AlertLedger>;
  return typeof s.claimAlert === 'function' && typeof s.noteAlert === 'function' && typeof s.countAlert === 'function';
}
