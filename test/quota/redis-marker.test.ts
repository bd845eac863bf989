/**
 * The settled markers' lifetime (settledMarkerMs, TOLLGATE_SETTLED_MARKER_SECONDS): what bounds the
 * Redis memory a call leaves behind. Within the lifetime a replayed settle counts once; a settle
 * later than the lifetime after its reservation is dropped and logged rather than risk counting
 * twice, and recovery charges the reservation once. Real Redis, a unique prefix per test.
 */
import { createClient } from '@keyv/redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EnvError, parseEnv } from '../../src/config/env.js';
import { settingsFromEnv } from '../../src/main.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine } from '../../src/quota/store.js';
import { deleteKeys, startPrivateRedis, startRedis, uniquePrefix, type PrivateRedis, type TestRedis } from '../helpers/redis.js';
import { captureLog } from '../helpers/log.js';

const HOUR = 3600_000;
const TTL = 60_000;

describe('settled markers on Redis', () => {
  let redis: TestRedis;
  let raw: ReturnType<typeof createClient>;
  const prefixes: string[] = [];
  const stores: RedisQuotaStore[] = [];
  let clock = Date.now();
  const now = () => clock;

  const setup = (opts: { settledMarkerMs?: number; url?: string } = {}) => {
    const prefix = uniquePrefix('marker');
    prefixes.push(prefix);
    const log = captureLog();
    const store = new RedisQuotaStore({ url: opts.url ?? redis.url, prefix, now, commandTimeoutMs: 500, logger: log.logger, sweepIntervalMs: 0, settledMarkerMs: opts.settledMarkerMs });
    stores.push(store);
    const start = Math.floor(clock / HOUR) * HOUR;
    const line = (amount: number): LedgerLine => ({ budgetId: 'weekly', subject: 'ada', limit: 1000, amount, expiresAt: start + 100 * HOUR, ...lineKeys(prefix, 'weekly', 'ada', [start], start) });
    return { store, line, log };
  };

  beforeAll(async () => {
    redis = await startRedis();
    raw = createClient({ url: redis.url });
    await raw.connect();
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    clock = Date.now();
  });

  afterAll(async () => {
    raw.destroy();
    for (const p of prefixes) await deleteKeys(redis.url, p);
    await redis.stop();
  });

  it('keeps the marker for settledMarkerMs and counts a settle repeated within it once', async () => {
    const { store, line } = setup({ settledMarkerMs: 2 * HOUR });
    expect(await store.reserve('c1', [line(40)], TTL, undefined, { dispatching: true })).toEqual({ ok: true });
    await store.settle('c1', [line(25)]);
    const ttl = await raw.pTTL(`${prefixes.at(-1)}{journal}:s:c1`);
    expect(ttl).toBeGreaterThan(2 * HOUR - 10_000);
    expect(ttl).toBeLessThanOrEqual(2 * HOUR);

    clock += 2 * HOUR - 60_000;
    await store.settle('c1', [line(25)]);
    expect(await store.read([line(0)])).toEqual([{ used: 25, reserved: 0 }]);
    expect(store.expiredSettleCount()).toBe(0);
  });

  it('keeps the marker at least the reservation TTL + 1 h when settledMarkerMs is shorter', async () => {
    const { store, line } = setup({ settledMarkerMs: 60_000 });
    await store.reserve('c1', [line(40)], 10 * 60_000, undefined, { dispatching: true });
    await store.settle('c1', [line(25)]);
    const ttl = await raw.pTTL(`${prefixes.at(-1)}{journal}:s:c1`);
    expect(ttl).toBeGreaterThan(10 * 60_000 + HOUR - 10_000);
    expect(ttl).toBeLessThanOrEqual(10 * 60_000 + HOUR);
  });

  it('drops a settle later than the marker lifetime after its reservation, logs it, and recovery charges the reservation once', async () => {
    const { store, line, log } = setup({ settledMarkerMs: 2 * HOUR });
    await store.reserve('c1', [line(40)], TTL, undefined, { dispatching: true });
    clock += 2 * HOUR;
    await store.settle('c1', [line(25)]);
    expect(store.expiredSettleCount()).toBe(1);
    const dropped = log.entries.filter((e) => e.event === 'quota_settle_expired');
    expect(dropped.map((e) => [e.requestId, e.markerMs, e.lines])).toEqual([['c1', 2 * HOUR, [{ budgetId: 'weekly', subject: 'ada', amount: 25 }]]]);
    // The read purges the expired, dispatched reservation: recovery charges it at its 40, once.
    expect(await store.read([line(0)])).toEqual([{ used: 40, reserved: 0 }]);
    await store.settle('c1', [line(25)]);
    expect(await store.read([line(0)])).toEqual([{ used: 40, reserved: 0 }]);
  });

  it('drops a settle queued through an outage longer than the marker lifetime instead of replaying it', async () => {
    const own: PrivateRedis = await startPrivateRedis();
    try {
      const { store, line, log } = setup({ settledMarkerMs: 2 * HOUR, url: own.url });
      // A store connects in the background: wait until it answers.
      const reachable = async () => {
        for (let i = 0; ; i++) {
          try {
            return await store.read([line(0)]);
          } catch (err) {
            if (i > 100) throw err;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      };
      await reachable();
      await store.reserve('c1', [line(40)], TTL, undefined, { dispatching: true });
      await own.kill();
      await store.settle('c1', [line(25)]);
      expect(store.pendingReplays()).toBe(1);
      clock += 3 * HOUR;
      await own.restart();
      for (let i = 0; i < 100 && store.pendingReplays() > 0; i++) {
        await store.flushReplays().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(store.pendingReplays()).toBe(0);
      expect(log.entries.filter((e) => e.event === 'quota_settle_expired').map((e) => e.requestId)).toEqual(['c1']);
      // The restarted server kept nothing (no persistence), and the late settle added nothing.
      expect(await reachable()).toEqual([{ used: 0, reserved: 0 }]);
    } finally {
      await Promise.all(stores.splice(0).map((s) => s.close()));
      await own.stop();
    }
  });

  it('leaves one settled marker for a call of three lines on a single node, and counts a repeat of it once on every line', async () => {
    const { store, line } = setup();
    const three = (amount: number) => ['ada', 'bob', 'cy'].map((subject) => ({ ...line(amount), subject, ...lineKeys(prefixes.at(-1)!, 'weekly', subject, [0], 0) }));
    await store.reserve('c1', three(40), TTL, undefined, { dispatching: true });
    await store.settle('c1', three(25));
    const markers: string[] = [];
    for await (const batch of raw.scanIterator({ MATCH: `${prefixes.at(-1)}*:s:*`, COUNT: 500 })) markers.push(...batch);
    expect(markers).toEqual([`${prefixes.at(-1)}{journal}:s:c1`]);
    await store.settle('c1', three(25));
    expect(await store.reserve('c1', three(40), TTL)).toEqual({ ok: true });
    expect(await store.read(three(0))).toEqual([
      { used: 25, reserved: 0 },
      { used: 25, reserved: 0 },
      { used: 25, reserved: 0 },
    ]);
  });

  it('counts a call of three lines once when recovery closed it on one line and its settle comes late', async () => {
    const { store, line } = setup();
    const three = (amount: number) => ['ada', 'bob', 'cy'].map((subject) => ({ ...line(amount), subject, ...lineKeys(prefixes.at(-1)!, 'weekly', subject, [0], 0) }));
    await store.reserve('c1', three(40), TTL, undefined, { dispatching: true });
    clock += TTL + 1;
    // A read of the first line alone purges it there: recovery charges that line at its 40.
    expect(await store.read([three(0)[0]!])).toEqual([{ used: 40, reserved: 0 }]);
    await store.settle('c1', three(25));
    await store.settle('c1', three(25));
    expect(await store.read(three(0))).toEqual([
      { used: 40, reserved: 0 },
      { used: 40, reserved: 0 },
      { used: 40, reserved: 0 },
    ]);
  });

  it('refuses a marker lifetime outside 1 ms to a day', () => {
    expect(() => new RedisQuotaStore({ url: redis.url, prefix: 'x:', settledMarkerMs: 0 })).toThrow(RangeError);
    expect(() => new RedisQuotaStore({ url: redis.url, prefix: 'x:', settledMarkerMs: 24 * HOUR + 1 })).toThrow(/settledMarkerMs must be a whole number of milliseconds from 1 to 86400000/);
  });

  it('reads TOLLGATE_SETTLED_MARKER_SECONDS: a day by default, at most a day', () => {
    expect(settingsFromEnv({}).settledMarkerMs).toBe(24 * HOUR);
    expect(settingsFromEnv({ TOLLGATE_SETTLED_MARKER_SECONDS: '7200' }).settledMarkerMs).toBe(2 * HOUR);
    expect(() => parseEnv({ TOLLGATE_SETTLED_MARKER_SECONDS: '86401' })).toThrow(EnvError);
    expect(() => parseEnv({ TOLLGATE_SETTLED_MARKER_SECONDS: '86401' })).toThrow(/TOLLGATE_SETTLED_MARKER_SECONDS=86401: expected a whole number of seconds from 1 to 86400/);
  });

  it('reads the journal and rollup retention from the environment', () => {
    const s = settingsFromEnv({ TOLLGATE_JOURNAL_MAX_AGE_SECONDS: '3600', TOLLGATE_ROLLUP_DAYS: '30' });
    expect([s.journalMaxAgeMs, s.rollupTtlMs]).toEqual([HOUR, 30 * 24 * HOUR]);
    expect(settingsFromEnv({}).rollupTtlMs).toBe(400 * 24 * HOUR);
  });
});
