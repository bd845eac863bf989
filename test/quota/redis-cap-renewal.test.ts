/**
 * A cap's slot (calls in flight) held by a call that is still running, on a replica that never
 * stopped renewing but could not reach Redis for longer than what was left of the reservation's
 * TTL. Once Redis is back, the first script to touch the line closes the reservation by expiry
 * (recovery gives the slot back, charging nothing). Before, the renewal that followed only extended
 * reservations that still existed, so the slot stayed free for the rest of the call: measured
 * (cap 3, TTL 3 s, Redis down 5 s with its AOF), 6 calls in flight against 3.
 *
 * Now the renewal makes a cap line's reservation again, unchecked, and new calls see the slot
 * taken; the call's settle gives it back, and the call is counted once (recovery's entry).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '@keyv/redis';
import { limitLine } from '../../src/policy/limits.js';
import { compileLimit } from '../../src/policy/load.js';
import type { RateLimitConfig } from '../../src/policy/schema.js';
import { CAP_UNIT } from '../../src/quota/journal.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { startPrivateRedis, uniquePrefix, untilReachable, type PrivateRedis } from '../helpers/redis.js';

const quiet = { info() {}, warn() {}, error() {} };

describe('a cap slot on Redis after an outage longer than its reservation TTL', () => {
  let redis: PrivateRedis;

  beforeAll(async () => {
    redis = await startPrivateRedis({ appendonly: true });
  });
  afterAll(async () => {
    await redis.stop();
  });

  it('is held again by the next renewal of the call that holds it, refuses new calls, and is given back by its settle once', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix('caprenew');
    // Both replicas' clock: `passed` stands for the time the outage lasted.
    let passed = 0;
    const now = () => Date.now() + passed;
    const a = new RedisQuotaStore({ url: redis.url, prefix, now, sweepIntervalMs: 0, commandTimeoutMs: 500, logger: quiet });
    const b = new RedisQuotaStore({ url: redis.url, prefix, now, sweepIntervalMs: 0, commandTimeoutMs: 500, logger: quiet });
    const cap = limitLine(compileLimit({ id: 'user-cap', scope: 'user', concurrent: 1, retryAfterMs: 1000, failMode: 'closed' } as RateLimitConfig), 'ada', now(), prefix);
    const meta = { units: {}, limits: { 'user-cap': CAP_UNIT } };
    try {
      expect((await a.reserve('held-1', [cap.one], 3000, meta, { dispatching: true })).ok).toBe(true);

      // Redis dies; the outage outlasts the 3 s TTL and replica A's renewal cannot reach it.
      await redis.kill();
      passed += 5000;
      await expect(a.extend('held-1', 3000)).rejects.toThrow();
      await redis.restart();

      // Back: replica B's script touches the line first and closes the expired reservation.
      expect(await untilReachable(b, cap.one)).toEqual([{ used: 0, reserved: 0 }]);
      // A's next renewal finds the call's slot gone and takes it again (once A has reconnected too:
      // its reads see the slot B closed, and do not touch the reservation).
      await untilReachable(a, cap.zero);
      const renewed = await a.extend('held-1', 3000);
      const refused = await b.reserve('b-1', [cap.one], 3000, meta, { dispatching: true });
      expect(refused).toMatchObject({ ok: false, budgetId: 'user-cap', reserved: 1, limit: 1 });
      expect(renewed).toEqual({ reasserted: 1 });

      // The call ends: its settle gives the slot back, and the next call is admitted.
      await a.settle('held-1', [cap.zero], { 'request.id': 'held-1', outcome: 'served' });
      expect(await b.read([cap.one])).toEqual([{ used: 0, reserved: 0 }]);
      expect((await b.reserve('b-2', [cap.one], 3000, meta, { dispatching: true })).ok).toBe(true);
      await b.release('b-2');

      // Counted once: recovery's entry closed the call; the settle after it charged nothing more.
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        const entries = await client.xRange(`${prefix}{journal}:j`, '-', '+');
        const kinds = entries.map((e) => JSON.parse(e.message.body!) as { kind: string; id?: string }).filter((e) => e.id === 'held-1').map((e) => e.kind);
        expect(kinds).toEqual(['recover']);
      } finally {
        await client.quit();
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('is not taken again once the call has settled itself', { timeout: 30_000 }, async () => {
    const prefix = uniquePrefix('caprenew');
    const a = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0, logger: quiet });
    const cap = limitLine(compileLimit({ id: 'user-cap', scope: 'user', concurrent: 1, retryAfterMs: 1000, failMode: 'closed' } as RateLimitConfig), 'ada', Date.now(), prefix);
    try {
      expect((await a.reserve('done-1', [cap.one], 3000, { units: {}, limits: { 'user-cap': CAP_UNIT } }, { dispatching: true })).ok).toBe(true);
      await a.settle('done-1', [cap.zero], { 'request.id': 'done-1', outcome: 'served' });
      // A renewal sent before the settle and run after it (a replayed write) takes nothing.
      expect(await a.extend('done-1', 3000)).toEqual({ reasserted: 0 });
      expect(await a.read([cap.one])).toEqual([{ used: 0, reserved: 0 }]);
    } finally {
      await a.close();
    }
  });
});
