/**
 * What one call costs Redis in commands, on a single node: every command a script runs is work on
 * the one thread every replica shares, so the count is pinned here (INFO commandstats of a private
 * redis-server, nothing else talking to it). A call's lines share one settled marker on a single
 * node, so it is read and written once a call, not once a line; a line that other reservations
 * still hold is not checked for being empty when one of them settles.
 */
import { createClient } from '@keyv/redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lineKeys } from '../../src/policy/budgets.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine } from '../../src/quota/store.js';
import { startPrivateRedis, type PrivateRedis } from '../helpers/redis.js';

const HOUR = 3600_000;
const TTL = 60_000;

describe('Redis commands a call costs (single node)', () => {
  let redis: PrivateRedis;
  let raw: ReturnType<typeof createClient>;
  let store: RedisQuotaStore;
  const start = Math.floor(Date.now() / HOUR) * HOUR;
  const line = (budgetId: string, amount: number): LedgerLine => ({
    budgetId,
    subject: 'ada',
    limit: 1_000_000,
    amount,
    expiresAt: start + 100 * HOUR,
    ...lineKeys('cmds:', budgetId, 'ada', [start], start),
  });
  const lines = (amount: number) => [line('user', amount), line('team', amount), line('company', amount)];

  /** Inner commands run by scripts since the last reset, by name (INFO commandstats counts them too). */
  async function commands(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const m of (await raw.info('commandstats')).matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
    return out;
  }

  beforeAll(async () => {
    redis = await startPrivateRedis();
    raw = createClient({ url: redis.url });
    await raw.connect();
    store = new RedisQuotaStore({ url: redis.url, prefix: 'cmds:', commandTimeoutMs: 2000, sweepIntervalMs: 0 });
    // Scripts loaded and the lines' keys made before counting.
    await store.reserve('warm', lines(5), TTL, undefined, { dispatching: true });
    await store.settle('warm', lines(3));
  });

  afterAll(async () => {
    await store?.close();
    raw?.destroy();
    await redis?.stop();
  });

  it('reads the call settled marker once when reserving and reads and writes it once when settling, whatever the number of lines', async () => {
    await raw.configResetStat();
    await store.reserve('c1', lines(40), TTL, undefined, { dispatching: true });
    const reserved = await commands();
    expect(reserved.evalsha).toBe(1);
    expect(reserved.exists ?? 0).toBe(1);

    await raw.configResetStat();
    await store.settle('c1', lines(25));
    const settled = await commands();
    expect(settled.evalsha).toBe(1);
    // One GET of the marker, one of the journal's head; one SET of each.
    expect(settled.get).toBe(2);
    expect(settled.set).toBe(2);
    expect(await raw.get('cmds:{journal}:s:c1')).toBe('c');
  });

  it('does not look for an empty line where other reservations are still held, and deletes a line once nothing is', async () => {
    await store.reserve('held', lines(10), TTL, undefined, { dispatching: true });
    await store.reserve('c2', lines(10), TTL, undefined, { dispatching: true });
    await raw.configResetStat();
    await store.settle('c2', lines(7));
    expect((await commands()).zcard ?? 0).toBe(0);
    expect(await raw.exists(line('user', 0).reservedKey)).toBe(1);

    await raw.configResetStat();
    await store.settle('held', lines(9));
    expect((await commands()).zcard).toBe(3);
    // The last reservation gone, the three lines' reservation keys go with it.
    for (const l of lines(0)) expect(await raw.exists([l.reservedKey, `${l.reservedKey}:x`, `${l.reservedKey}:i`])).toBe(0);
    expect(await store.read(lines(0))).toEqual([
      { used: 3 + 25 + 7 + 9, reserved: 0 },
      { used: 3 + 25 + 7 + 9, reserved: 0 },
      { used: 3 + 25 + 7 + 9, reserved: 0 },
    ]);
  });
});
