/**
 * One behaviour suite for every QuotaStore. A harness opens stores on a shared ledger: for Redis
 * each open() is a separate replica (its own connection); the memory store has one ledger per
 * process, so its harness hands out the same store.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lineKeys } from '../../src/policy/budgets.js';
import { limitLine } from '../../src/policy/limits.js';
import { compileLimit } from '../../src/policy/load.js';
import type { RateLimitConfig } from '../../src/policy/schema.js';
import type { EntryBody, EntryLine } from '../../src/quota/journal.js';
import type { DecisionRecord, LedgerLine, QuotaStore } from '../../src/quota/store.js';

export interface StoreHarness {
  /** Opens `count` stores over one shared ledger, all using the clock `now`. */
  open(now: () => number, count: number): QuotaStore[];
  /** A key prefix no other test uses. */
  prefix(): string;
  /**
   * The bodies of every journal entry the stores of the current test wrote, for a store that keeps
   * a journal. A journal may split an entry by line (one stream per line on a Redis Cluster, the
   * event with the first line): the cases compare entries merged per kind and request.
   */
  journal?(): Promise<EntryBody[]>;
  /**
   * The store keeps a reservation past its TTL until the call ends or a restart's recovery closes
   * it (the embedded store with a journal: in one process a reservation's call is still running).
   */
  keepsExpiredReservations?: boolean;
  /**
   * The store journals a reservation as a `reserve` entry with its lines and meta (the embedded
   * store). The Redis store writes one entry per call: the reservation stays with its line for
   * recovery, and the entry that closes it (settle, release, recover) carries the lines and the
   * event naming who and what.
   */
  reserveEntries?: boolean;
}

/** A journal's entries merged per kind and request id: their lines (by reservedKey) and events. */
interface Merged {
  kind: string;
  id: string;
  lines: EntryLine[];
  events: Record<string, unknown>[];
  meta: Record<string, unknown>[];
  settledBy?: string;
}

function merged(bodies: EntryBody[]): Merged[] {
  const out = new Map<string, Merged>();
  for (const b of bodies) {
    const key = `${b.kind} ${b.id}`;
    let m = out.get(key);
    if (!m) out.set(key, (m = { kind: b.kind, id: b.id, lines: [], events: [], meta: [] }));
    m.lines.push(...(b.lines ?? []));
    if (b.event) m.events.push(b.event);
    if (b.meta) m.meta.push(b.meta);
    if (b.settledBy) m.settledBy = b.settledBy;
  }
  for (const m of out.values()) m.lines.sort((a, b) => (a.reservedKey < b.reservedKey ? -1 : 1));
  return [...out.values()];
}

const HOUR = 3600_000;
const TTL = 60_000;

export function quotaStoreContract(harness: StoreHarness): void {
  let clock: number;
  let prefix: string;
  let opened: QuotaStore[];
  const now = () => clock;

  const open = (count = 1) => {
    const stores = harness.open(now, count);
    opened.push(...stores);
    return stores;
  };
  const line = (budgetId: string, limit: number, amount: number, subject = 'ada'): LedgerLine => {
    const start = Math.floor(clock / HOUR) * HOUR;
    return { budgetId, subject, limit, amount, expiresAt: start + 2 * HOUR, ...lineKeys(prefix, budgetId, subject, [start], start) };
  };

  beforeEach(() => {
    clock = Date.now();
    prefix = harness.prefix();
    opened = [];
  });

  afterEach(async () => {
    await Promise.all([...new Set(opened)].map((s) => s.close()));
  });

  describe('reserve', () => {
    it('reserves every line and shows the amounts as reserved', async () => {
      const [store] = open();
      const a = line('alpha', 100, 30);
      const b = line('beta', 100, 45);
      expect(await store!.reserve('r1', [a, b], TTL)).toEqual({ ok: true });
      expect(await store!.read([a, b])).toEqual([
        { used: 0, reserved: 30 },
        { used: 0, reserved: 45 },
      ]);
    });

    it('reserves nothing when the second line refuses, leaving the first line untouched', async () => {
      const [store] = open();
      const a = line('alpha', 100, 30);
      const b = line('beta', 10, 30);
      const outcome = await store!.reserve('r1', [a, b], TTL);
      expect(outcome.ok).toBe(false);
      expect(await store!.read([a, b])).toEqual([
        { used: 0, reserved: 0 },
        { used: 0, reserved: 0 },
      ]);
    });

    it('reserves again under the same request id after a refusal, as a tier-down retry does', async () => {
      const [store] = open();
      expect((await store!.reserve('r1', [line('alpha', 100, 30), line('beta', 10, 30)], TTL)).ok).toBe(false);
      expect(await store!.reserve('r1', [line('alpha', 100, 8), line('beta', 10, 8)], TTL)).toEqual({ ok: true });
      expect(await store!.read([line('alpha', 100, 0), line('beta', 10, 0)])).toEqual([
        { used: 0, reserved: 8 },
        { used: 0, reserved: 8 },
      ]);
    });

    it('refuses with the budget, subject, used, reserved, limit and requested amount', async () => {
      const [store] = open();
      await store!.reserve('spent', [line('team-weekly', 100, 60, 'data')], TTL);
      await store!.settle('spent', [line('team-weekly', 100, 60, 'data')]);
      await store!.reserve('running', [line('team-weekly', 100, 30, 'data')], TTL);
      expect(await store!.reserve('r3', [line('team-weekly', 100, 20, 'data')], TTL)).toEqual({
        ok: false,
        budgetId: 'team-weekly',
        subject: 'data',
        used: 60,
        reserved: 30,
        limit: 100,
        requested: 20,
        buckets: [60],
      });
    });

    it('reports the first refusing line in the order given, whatever the order of their keys', async () => {
      // The planner names this line in a tier-down or refusal reason, and `estimate` predicts it.
      const [store] = open();
      const outcome = await store!.reserve('r1', [line('zeta', 10, 30), line('alpha', 10, 40)], TTL);
      expect(outcome).toMatchObject({ ok: false, budgetId: 'zeta', requested: 30 });
      const swapped = await store!.reserve('r2', [line('alpha', 10, 40), line('zeta', 10, 30)], TTL);
      expect(swapped).toMatchObject({ ok: false, budgetId: 'alpha', requested: 40 });
    });

    it('admits a reservation that exactly reaches the limit', async () => {
      const [store] = open();
      await store!.reserve('r1', [line('alpha', 100, 60)], TTL);
      expect(await store!.reserve('r2', [line('alpha', 100, 40)], TTL)).toEqual({ ok: true });
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 0, reserved: 100 }]);
    });

    it('holds a line to its bound on what it held before (atMost): at the bound it reserves, one over it refuses', async () => {
      // The pipeline decides a call on budgets assumed untouched and states here what that took for
      // granted (src/policy/decide.ts, assumptionBounds); the check is the store's, atomic with the reservation.
      const [store] = open();
      expect(store!.guarded).toBe(true);
      await store!.reserve('spent', [line('alpha', 100, 30)], TTL);
      await store!.settle('spent', [line('alpha', 100, 30)]);
      await store!.reserve('running', [line('alpha', 100, 10), line('beta', 100, 5)], TTL);
      // alpha holds 40, beta 5: a bound of 39 on alpha refuses with what the line holds, and reserves nothing.
      expect(await store!.reserve('over', [line('alpha', 100, 1), line('beta', 100, 1)], TTL, undefined, { atMost: [39, 1000] })).toEqual({
        ok: false,
        budgetId: 'alpha',
        subject: 'ada',
        used: 30,
        reserved: 10,
        limit: 100,
        requested: 1,
        buckets: [30],
      });
      expect((await store!.reserve('over-beta', [line('alpha', 100, 1), line('beta', 100, 1)], TTL, undefined, { atMost: [1000, 4] })).ok).toBe(false);
      expect(await store!.read([line('alpha', 100, 0), line('beta', 100, 0)])).toEqual([
        { used: 30, reserved: 10 },
        { used: 0, reserved: 5 },
      ]);
      // At the bound it reserves, and says what each line held just before: what a read would have said.
      expect(await store!.reserve('at', [line('alpha', 100, 2), line('beta', 100, 3)], TTL, undefined, { atMost: [40, 5] })).toEqual({
        ok: true,
        states: [
          { used: 30, reserved: 10 },
          { used: 0, reserved: 5 },
        ],
      });
      // The limit still holds under a bound that would allow more.
      expect((await store!.reserve('limit', [line('alpha', 100, 59)], TTL, undefined, { atMost: [1000] })).ok).toBe(false);
      expect(await store!.reserve('fits', [line('alpha', 100, 58)], TTL, undefined, { atMost: [1000] })).toEqual({ ok: true, states: [{ used: 30, reserved: 12 }] });
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 30, reserved: 70 }]);
    });

    it('bounds lines given in any key order, a rate limit line among them, and says their states in the order given', async () => {
      const [store] = open();
      const cap = limitLine(compileLimit({ id: 'cap', scope: 'user', concurrent: 2, retryAfterMs: 1000, failMode: 'closed' } as RateLimitConfig), 'ada', clock, prefix);
      await store!.reserve('before', [line('zeta', 100, 7), line('alpha', 100, 9)], TTL);
      const lines = [line('zeta', 100, 1), line('alpha', 100, 1), { ...cap.line, amount: 1 }];
      expect(await store!.reserve('r1', lines, TTL, undefined, { atMost: [7, 9] })).toEqual({
        ok: true,
        states: [
          { used: 0, reserved: 7 },
          { used: 0, reserved: 9 },
          { used: 0, reserved: 0 },
        ],
      });
      expect((await store!.reserve('r2', [line('zeta', 100, 1), line('alpha', 100, 1)], TTL, undefined, { atMost: [100, 9] })).ok).toBe(false);
    });

    it('reserves once when the same request id is reserved twice', async () => {
      const [store] = open();
      expect(await store!.reserve('r1', [line('alpha', 100, 40)], TTL)).toEqual({ ok: true });
      expect(await store!.reserve('r1', [line('alpha', 100, 40)], TTL)).toEqual({ ok: true });
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 0, reserved: 40 }]);
    });

    it('returns ok without reserving for a request id that was already settled', async () => {
      const [store] = open();
      await store!.reserve('r1', [line('alpha', 100, 40)], TTL);
      await store!.settle('r1', [line('alpha', 100, 25)]);
      expect(await store!.reserve('r1', [line('alpha', 100, 40)], TTL)).toEqual({ ok: true });
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 25, reserved: 0 }]);
    });

    it.skipIf(harness.keepsExpiredReservations)('lets a reservation lapse after its TTL, so a crashed replica cannot pin the budget', async () => {
      const [store] = open();
      await store!.reserve('crashed', [line('alpha', 100, 100)], 1000);
      expect((await store!.reserve('r2', [line('alpha', 100, 1)], TTL)).ok).toBe(false);
      clock += 1001;
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 0, reserved: 0 }]);
      expect(await store!.reserve('r3', [line('alpha', 100, 100)], TTL)).toEqual({ ok: true });
    });
  });

  describe('settle and release', () => {
    it('charges the actual amount and frees the reservation', async () => {
      const [store] = open();
      await store!.reserve('r1', [line('alpha', 100, 50), line('beta', 1000, 50)], TTL);
      await store!.settle('r1', [line('alpha', 100, 20), line('beta', 1000, 35)]);
      expect(await store!.read([line('alpha', 100, 0), line('beta', 1000, 0)])).toEqual([
        { used: 20, reserved: 0 },
        { used: 35, reserved: 0 },
      ]);
    });

    it('counts a request settled twice once', async () => {
      const [store] = open();
      await store!.reserve('r1', [line('alpha', 100, 50)], TTL);
      await store!.settle('r1', [line('alpha', 100, 20)]);
      await store!.settle('r1', [line('alpha', 100, 20)]);
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 20, reserved: 0 }]);
    });

    it('releases a reservation without charging, and a second release changes nothing', async () => {
      const [store] = open();
      await store!.reserve('r1', [line('alpha', 100, 40)], TTL);
      await store!.reserve('r2', [line('alpha', 100, 15)], TTL);
      await store!.release('r1');
      await store!.release('r1');
      await store!.release('never-reserved');
      expect(await store!.read([line('alpha', 100, 0)])).toEqual([{ used: 0, reserved: 15 }]);
    });
  });

  describe('read', () => {
    it('sums every bucket of a rolling window and drops buckets that left it', async () => {
      const [store] = open();
      const bucket = HOUR;
      const t0 = Math.floor(clock / bucket) * bucket;
      const rolling = (current: number, starts: number[], amount: number): LedgerLine => ({
        budgetId: 'rolling-3h',
        subject: 'ada',
        limit: 1000,
        amount,
        expiresAt: current + 5 * HOUR,
        ...lineKeys(prefix, 'rolling-3h', 'ada', starts, current),
      });
      await store!.settle('b0', [rolling(t0, [t0], 10)]);
      await store!.settle('b1', [rolling(t0 + bucket, [t0, t0 + bucket], 20)]);
      await store!.settle('b2', [rolling(t0 + 2 * bucket, [t0, t0 + bucket, t0 + 2 * bucket], 40)]);
      const window = (current: number) => rolling(current, [current - 2 * bucket, current - bucket, current], 0);
      expect(await store!.read([window(t0 + 2 * bucket)])).toEqual([{ used: 70, reserved: 0 }]);
      expect(await store!.read([window(t0 + 3 * bucket)])).toEqual([{ used: 60, reserved: 0 }]);
      expect((await store!.reserve('r', [{ ...window(t0 + 3 * bucket), limit: 100, amount: 41 }], TTL)).ok).toBe(false);
      expect(await store!.reserve('r', [{ ...window(t0 + 3 * bucket), limit: 100, amount: 40 }], TTL)).toEqual({ ok: true });
    });

    it('keeps lines with different numbers of buckets apart when one call carries them all', async () => {
      const [store] = open();
      const t0 = Math.floor(clock / HOUR) * HOUR;
      const starts = [t0 - 2 * HOUR, t0 - HOUR, t0];
      const rolling = (limit: number, amount: number): LedgerLine => ({
        budgetId: 'rolling-3h',
        subject: 'ada',
        limit,
        amount,
        expiresAt: t0 + 5 * HOUR,
        ...lineKeys(prefix, 'rolling-3h', 'ada', starts, t0),
      });
      // Earlier buckets of the rolling line hold 30 between them.
      await store!.settle('old1', [{ ...rolling(1000, 10), ...lineKeys(prefix, 'rolling-3h', 'ada', [t0 - 2 * HOUR], t0 - 2 * HOUR) }]);
      await store!.settle('old2', [{ ...rolling(1000, 20), ...lineKeys(prefix, 'rolling-3h', 'ada', [t0 - HOUR], t0 - HOUR) }]);
      await store!.settle('old3', [line('alpha', 100, 5)]);

      // The rolling line (in the middle of the key order) refuses: 30 used + 75 > 100.
      const refused = await store!.reserve('r1', [line('alpha', 100, 10), rolling(100, 75), line('zeta', 100, 10, 'bob')], TTL);
      expect(refused).toEqual({ ok: false, budgetId: 'rolling-3h', subject: 'ada', used: 30, reserved: 0, limit: 100, requested: 75, buckets: [10, 20, 0] });
      expect(await store!.read([line('alpha', 100, 0), rolling(100, 0), line('zeta', 100, 0, 'bob')])).toEqual([
        { used: 5, reserved: 0 },
        { used: 30, reserved: 0 },
        { used: 0, reserved: 0 },
      ]);

      expect(await store!.reserve('r2', [line('zeta', 100, 7, 'bob'), rolling(100, 70), line('alpha', 100, 9)], TTL)).toEqual({ ok: true });
      expect(await store!.read([rolling(100, 0), line('alpha', 100, 0), line('zeta', 100, 0, 'bob')])).toEqual([
        { used: 30, reserved: 70 },
        { used: 5, reserved: 9 },
        { used: 0, reserved: 7 },
      ]);
      await store!.settle('r2', [line('alpha', 100, 4), rolling(100, 60), line('zeta', 100, 3, 'bob')]);
      expect(await store!.read([line('alpha', 100, 0), rolling(100, 0), line('zeta', 100, 0, 'bob')])).toEqual([
        { used: 9, reserved: 0 },
        { used: 90, reserved: 0 },
        { used: 3, reserved: 0 },
      ]);
    });
  });

  describe('decision events', () => {
    const event = (id: string, outcome = 'success'): DecisionRecord => ({ event: 'tollgate.decision', 'request.id': id, outcome });

    it('hands each committed event to the listeners once: settle, release and record, never a repeated settle', async () => {
      const [store] = open();
      const heard: unknown[] = [];
      store!.onEvent((e) => heard.push(e['request.id']));
      await store!.reserve('s1', [line('alpha', 100, 30)], TTL);
      await store!.settle('s1', [line('alpha', 100, 20)], event('s1'));
      await store!.settle('s1', [line('alpha', 100, 20)], event('s1'));
      await store!.reserve('r1', [line('alpha', 100, 30)], TTL);
      await store!.release('r1', event('r1', 'failed'));
      await store!.record(event('x1', 'refused'));
      expect(heard).toEqual(['s1', 'r1', 'x1']);
    });
  });

  describe('journal', () => {
    const journal = async () => merged(await harness.journal!());
    const event = (id: string, outcome = 'success'): DecisionRecord => ({ event: 'tollgate.decision', 'request.id': id, outcome, 'user.id': 'ada' });
    const entry = (l: LedgerLine) => ({ budgetId: l.budgetId, subject: l.subject, usageKey: l.usageKey, reservedKey: l.reservedKey, amount: l.amount, expiresAt: l.expiresAt });

    it.skipIf(!harness.journal)('journals a charge with its event in one entry, and the reservation with its lines and meta where the store writes reserve entries', async () => {
      const [store] = open();
      const [a, b] = [line('alpha', 100, 30), line('beta', 100, 40)];
      await store!.reserve('c1', [a, b], TTL, { user: 'ada', model: 'm1' });
      await store!.dispatch('c1');
      await store!.settle('c1', [{ ...a, amount: 12 }, { ...b, amount: 7 }], event('c1'));
      await store!.settle('c1', [{ ...a, amount: 12 }, { ...b, amount: 7 }], event('c1'));
      // A store may journal the dispatch as an entry (the embedded one does) or keep the mark with
      // the reservation (Redis: the recover or release entry records what it meant).
      const entries = (await journal()).filter((e) => e.kind !== 'dispatch');
      expect(entries.map((e) => `${e.kind} ${e.id}`).sort()).toEqual(harness.reserveEntries ? ['reserve c1', 'settle c1'] : ['settle c1']);
      if (harness.reserveEntries) {
        const reserve = entries.find((e) => e.kind === 'reserve')!;
        expect(reserve.lines).toEqual([entry(a), entry(b)]);
        expect(reserve.meta).toEqual([{ user: 'ada', model: 'm1' }]);
      }
      const settle = entries.find((e) => e.kind === 'settle')!;
      expect(settle.lines).toEqual([entry({ ...a, amount: 12 }), entry({ ...b, amount: 7 })]);
      expect(settle.events).toEqual([event('c1')]);
      expect(settle.settledBy).toBe('call');
    });

    it.skipIf(!harness.journal)('journals a release with its event and a refusal as a refuse entry, and nothing for a repeated release', async () => {
      const [store] = open();
      await store!.reserve('c2', [line('alpha', 100, 30)], TTL);
      await store!.release('c2', event('c2', 'failed'));
      await store!.release('c2');
      await store!.record(event('c3', 'refused'));
      const entries = (await journal()).filter((e) => e.kind !== 'reserve');
      expect(entries.map((e) => ({ kind: e.kind, id: e.id, events: e.events }))).toEqual([
        { kind: 'release', id: 'c2', events: [event('c2', 'failed')] },
        { kind: 'refuse', id: 'c3', events: [event('c3', 'refused')] },
      ]);
    });

    it.skipIf(!harness.journal)('journals nothing for a refused reservation', async () => {
      const [store] = open();
      expect((await store!.reserve('c4', [line('alpha', 100, 30), line('beta', 10, 30)], TTL)).ok).toBe(false);
      // A cluster reserves line by line and gives back what it took, journaling neither.
      expect(await journal()).toEqual([]);
    });
  });

  describe('concurrency', () => {
    it('admits exactly 10 of 200 concurrent reservations of 10 against a limit of 100, across replicas', async () => {
      const replicas = open(2);
      const ids = Array.from({ length: 200 }, (_, i) => `c${i}`);
      const outcomes = await Promise.all(ids.map((id, i) => replicas[i % 2]!.reserve(id, [line('shared', 100, 10)], TTL)));
      const admitted = ids.filter((_, i) => outcomes[i]!.ok);
      expect(admitted).toHaveLength(10);
      expect(await replicas[0]!.read([line('shared', 100, 0)])).toEqual([{ used: 0, reserved: 100 }]);

      // Each admitted call used 1..10 of its 10: 55 in all.
      await Promise.all(admitted.map((id, i) => replicas[i % 2]!.settle(id, [line('shared', 100, i + 1)])));
      expect(await replicas[1]!.read([line('shared', 100, 0)])).toEqual([{ used: 55, reserved: 0 }]);
    });
  });

  describe('rate limit lines', () => {
    const limitOf = (config: Partial<RateLimitConfig>) =>
      compileLimit({ id: 'lim', scope: 'user', retryAfterMs: 1000, failMode: 'closed', ...config } as RateLimitConfig);
    const cap = (n: number, amount = 1): LedgerLine => ({ ...limitLine(limitOf({ id: 'inflight', concurrent: n }), 'ada', clock, prefix).line, amount });
    const rpm = (n: number, amount = 1): LedgerLine => ({ ...limitLine(limitOf({ id: 'rpm', requestsPerMinute: n }), 'ada', clock, prefix).line, amount });

    it('holds a concurrency cap across replicas and gives each slot back on settle and on release', async () => {
      const replicas = open(3);
      const outcomes = await Promise.all(Array.from({ length: 12 }, (_, i) => replicas[i % 3]!.reserve(`f${i}`, [cap(5)], TTL)));
      const admitted = outcomes.flatMap((o, i) => (o.ok ? [`f${i}`] : []));
      expect(admitted).toHaveLength(5);
      expect(outcomes.find((o) => !o.ok)).toEqual({ ok: false, budgetId: 'inflight', subject: 'ada', used: 0, reserved: 5, limit: 5, requested: 1, buckets: [] });
      // A settled call charges nothing to a cap: its slot is free again, and no counter is left.
      await replicas[0]!.settle(admitted[0]!, [cap(5, 0)]);
      await replicas[1]!.release(admitted[1]!);
      expect(await replicas[2]!.read([cap(5)])).toEqual([{ used: 0, reserved: 3 }]);
      expect((await replicas[2]!.reserve('g1', [cap(5)], TTL)).ok).toBe(true);
      expect((await replicas[0]!.reserve('g2', [cap(5)], TTL)).ok).toBe(true);
      expect((await replicas[1]!.reserve('g3', [cap(5)], TTL)).ok).toBe(false);
    });

    it('counts requests in a sliding window: refused with each bucket, admitted again once the window moved on', async () => {
      const replicas = open(2);
      const first = rpm(3);
      for (let i = 0; i < 3; i++) {
        expect((await replicas[i % 2]!.reserve(`q${i}`, [first], TTL)).ok).toBe(true);
        await replicas[i % 2]!.settle(`q${i}`, [first]);
      }
      const refused = await replicas[1]!.reserve('q3', [first], TTL);
      expect(refused).toMatchObject({ ok: false, budgetId: 'rpm', used: 3, reserved: 0, limit: 3, requested: 1 });
      expect((refused as { buckets: number[] }).buckets).toHaveLength(12);
      expect((refused as { buckets: number[] }).buckets.at(-1)).toBe(3);
      // Still refused one bucket before the window has moved past the calls, admitted once it has.
      clock += 55_000;
      expect((await replicas[0]!.reserve('q4', [rpm(3)], TTL)).ok).toBe(false);
      clock += 5_000;
      expect(await replicas[0]!.reserve('q5', [rpm(3)], TTL)).toEqual({ ok: true });
    });

    it("keeps a renewed reservation past its first expiry on every replica, and renews nothing once it is settled", async () => {
      const replicas = open(2);
      expect((await replicas[0]!.reserve('long', [cap(1)], TTL)).ok).toBe(true);
      await replicas[0]!.dispatch('long');
      clock += TTL - 1;
      await replicas[0]!.extend!('long', TTL);
      // Past the first expiry, before the renewed one: the call still holds its slot.
      clock += TTL - 1;
      expect((await replicas[1]!.reserve('next', [cap(1)], TTL)).ok).toBe(false);
      expect(await replicas[1]!.read([cap(1)])).toEqual([{ used: 0, reserved: 1 }]);
      await replicas[0]!.settle('long', [cap(1, 0)]);
      await replicas[0]!.extend!('long', TTL);
      expect(await replicas[1]!.read([cap(1)])).toEqual([{ used: 0, reserved: 0 }]);
      expect(await replicas[1]!.reserve('next', [cap(1)], TTL)).toEqual({ ok: true });
    });

    if (!harness.keepsExpiredReservations) {
      it('frees the slot of a dispatched call whose replica never settled it once its reservation expires', async () => {
        const [store] = open();
        expect((await store!.reserve('lost', [cap(1)], TTL)).ok).toBe(true);
        await store!.dispatch('lost');
        expect((await store!.reserve('next', [cap(1)], TTL)).ok).toBe(false);
        clock += TTL + 1;
        expect(await store!.reserve('next', [cap(1)], TTL)).toEqual({ ok: true });
        expect(await store!.read([cap(1)])).toEqual([{ used: 0, reserved: 1 }]);
      });
    }
  });
}
