/**
 * The Redis store's day rollups as the console keeps them between views (RedisRollups), on a real
 * Redis written by the real store: the reader's today and yesterday read whole on every view (a
 * write into the day Redis calls today leaves the hash's version as it was), an older day kept
 * while its version is unchanged and read again after a write into that past day, and a hash
 * without a version read whole every time. Each view is checked against a reader that kept
 * nothing.
 */
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { RedisRollups } from '../../src/admin/redisRollups.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { dayOf } from '../../src/quota/redisJournal.js';
import type { UsageRollup } from '../../src/quota/rollups.js';
import { onRedisDay } from '../helpers/redis.js';
import { redisSuite } from '../helpers/redisSuite.js';

const DAY = 86_400_000;
const silent = pino({ level: 'silent' });

describe('RedisRollups', () => {
  const suite = redisSuite<RedisQuotaStore>('rollups');
  /** An instant on the day Redis's own clock is on. */
  let today: number;
  /** A gateway replica whose clock says `at`. */
  const replica = (at: number) => {
    const store = new RedisQuotaStore({ url: suite.redis.url, prefix: suite.prefix, now: () => at, logger: silent, sweepIntervalMs: 0 });
    suite.stores.push(store);
    return store;
  };
  let k = 0;
  /** A refused call of `user`'s: one call in the rollups of the day the replica's clock is on. */
  const call = (store: RedisQuotaStore, user: string) =>
    store.record({ event: 'tollgate.decision', 'request.id': `r${++k}`, outcome: 'refused', 'error.code': 'POLICY_DENIED', 'user.id': user });
  const calls = (rows: UsageRollup[]) => rows.map((r) => [r.day, r.user, r.calls]);
  /** What a reader that kept nothing reads. */
  const fresh = (store: RedisQuotaStore, from: string, to: string) => new RedisRollups(store, { now: () => today }).read(from, to);

  beforeEach(async () => {
    today = await onRedisDay(suite.raw);
  });

  it("reads today's and yesterday's hashes whole on every view, so a write that leaves today's version as it was still shows", async () => {
    const [now, behind] = [replica(today), replica(today - DAY)];
    await call(now, 'ada');
    await call(behind, 'bob');
    const [from, to] = [dayOf(today - DAY), dayOf(today)];
    const reader = new RedisRollups(now, { now: () => today });
    expect(calls(await reader.read(from, to))).toEqual([[from, 'bob', 1], [to, 'ada', 1]]);
    const version = await suite.raw.hGet(`${suite.prefix}{journal}:roll:${to}`, '#');

    await call(now, 'ada');
    expect(await suite.raw.hGet(`${suite.prefix}{journal}:roll:${to}`, '#')).toBe(version);
    const after = await reader.read(from, to);
    expect(reader.lastReadWhole).toBe(2);
    expect(calls(after)).toEqual([[from, 'bob', 1], [to, 'ada', 2]]);
  });

  it('keeps an older day while its version is the one it was made with, and reads it again after a write into that past day', async () => {
    const [made, late] = [replica(today), replica(today - DAY)];
    await call(made, 'ada');
    await call(made, 'ada');
    await call(late, 'bob');
    // The reader's clock two days on: both days are older than its yesterday.
    const [from, to] = [dayOf(today - DAY), dayOf(today)];
    const reader = new RedisRollups(made, { now: () => today + 2 * DAY });
    expect(calls(await reader.read(from, to))).toEqual([[from, 'bob', 1], [to, 'ada', 2]]);
    expect(reader.lastReadWhole).toBe(2);
    expect(calls(await reader.read(from, to))).toEqual([[from, 'bob', 1], [to, 'ada', 2]]);
    expect(reader.lastReadWhole).toBe(0);

    // Another replica, its clock a day behind Redis's, settles into the day before: that hash's
    // version changes, so the reader reads it again and keeps the other.
    await call(late, 'bob');
    const after = await reader.read(from, to);
    expect(reader.lastReadWhole).toBe(1);
    expect(calls(after)).toEqual([[from, 'bob', 2], [to, 'ada', 2]]);
    expect(after).toEqual(await fresh(made, from, to));
  });

  it('reads a hash without a version (written before versions existed) whole on every view', async () => {
    const store = replica(today - 3 * DAY);
    await call(store, 'ada');
    const day = dayOf(today - 3 * DAY);
    await suite.raw.hDel(`${suite.prefix}{journal}:roll:${day}`, '#');
    const reader = new RedisRollups(store, { now: () => today });
    expect(calls(await reader.read(day, day))).toEqual([[day, 'ada', 1]]);
    expect(calls(await reader.read(day, day))).toEqual([[day, 'ada', 1]]);
    expect(reader.lastReadWhole).toBe(1);
  });
});
