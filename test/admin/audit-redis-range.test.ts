/**
 * `tollgate usage report --redis` over a range far wider than the store keeps: the Redis rollups
 * are one hash a UTC day, kept TOLLGATE_ROLLUP_DAYS (400) days, so a range from 1970 to 9999 reads
 * the days that can hold one, at once, and says which, instead of reading a hash for each of some
 * three million days.
 */
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import type { UsageReport } from '../../src/admin/report.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { dayOf } from '../../src/quota/redisJournal.js';
import { onRedisDay } from '../helpers/redis.js';
import { redisSuite } from '../helpers/redisSuite.js';

const DAY = 86_400_000;

describe('usage report --redis over a range wider than the rollups kept', () => {
  const suite = redisSuite<RedisQuotaStore>('audit-range');
  let today: number;

  beforeEach(async () => {
    today = await onRedisDay(suite.raw);
    const store = new RedisQuotaStore({ url: suite.redis.url, prefix: suite.prefix, now: () => today, logger: pino({ level: 'silent' }), sweepIntervalMs: 0 });
    suite.stores.push(store);
    await store.record({ event: 'tollgate.decision', 'request.id': 'r1', outcome: 'refused', 'error.code': 'POLICY_DENIED', 'user.id': 'ada' });
  });

  const report = async (from: string, to: string, env: NodeJS.ProcessEnv = {}) =>
    JSON.parse(
      await usageCommand('report', { redis: suite.redis.url, from, to, format: 'json', 'allow-other-budgets': true }, [], { TOLLGATE_KEY_PREFIX: suite.prefix, ...env }),
    ) as UsageReport;

  it('reads 1970 to 9999 in the days the store can hold, and says so', async () => {
    const r = await report('1970-01-01', '9999-12-31');
    expect(r.rows.map((x) => [x.periodStart, x.key, x.calls])).toEqual([[dayOf(today), 'ada', 1]]);
    expect(r.notes).toEqual([`The Redis store keeps day rollups 400 days: this report covers the days ${dayOf(today - 402 * DAY)} to ${dayOf(today + 2 * DAY)}.`]);
  }, 30_000);

  it('keeps as many days as TOLLGATE_ROLLUP_DAYS says the store keeps', async () => {
    const r = await report('2000-01-01', '2100-01-01', { TOLLGATE_ROLLUP_DAYS: '30' });
    expect(r.rows.map((x) => x.calls)).toEqual([1]);
    expect(r.notes).toEqual([`The Redis store keeps day rollups 30 days: this report covers the days ${dayOf(today - 32 * DAY)} to ${dayOf(today + 2 * DAY)}.`]);
  }, 30_000);

  it('says nothing of a range within the days kept', async () => {
    const from = `${dayOf(today - DAY)}T00:00:00Z`;
    const to = `${dayOf(today + DAY)}T00:00:00Z`;
    const r = await report(from, to);
    expect(r.rows.map((x) => x.calls)).toEqual([1]);
    expect(r.notes).toEqual([]);
  });
});
