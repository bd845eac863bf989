/**
 * Every command that opens a store checks that it holds the data of the policy it resolved (issue 18
 * item 2): `serve`, `keys` and `usage export|report|refusals`, like `usage show|top` and `audit
 * verify` before them. Here the store is an embedded journal written under the deployment's
 * policy (team_monthly), read through the shipped default policy, which does not declare it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import { keysCommand } from '../../src/admin/keys.js';
import { StoreMismatchError } from '../../src/admin/mismatch.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { resolveWindow } from '../../src/quota/windows.js';
import { spawnGateway } from '../helpers/process.js';

const DEPLOYMENT = `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
budgets:
  - { id: team_monthly, scope: team, window: { calendar: month }, limit: { tokens: 1000000 } }
`;

let work: string;
let dir: string;
let deployment: string;
const env = (): NodeJS.ProcessEnv => ({ TOLLGATE_DATA_DIR: dir });
const FROM = '2020-01-01T00:00:00Z';
const TO = '2100-01-01T00:00:00Z';

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-mismatch-cmds-'));
  dir = join(work, 'data');
  deployment = join(work, 'deployment.yaml');
  writeFileSync(deployment, DEPLOYMENT);
  // The deployment's gateway charged team data 1234 tokens this month, into its journal.
  const { journal, replay } = FileJournal.open({ dir });
  const store = new MemoryQuotaStore(Date.now, journal);
  store.restore(replay);
  const w = resolveWindow({ calendar: 'month', timezone: 'UTC' }, Date.now());
  const keys = lineKeys('tollgate:', 'team_monthly', 'data', w.readStarts, w.start);
  const line = { budgetId: 'team_monthly', subject: 'data', ...keys, limit: 1_000_000, amount: 1234, expiresAt: w.expiresAt };
  await store.reserve('r1', [line], 60_000);
  await store.settle('r1', [line]);
  await journal.close();
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('a store written under another policy', () => {
  it('serve refuses to start, names the budgets and exits 4; it serves with the right policy or --allow-other-budgets', async () => {
    const wrong = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--data-dir', dir, '--no-watch'], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, TOLLGATE_LOG_LEVEL: 'error' },
      timeout: 90_000,
    });
    expect(wrong.status).toBe(4);
    expect(wrong.stderr).toContain(`The journal in ${dir} holds usage for a budget the policy`);
    expect(wrong.stderr).toContain('does not declare: team_monthly');
    expect(wrong.stderr).not.toContain('serving MCP at');

    for (const args of [['--data-dir', dir], ['--data-dir', dir, '--allow-other-budgets']]) {
      const policyFile = args.length === 2 ? deployment : join(process.cwd(), 'policy/default.yaml');
      const gw = await spawnGateway({ policyFile, eventsFile: join(work, `events-${args.length}.jsonl`), args: [...args, '--no-watch'], startTimeoutMs: 90_000 });
      expect(gw.stderr()).toContain('serving MCP at');
      await gw.stop();
    }
  }, 240_000);

  it('usage export, report and refusals say so instead of reading it', async () => {
    for (const verb of ['export', 'report', 'refusals']) {
      const run = usageCommand(verb, { from: FROM, to: TO }, [], env());
      await expect(run, verb).rejects.toThrow(StoreMismatchError);
      await expect(run, verb).rejects.toThrow(/policy .*policy\/default\.yaml does not declare: team_monthly/);
    }
  });

  it("usage export, report and refusals read it through the deployment's policy, or with --allow-other-budgets", async () => {
    expect(await usageCommand('refusals', { from: FROM, to: TO, policy: deployment }, [], env())).toMatch(/no refusals/i);
    expect(await usageCommand('export', { from: FROM, to: TO, 'allow-other-budgets': true }, [], env())).toMatch(/^[a-z_,]+\n/);
  });

  it('keys says so before issuing a key into it', async () => {
    await expect(keysCommand('issue', { user: 'eve' }, env())).rejects.toThrow('does not declare: team_monthly');
    expect(await keysCommand('list', { policy: deployment }, env())).toBe('no issued keys\n');
  });

  it('event files are logs, read as they are', async () => {
    const events = join(work, 'events.jsonl');
    writeFileSync(events, '');
    expect(await usageCommand('refusals', { from: FROM, to: TO, events: [events] }, [], env())).toMatch(/no refusals/i);
  });
});
