/**
 * The Redis journal's refused calls as the console keeps them between views (RedisRefusals): what a
 * pass over every decision of the streams finds, read on from where the last view stopped, and
 * nothing a stream no longer holds (retention). Written by the real store on a real Redis.
 */
import { createClient } from '@keyv/redis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisDecisions } from '../../src/admin/redisJournal.js';
import { RedisRefusals } from '../../src/admin/redisRefusals.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { DecisionRecord } from '../../src/quota/store.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const T0 = Date.parse('2026-11-25T10:00:00Z');

describe('the Redis journal refusals kept between views', () => {
  let redis: TestRedis;
  const prefix = uniquePrefix('refusals');
  let store: RedisQuotaStore;
  let now = T0;
  let n = 0;

  beforeAll(async () => {
    redis = await startRedis();
    store = new RedisQuotaStore({ url: redis.url, prefix, now: () => now, logger: pino({ level: 'silent' }), sweepIntervalMs: 0 });
  });
  afterAll(async () => {
    await store.close();
    await deleteKeys(redis.url, prefix);
    await redis.stop();
  });

  const event = (user: string, outcome: string): DecisionRecord => ({ event: 'tollgate.decision', 'request.id': `req-${++n}`, outcome, 'user.id': user, 'error.code': outcome === 'refused' ? 'POLICY_DENIED' : undefined });
  /** What the console's pages read before: every decision of the journal, the refused ones in order. */
  const pass = async () => {
    const out = [];
    for await (const d of redisDecisions(store)) if (d.event.outcome === 'refused') out.push(d);
    return out;
  };
  const users = (ds: { event: { 'user.id'?: string } }[] | undefined) => ds!.map((d) => d.event['user.id']);

  it('finds what a pass over the streams finds, reading on from where the last view stopped, and drops what retention trimmed', async () => {
    const refusals = new RedisRefusals(store);
    await store.record(event('ada', 'refused'));
    await store.settle(`req-${++n}`, [], event('bob', 'success'));
    expect(users(await refusals.refused(-Infinity, Infinity))).toEqual(['ada']);
    now += 3_600_000;
    await store.record(event('cyd', 'refused'));
    await store.recordAction('view-1', { action: 'view' });
    expect(await refusals.refused(-Infinity, Infinity)).toEqual(await pass());
    expect(users(await refusals.refused(T0 + 1, Infinity))).toEqual(['cyd']);

    // Retention trims the stream from its start: ada's refusal is no longer in the journal.
    const raw = createClient({ url: redis.url });
    await raw.connect();
    try {
      const [first] = await raw.xRange(`${prefix}{journal}:j`, '-', '+', { COUNT: 1 });
      await raw.xDel(`${prefix}{journal}:j`, first!.id);
    } finally {
      raw.destroy();
    }
    expect(users(await refusals.refused(-Infinity, Infinity))).toEqual(['cyd']);
    expect(await refusals.refused(-Infinity, Infinity)).toEqual(await pass());
  });

  it('opens any request from the entries its id hashes to, as a pass over the journal finds it', async () => {
    const refusals = new RedisRefusals(store);
    const served = event('gus', 'success');
    const id = String(served['request.id']);
    await store.settle(id, [], served);
    await store.record(event('hal', 'refused'));
    let first;
    for await (const d of redisDecisions(store)) if (d.event['request.id'] === id) (first ??= d);
    expect(first).toBeDefined();
    expect(await refusals.find(id)).toEqual(first);
    expect(await refusals.find('no-such-request')).toBeUndefined();
    // Past its limit of decisions noted, it says so, and the console reads the journal whole.
    expect(await new RedisRefusals(store, 20_000, 1).find(id)).toBeNull();
  });

  it('keeps nothing past its limit, so that the console reads the journal whole instead', async () => {
    const refusals = new RedisRefusals(store, 3);
    expect(users(await refusals.refused(-Infinity, Infinity))).toEqual(['cyd', 'hal']);
    await store.record(event('dan', 'refused'));
    await store.record(event('eve', 'refused'));
    expect(await refusals.refused(-Infinity, Infinity)).toBeUndefined();
    await store.record(event('fay', 'refused'));
    expect(await refusals.refused(-Infinity, Infinity)).toBeUndefined();
  });
});
