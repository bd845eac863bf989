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
}

/** Used and reserved amounts of one budget line. */
export interface LineState {
  used: number;
  reserved: number;
}

export type ReserveOutcome =
  | { ok: true }
  | { ok: false; budgetId: string; subject: string; used: number; reserved: number; limit: number; requested: number };

export interface QuotaStore {
  /** A short name for logs and metrics (`memory`, `redis`). */
  readonly kind: string;
  /**
   * Atomically checks `used + reserved + amount <= limit` for every line and, only if all pass,
   * reserves every amount under `requestId` for `ttlMs`. Reserving the same request id twice is a no-op
   * that returns the first outcome's success.
   */
  reserve(requestId: string, lines: LedgerLine[], ttlMs: number): Promise<ReserveOutcome>;
  /**
   * Drops the reservation of `requestId` and adds each line's `amount` (actual usage) to its usageKey.
   * Settling a request id that was already settled does nothing, so a settled call is never counted twice.
   */
  settle(requestId: string, lines: LedgerLine[]): Promise<void>;
  /** Drops the reservation of `requestId` without charging anything. Idempotent. */
  release(requestId: string): Promise<void>;
  /** Current used and reserved amounts, one per line, in order. */
  read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]>;
  close(): Promise<void>;
}
