/**
 * `tollgate serve` and `explain` given a bad setting: each refuses with one line naming the setting
 * and the fix and a documented exit code, never a stack trace, and never serves a policy that
 * `tollgate check` refuses.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

interface Run {
  status: number | null;
  stderr: string;
}

/** Runs the CLI; a gateway that starts serving instead of refusing is stopped and reported with status null. */
function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      env: { PATH: process.env.PATH ?? '', TOLLGATE_DATA_DIR: 'none', TOLLGATE_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 60_000,
    });
    let stderr = '';
    let served = false;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (!served && stderr.includes('serving MCP at')) {
        served = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status: served ? null : status, stderr }));
  });
}

const dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-serve-'));
const capTypo = join(dir, 'cap-typo.yaml');
writeFileSync(
  capTypo,
  `version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  economy: [demo/small]
rules:
  - id: contractors-economy
    when: "'contractors' in principal.group"
    effect: cap_tier
    tier: economy
`,
);
const aFile = join(dir, 'a-file');
writeFileSync(aFile, '');

let holder: Server;
let heldPort = 0;
const COMMANDS = {
  capTypo: () => ['serve', '--port', '0', '--policy', capTypo],
  portInUse: () => ['serve', '--port', String(heldPort)],
  redisFlag: () => ['serve', '--port', '0', '--redis', 'localhost:6379'],
  eventsUnder: () => ['serve', '--port', '0', '--events', join(aFile, 'events.jsonl')],
  explainUsage: () => ['explain', '--as', '{"user":"alice"}', '--usage', 'employee-weekley=1900000'],
} as const;
const out = {} as Record<keyof typeof COMMANDS, Run>;

// Each spawn pays for tsx start-up, so the commands run up front, two at a time, and the tests read the results.
beforeAll(async () => {
  holder = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  heldPort = (holder.address() as { port: number }).port;
  const queue = Object.keys(COMMANDS) as (keyof typeof COMMANDS)[];
  const worker = async () => {
    for (let n = queue.shift(); n; n = queue.shift()) out[n] = await run(COMMANDS[n]());
  };
  await Promise.all([worker(), worker()]);
}, 240_000);

afterAll(() => new Promise<void>((r) => holder.close(() => r())));

describe('tollgate serve with a bad setting', () => {
  it('refuses a policy whose cap_tier rule reads a misspelt field, naming its line, and exits 1', () => {
    expect(out.capTypo.status).toBe(1);
    expect(out.capTypo.stderr).toBe(
      `tollgate: POLICY_INVALID: Policy ${capTypo} is invalid (1 error):\n` +
        '  - rules[0].when (line 9, col 39): unknown field group on principal; known: user, teams, costCenter, groups, roles, authMethod, actors, app; did you mean groups?\n',
    );
  });

  it('says the port is taken and which setting to change, without a stack trace, and exits 2', () => {
    expect(out.portInUse.status).toBe(2);
    expect(out.portInUse.stderr).toBe(`tollgate: cannot listen on 127.0.0.1:${heldPort}: the address is already in use (EADDRINUSE); choose another --port (TOLLGATE_PORT) or --host (TOLLGATE_HOST), or stop what holds it\n`);
  });

  it('refuses --redis without redis:// as REDIS_URL is refused, and exits 2', () => {
    expect(out.redisFlag.status).toBe(2);
    expect(out.redisFlag.stderr).toBe('tollgate: --redis localhost:6379: expected a redis:// or rediss:// URL, e.g. redis://localhost:6379\n');
  });

  it('refuses a decision events file it cannot write, naming the flag, instead of crashing once serving', () => {
    expect(out.eventsUnder.status).toBe(2);
    expect(out.eventsUnder.stderr).toBe(`tollgate: --events ${join(aFile, 'events.jsonl')} (TOLLGATE_EVENTS_FILE): cannot write decision events there (ENOTDIR)\n`);
  });
});

describe('tollgate explain with a bad --usage', () => {
  it('names a budget the policy does not declare, with the one meant, and exits 2', () => {
    expect(out.explainUsage.status).toBe(2);
    expect(out.explainUsage.stderr).toBe(
      'tollgate: --usage employee-weekley: the policy declares no such budget or rate limit; did you mean employee-weekly? (it declares employee-weekly, small-weekly, small-weekly-economy, team-monthly-usd, cost-centre-monthly-usd)\n',
    );
  });
});
