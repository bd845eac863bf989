/**
 * `tollgate usage show` prints dollar budgets to the micro-dollar, the ledger's unit, as the
 * reports and the console do: to four decimals, 13 micro-dollars used printed "$0.0000 used", and a
 * team at $0.049991 of $0.05 read "$0.0500 used / $0.0000 remaining" while calls still fitted.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { resolveWindow } from '../../src/quota/windows.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const POLICY = `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
budgets:
  - { id: team-usd, scope: team, window: { calendar: month }, limit: { usd: 0.05 } }
`;

let redis: TestRedis;
let dir: string;
let env: NodeJS.ProcessEnv;
const prefix = uniquePrefix('show-usd');

beforeAll(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'tollgate-show-usd-'));
  writeFileSync(join(dir, 'policy.yaml'), POLICY);
  env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_POLICY: join(dir, 'policy.yaml') };
  const store = new RedisQuotaStore({ url: redis.url, prefix, logger: { info() {}, warn() {}, error() {} }, sweepIntervalMs: 0 });
  const w = resolveWindow({ calendar: 'month', timezone: 'UTC' }, Date.now());
  await store.adjust(lineKeys(prefix, 'team-usd', 'data', w.readStarts, w.start).usageKey, 49_991, w.expiresAt);
  await store.adjust(lineKeys(prefix, 'team-usd', 'ops', w.readStarts, w.start).usageKey, 13, w.expiresAt);
  await store.close();
});
afterAll(async () => {
  await deleteKeys(redis.url, prefix);
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('usage show of a dollar budget', () => {
  it('prints used, remaining and limit to the micro-dollar', async () => {
    const out = await usageCommand('show', { budget: 'team-usd' }, [], env);
    const row = (team: string) => out.split('\n').find((l) => l.includes(` ${team} `))!.split(/\s{2,}/);
    expect(row('data').slice(3, 7)).toEqual(['$0.049991', '$0.000000', '$0.000009', '$0.050000']);
    expect(row('ops').slice(3, 5)).toEqual(['$0.000013', '$0.000000']);
  });
});
