/**
 * `tollgate usage adjust` / `credit` take the amount as a decimal number in the budget's unit, and
 * never move usage by more than the budget's whole limit. Found by a probe: `--amount 0x10` was
 * taken as 16 tokens, and `credit --amount 100000000` on a 100,000-token budget left its subject
 * 100 million tokens of headroom, with no word from the CLI.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const POLICY = `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
budgets:
  - { id: user-tokens, scope: user, window: { calendar: month }, limit: { tokens: 100000 } }
  - { id: team-usd, scope: team, window: { calendar: month }, limit: { usd: 50 } }
`;

let redis: TestRedis;
let dir: string;
let env: NodeJS.ProcessEnv;
const prefix = uniquePrefix('adjust-amount');

beforeAll(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'tollgate-adjust-'));
  writeFileSync(join(dir, 'p.yaml'), POLICY);
  env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_POLICY: join(dir, 'p.yaml') };
});
afterAll(async () => {
  await deleteKeys(redis.url, prefix);
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

const adjust = (verb: 'adjust' | 'credit', budget: string, amount: string) => usageCommand(verb, { budget, subject: 'bob', amount, json: true }, [], env);

describe('usage adjust and credit amounts', () => {
  it.each(['0x10', '1e3', '12abc', '', ' ', 'Infinity', '--5'])('refuses %j, which is not a decimal number', async (amount) => {
    await expect(adjust('adjust', 'user-tokens', amount)).rejects.toThrow(/--amount must be a decimal number/);
  });

  it('refuses an adjustment or a credit larger than the budget\'s whole limit', async () => {
    await expect(adjust('credit', 'user-tokens', '100000000')).rejects.toThrow('An adjustment of -100000000 moves usage by more than budget user-tokens\'s whole limit (100000 tokens)');
    await expect(adjust('adjust', 'team-usd', '50.01')).rejects.toThrow('An adjustment of 50.01 moves usage by more than budget team-usd\'s whole limit (50 USD)');
  });

  it('refuses a dollar amount finer than a micro-dollar, which the ledger would round', async () => {
    await expect(adjust('adjust', 'team-usd', '0.0000015')).rejects.toThrow('An adjustment must be a non-zero amount in USD, to the micro-dollar, got 0.0000015.');
  });

  it('applies decimal amounts within the limit', async () => {
    expect(JSON.parse(await adjust('adjust', 'user-tokens', '16'))[0]).toMatchObject({ subject: 'bob', used: 16 });
    expect(JSON.parse(await adjust('credit', 'user-tokens', '6'))[0]).toMatchObject({ subject: 'bob', used: 10 });
    expect(JSON.parse(await adjust('adjust', 'team-usd', '1.5'))[0]).toMatchObject({ subject: 'bob', used: 1.5 });
  });
});
