import type { LedgerLine, LineState, QuotaStore, ReserveOutcome } from './store.js';

interface Reservation {
  lines: { reservedKey: string; amount: number }[];
  expiresAt: number;
}

/**
 * How long a settled request id is remembered so a repeated settle is not counted twice, and how
 * many are kept at most. In one process a repeat can only come from the same call's own retry, so a
 * short window is enough; an unbounded one grows by every call ever made.
 */
const SETTLED_MEMORY_MS = 15 * 60_000;
const SETTLED_MAX = 200_000;

/**
 * The embedded single-process ledger. Each operation runs synchronously inside one event-loop
 * turn, which makes check-and-add atomic without locks. State is lost on exit; use Redis to
 * share budgets across replicas or restarts.
 */
export class MemoryQuotaStore implements QuotaStore {
  readonly kind = 'memory';
  private readonly counters = new Map<string, { value: number; expiresAt: number }>();
  private readonly reserved = new Map<string, number>();
  private readonly reservations = new Map<string, Reservation>();
  private readonly settled = new Map<string, number>();
  private lastSweep = 0;

  constructor(private readonly now: () => number = Date.now) {}

  async reserve(requestId: string, lines: LedgerLine[], ttlMs: number): Promise<ReserveOutcome> {
    this.sweep();
    if (this.reservations.has(requestId) || this.settled.has(requestId)) return { ok: true };
    for (const line of lines) {
      const used = this.sum(line.readKeys);
      const reserved = this.reserved.get(line.reservedKey) ?? 0;
      if (used + reserved + line.amount > line.limit) {
        return { ok: false, budgetId: line.budgetId, subject: line.subject, used, reserved, limit: line.limit, requested: line.amount };
      }
    }
    for (const line of lines) this.reserved.set(line.reservedKey, (this.reserved.get(line.reservedKey) ?? 0) + line.amount);
    this.reservations.set(requestId, {
      lines: lines.map((l) => ({ reservedKey: l.reservedKey, amount: l.amount })),
      expiresAt: this.now() + ttlMs,
    });
    return { ok: true };
  }

  async settle(requestId: string, lines: LedgerLine[]): Promise<void> {
    if (this.settled.has(requestId)) return;
    this.drop(requestId);
    for (const line of lines) {
      const counter = this.counters.get(line.usageKey);
      if (counter && counter.expiresAt > this.now()) {
        counter.value += line.amount;
        counter.expiresAt = Math.max(counter.expiresAt, line.expiresAt);
      } else {
        this.counters.set(line.usageKey, { value: line.amount, expiresAt: line.expiresAt });
      }
    }
    this.settled.set(requestId, this.now() + SETTLED_MEMORY_MS);
    if (this.settled.size > SETTLED_MAX) {
      // Maps iterate in insertion order: the first entry is the oldest.
      const oldest = this.settled.keys().next();
      if (!oldest.done) this.settled.delete(oldest.value);
    }
  }

  async release(requestId: string): Promise<void> {
    this.drop(requestId);
  }

  async read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    this.sweep();
    return lines.map((l) => ({ used: this.sum(l.readKeys), reserved: this.reserved.get(l.reservedKey) ?? 0 }));
  }

  async close(): Promise<void> {
    this.counters.clear();
    this.reserved.clear();
    this.reservations.clear();
    this.settled.clear();
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

  /** Expires reservations of crashed or abandoned calls and forgets old counters; at most once a second. */
  private sweep(): void {
    const now = this.now();
    if (now - this.lastSweep < 1000 && now >= this.lastSweep) return;
    this.lastSweep = now;
    for (const [id, r] of this.reservations) if (r.expiresAt <= now) this.drop(id);
    for (const [key, c] of this.counters) if (c.expiresAt <= now) this.counters.delete(key);
    for (const [id, until] of this.settled) if (until <= now) this.settled.delete(id);
  }
}
