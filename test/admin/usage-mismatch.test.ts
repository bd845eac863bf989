/**
 * `tollgate usage` reading a ledger through the wrong policy (issue 18: `usage top` printed "no
 * usage" while the ledger held spend, because it read policy/default.yaml): the command names the
 * budgets the store holds that the policy does not declare and exits 4.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import { keysCommand } from '../../src/admin/keys.js';
import { StoreMismatchError } from '../../src/admin/mismatch.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { resolveWindow } from '../../src/quota/windows.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const DEPLOYMENT = `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
budgets:
  - { id: team_monthly, scope: team, window: { calendar: month }, limit: { tokens: 1000000 } }
`;

let redis: TestRedis;
let dir: string;
let env: NodeJS.ProcessEnv;
const prefix = uniquePrefix('mismatch');

beforeAll(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'tollgate-mismatch-'));
  writeFileSync(join(dir, 'deployment.yaml'), DEPLOYMENT);
  env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix };
  // The deployment's gateway charged team data 1234 tokens this month.
  const store = new RedisQuotaStore({ url: redis.url, prefix, logger: { info() {}, warn() {}, error() {} }, sweepIntervalMs: 0 });
  const w = resolveWindow({ calendar: 'month', timezone: 'UTC' }, Date.now());
  await store.adjust(lineKeys(prefix, 'team_monthly', 'data', w.readStarts, w.start).usageKey, 1234, w.expiresAt);
  await store.close();
});
afterAll(async () => {
  await deleteKeys(redis.url, prefix);
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('usage against a store written under another policy', () => {
  it('usage top names the budgets the policy does not declare instead of printing no usage', async () => {
    const top = usageCommand('top', {}, [], env);
    await expect(top).rejects.toThrow(StoreMismatchError);
    await expect(top).rejects.toThrow(/holds usage for a budget the policy .*policy\/default\.yaml does not declare: team_monthly \(it declares employee-weekly,/);
  });

  it('usage show --budget says the store holds that budget rather than "no such budget"', async () => {
    await expect(usageCommand('show', { budget: 'team_monthly' }, [], env)).rejects.toThrow('does not declare: team_monthly');
  });

  it("reads the ledger through the deployment's policy, given by --policy or the environment", async () => {
    const rows = JSON.parse(await usageCommand('top', { policy: join(dir, 'deployment.yaml'), json: true }, [], env)) as { budgetId: string; subject: string; used: number }[];
    expect(rows.map((r) => [r.budgetId, r.subject, r.used])).toEqual([['team_monthly', 'data', 1234]]);
    const viaEnv = JSON.parse(await usageCommand('show', { json: true }, [], { ...env, TOLLGATE_POLICY: join(dir, 'deployment.yaml') })) as unknown[];
    expect(viaEnv).toHaveLength(1);
  });

  it('reads it anyway with --allow-other-budgets', async () => {
    expect(await usageCommand('top', { 'allow-other-budgets': true }, [], env)).toBe('no usage in the current window\n');
  });

  it('exits 4 from the command line, and reads tollgate.yaml in the working directory', () => {
    const cli = join(process.cwd(), 'src/cli.ts');
    const tsx = pathToFileURL(join(process.cwd(), 'node_modules/tsx/dist/loader.mjs')).href;
    const run = (cwd: string) => spawnSync(process.execPath, ['--import', tsx, cli, 'usage', 'top'], { cwd, encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, timeout: 60_000 });
    const wrong = run(process.cwd());
    expect(wrong.status).toBe(4);
    expect(wrong.stdout).toBe('');
    expect(wrong.stderr).toContain('does not declare: team_monthly');
    writeFileSync(join(dir, 'tollgate.yaml'), 'policy: deployment.yaml\n');
    const right = run(dir);
    expect(right.stderr).toBe('');
    expect(right.status).toBe(0);
    expect(right.stdout).toMatch(/^budget +scope +subject +used/);
    expect(right.stdout).toContain('team_monthly  team   data     1234');
  }, 120_000);

  it('usage report, keys and serve on the shared store say so too (serve exits 4 before it listens)', async () => {
    await expect(usageCommand('report', { redis: redis.url }, [], env)).rejects.toThrow(/The Redis store at redis:\/\/.* \(prefix .*\) holds usage for a budget the policy .* does not declare: team_monthly/);
    await expect(keysCommand('list', { redis: redis.url }, env)).rejects.toThrow(StoreMismatchError);
    expect(await keysCommand('list', { redis: redis.url, policy: join(dir, 'deployment.yaml') }, env)).toBe('no issued keys\n');
    const tsx = pathToFileURL(join(process.cwd(), 'node_modules/tsx/dist/loader.mjs')).href;
    const serve = (workers: string) =>
      spawnSync(process.execPath, ['--import', tsx, 'src/cli.ts', 'serve', '--port', '0', '--no-watch', '--workers', workers], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH, TOLLGATE_LOG_LEVEL: 'error', ...env },
        timeout: 90_000,
      });
    for (const workers of ['1', '2']) {
      const r = serve(workers);
      expect(r.status, r.stderr).toBe(4);
      expect(r.stderr).toContain('does not declare: team_monthly');
      expect(r.stderr).not.toContain('serving MCP at');
    }
  }, 200_000);
});
