/**
 * The Redis ledger against a private redis-server that the tests stop, freeze and restart on the
 * same port: calls fail fast as QUOTA_STORE_UNAVAILABLE, the same store reconnects by itself, and
 * settlements made meanwhile are replayed exactly once.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { Ledger, RENEW_CHECK_MS } from '../../src/pipeline/ledger.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine } from '../../src/quota/store.js';
import { hourLine, startPrivateRedis, uniquePrefix, untilReachable, type PrivateRedis } from '../helpers/redis.js';
import { captureLog } from '../helpers/log.js';
import { journalOf } from './journal-helpers.js';

const TTL = 60_000;

async function rejection(p: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = Date.now();
  try {
    await p;
  } catch (error) {
    return { error, ms: Date.now() - started };
  }
  throw new Error('expected the call to fail');
}

function expectUnavailable(error: unknown): void {
  expect(error).toBeInstanceOf(GatewayError);
  expect((error as GatewayError).code).toBe('QUOTA_STORE_UNAVAILABLE');
}

describe('RedisQuotaStore when Redis goes away', () => {
  let redis: PrivateRedis;
  let prefix: string;
  let log: ReturnType<typeof captureLog>;
  const stores: RedisQuotaStore[] = [];
  const now = () => Date.now();

  const open = (opts: { maxPendingReplays?: number } = {}) => {
    const store = new RedisQuotaStore({ url: redis.url, prefix, now, commandTimeoutMs: 500, logger: log.logger, ...opts });
    stores.push(store);
    return store;
  };
  const line = (amount: number, limit = 100): LedgerLine => hourLine(prefix, amount, limit);
  /** Waits until the store answers again, without opening a new store. */
  const reachable = (store: RedisQuotaStore) => untilReachable(store, line(0));

  beforeEach(async () => {
    redis = await startPrivateRedis();
    prefix = uniquePrefix('outage');
    log = captureLog();
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await redis.stop();
  });

  it("keeps a call's reservation through an outage: the failed renewal is logged once and made once Redis is back", async () => {
    // A server that keeps its data over a restart (AOF, fsync always), so the reservation outlives the outage.
    const durable = await startPrivateRedis({ appendonly: true });
    // The ledger's renewal check runs on an interval: the test fires it instead of waiting for it.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    let clock = Date.now();
    const at = () => clock;
    const store = new RedisQuotaStore({ url: durable.url, prefix, now: at, commandTimeoutMs: 500, logger: log.logger, sweepIntervalMs: 0 });
    const ledger = new Ledger({ store, keyPrefix: prefix, now: at, logger: log.logger });
    try {
      expect(await store.reserve('long', [line(10)], TTL)).toEqual({ ok: true });
      ledger.hold('long', store, TTL);
      await durable.kill();
      clock += TTL / 3;
      for (let check = 0; check < 2; check++) {
        vi.advanceTimersByTime(RENEW_CHECK_MS);
        await ledger.idle();
      }
      expect(log.entries.filter((e) => e.event === 'reservation_renew_failed')).toHaveLength(1);
      await durable.restart();
      await reachable(store);
      vi.advanceTimersByTime(RENEW_CHECK_MS);
      await ledger.idle();
      // Renewed a third of the TTL after it was made, for a whole TTL: past its first expiry, it still holds.
      clock += (TTL * 5) / 6;
      expect(await store.read([line(0)])).toEqual([{ used: 0, reserved: 10 }]);
      ledger.unhold('long');
      await store.release('long');
      expect(await store.read([line(0)])).toEqual([{ used: 0, reserved: 0 }]);
    } finally {
      await ledger.close();
      vi.useRealTimers();
      await durable.stop();
    }
  });

  it('fails reserve, dispatch and read with QUOTA_STORE_UNAVAILABLE in under 2 s once Redis stops, and queues a release', async () => {
    const store = open();
    expect(await store.reserve('r1', [line(10)], TTL)).toEqual({ ok: true });
    await redis.stop();

    for (const call of [() => store.reserve('r2', [line(10)], TTL), () => store.dispatch('r1'), () => store.read([line(0)])]) {
      const { error, ms } = await rejection(call());
      expectUnavailable(error);
      expect(ms).toBeLessThan(2000);
    }
    // A release is the end of a call: it is kept and written once Redis is back, not refused.
    const started = Date.now();
    await store.release('r1');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(store.pendingReplays()).toBe(1);
  });

  it('queues a settle made during the outage and applies it exactly once after Redis restarts on the same port', async () => {
    const store = open();
    expect(await store.reserve('r1', [line(40)], TTL)).toEqual({ ok: true });
    await redis.stop();

    await store.settle('r1', [line(25)]);
    expect(store.pendingReplays()).toBe(1);

    await redis.restart();
    await reachable(store);
    await store.flushReplays();
    await store.flushReplays();
    await store.settle('r1', [line(25)]);

    expect(store.pendingReplays()).toBe(0);
    // The restarted server kept no data (no persistence): what it holds is the replayed settle alone.
    expect(await store.read([line(0)])).toEqual([{ used: 25, reserved: 0 }]);
    expect(await store.reserve('r2', [line(75)], TTL)).toEqual({ ok: true });
    expect(await store.reserve('r3', [line(1)], TTL)).toMatchObject({ ok: false, used: 25, reserved: 75 });
  });

  it('keeps refusals and releases made during the outage, in order, and hands their events to the listeners once written', async () => {
    const store = open();
    const heard: unknown[] = [];
    store.onEvent((e) => heard.push(e['request.id']));
    expect(await store.reserve('r1', [line(40)], TTL)).toEqual({ ok: true });
    await redis.stop();

    await store.record({ 'request.id': 'x1', outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' });
    await store.release('r1', { 'request.id': 'r1', outcome: 'failed' });
    await store.settle('s1', [line(5)], { 'request.id': 's1', outcome: 'success' });
    expect(store.pendingReplays()).toBe(3);
    expect(store.pendingSettlements().map((p) => p.requestId)).toEqual(['s1']);
    expect(heard).toEqual([]);
    expect(log.entries.filter((e) => typeof e.event === 'string' && e.event.endsWith('_queued')).map((e) => e.event)).toEqual(['quota_record_queued', 'quota_release_queued', 'quota_settle_queued']);

    await redis.restart();
    await reachable(store);
    await store.flushReplays();
    expect(heard).toEqual(['x1', 'r1', 's1']);
    // The restarted server kept nothing: the journal holds the three writes, in order.
    const entries = await journalOf({ url: redis.url }, prefix);
    expect(entries.map((e) => [e.entry.seq, e.entry.body.kind, e.entry.body.id])).toEqual([
      [1, 'refuse', 'x1'],
      [2, 'release', 'r1'],
      [3, 'settle', 's1'],
    ]);
  });

  it('treats a hung server as unavailable after the command timeout and counts its late settle once', async () => {
    const store = open();
    expect(await store.reserve('r1', [line(40)], TTL)).toEqual({ ok: true });
    redis.freeze();

    const { error, ms } = await rejection(store.reserve('r2', [line(10)], TTL));
    expectUnavailable(error);
    expect(ms).toBeLessThan(1500);
    await store.settle('r1', [line(25)]);
    expect(store.pendingReplays()).toBe(1);

    // On thaw Redis runs the settle it had already received; the replay then finds the marker.
    redis.thaw();
    await reachable(store);
    await store.flushReplays();
    expect(store.pendingReplays()).toBe(0);
    // r2's timed-out reserve ran late too, and the release sent after it on the same connection undid it.
    expect(await store.read([line(0)])).toEqual([{ used: 25, reserved: 0 }]);
  });

  it('writes what it queued while a server hung once the server answers again, with no call to cue it', async () => {
    const store = open();
    const heard: unknown[] = [];
    store.onEvent((e) => heard.push(e['request.id']));
    expect(await store.reserve('r1', [line(40)], TTL)).toEqual({ ok: true });
    redis.freeze();
    await store.record({ 'request.id': 'x1', outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' });
    await store.settle('r1', [line(25)], { 'request.id': 'r1', outcome: 'success' });
    // Both queued (one may be out of the queue for a retry already, on a slow machine).
    expect(store.pendingReplays()).toBeGreaterThan(0);
    expect(heard).toEqual([]);
    // A hung server that thaws fires no reconnection; an idle gateway makes no call whose answer
    // would be the cue: the store tries again by itself.
    redis.thaw();
    const deadline = Date.now() + 10_000;
    while (store.pendingReplays() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(store.pendingReplays()).toBe(0);
    expect(heard).toEqual(['x1', 'r1']);
    expect(await store.read([line(0)])).toEqual([{ used: 25, reserved: 0 }]);
  });

  it('fails each command sent to a hung server at its own deadline: never before the timeout, at most a watchdog tick after it', async () => {
    const store = open();
    await reachable(store);
    redis.freeze();
    // Sent 150 ms apart, so one watchdog pass finds some due and others not yet.
    const waits: Promise<{ error: unknown; ms: number }>[] = [];
    for (let i = 0; i < 3; i++) {
      waits.push(rejection(store.read([line(0)])));
      await new Promise((r) => setTimeout(r, 150));
    }
    for (const { error, ms } of await Promise.all(waits)) {
      expectUnavailable(error);
      expect(ms).toBeGreaterThanOrEqual(500);
      expect(ms).toBeLessThan(500 + 62 + 300);
    }
    redis.thaw();
    expect(await reachable(store)).toEqual([{ used: 0, reserved: 0 }]);
  });

  it('closes within the command timeout while Redis hangs', async () => {
    const store = open();
    await reachable(store);
    redis.freeze();
    const started = Date.now();
    await store.close();
    expect(Date.now() - started).toBeLessThan(1500);
    redis.thaw();
  });

  it('keeps at most maxPendingReplays settlements and logs every one it drops', async () => {
    const store = open({ maxPendingReplays: 2 });
    await reachable(store);
    await redis.stop();

    await store.settle('a', [line(1)]);
    await store.settle('b', [line(2)]);
    await store.settle('c', [line(4)]);

    expect(store.pendingReplays()).toBe(2);
    expect(store.droppedReplayCount()).toBe(1);
    expect(log.entries.filter((e) => e.event === 'quota_replay_overflow').map((e) => [e.requestId, e.dropped, e.max])).toEqual([['a', 1, 2]]);

    await redis.restart();
    await reachable(store);
    await store.flushReplays();
    expect(await store.read([line(0)])).toEqual([{ used: 6, reserved: 0 }]);
  });

  it('starts while Redis is down, refuses quickly, and connects by itself once Redis is up', async () => {
    await redis.stop();
    const store = open();

    const { error, ms } = await rejection(store.reserve('r1', [line(10)], TTL));
    expectUnavailable(error);
    expect(ms).toBeLessThan(2000);

    await redis.restart();
    await reachable(store);
    expect(await store.reserve('r1', [line(10)], TTL)).toEqual({ ok: true });
  });
});
