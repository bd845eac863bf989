import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const dir = mkdtempSync(join(tmpdir(), 'tollgate-cli-'));
const badPolicy = join(dir, 'bad.yaml');
writeFileSync(
  badPolicy,
  `version: 1
providers:
  demo: { kind: demo }
  oops: { kind: telepathy }
tiers:
  standard: [demo/medium]
budgets:
  - id: weekly
    scope: planet
    window: { calendar: week, timezone: Mars/Olympus }
    limit: { tokens: -5 }
`,
);
const wrongTests = join(dir, 'wrong.test.yaml');
writeFileSync(
  wrongTests,
  `policy: ${JSON.stringify(join(process.cwd(), 'policy/library/contractors-economy.yaml'))}
cases:
  - name: wrongly expects premium for a contractor
    principal: { user: bob, groups: [contractors] }
    request: { tier: premium }
    expect: { effect: allow, tier: premium }
`,
);

// Each spawn pays for tsx start-up (seconds on a busy machine), so the commands run up front, two at a
// time, and the tests read the results.
const COMMANDS = {
  checkBad: ['check', badPolicy],
  testsPass: ['test-policy', 'policy/library/contractors-economy.test.yaml', 'policy/library/business-hours.test.yaml'],
  testsFail: ['test-policy', wrongTests],
  explain: ['explain', '--policy', 'policy/library/contractors-economy.yaml', '--as', '{"user":"bob","groups":["contractors"]}', '--tier', 'premium', '--now', '2026-11-25T10:00:00Z'],
} as const;
const out = {} as Record<keyof typeof COMMANDS, Run>;

beforeAll(async () => {
  const names = Object.keys(COMMANDS) as (keyof typeof COMMANDS)[];
  const queue = [...names];
  const worker = async () => {
    for (let n = queue.shift(); n; n = queue.shift()) out[n] = await run([...COMMANDS[n]]);
  };
  await Promise.all([worker(), worker()]);
}, 240_000);

describe('tollgate check', () => {
  it('prints every error with its line:column and exits 1', () => {
    const r = out.checkBad;
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toEqual([
      `${badPolicy}:4:17: providers.oops.kind: Invalid discriminator value. Expected 'demo' | 'anthropic' | 'openai' | 'bedrock'`,
      `${badPolicy}:9:12: budgets[0].scope: Invalid option: expected one of "user"|"team"|"costCenter"|"application"|"global", got "planet"`,
      `${badPolicy}:10:41: budgets[0].window.timezone: not an IANA timezone name (e.g. Europe/Paris), got "Mars/Olympus"`,
      `${badPolicy}:11:22: budgets[0].limit.tokens: Too small: expected number to be >0, got -5`,
      `${badPolicy}: 4 errors`,
      '',
    ]);
  });
});

describe('tollgate test-policy', () => {
  it('passes the library tests and exits 0', () => {
    expect(out.testsPass.status).toBe(0);
    expect(out.testsPass.stdout.split('\n').at(-2)).toBe('15 passed, 0 failed');
    expect(out.testsPass.stdout).toContain('PASS policy/library/contractors-economy.test.yaml > denies a contractor asking for premium\n');
  });

  it('prints the diff of a failing case and exits 1', () => {
    expect(out.testsFail.status).toBe(1);
    expect(out.testsFail.stdout).toBe(
      [
        `FAIL ${wrongTests} > wrongly expects premium for a contractor`,
        '    effect: expected "allow", got "deny"',
        '    tier: expected "premium", got (none)',
        '    reason: Contractors may use the economy tier only.',
        '0 passed, 1 failed',
        '',
      ].join('\n'),
    );
  });
});

describe('tollgate explain', () => {
  it('prints the decision, what decided it and what would change it', () => {
    expect(out.explain.status).toBe(0);
    expect(out.explain.stdout).toContain('decision:   deny POLICY_DENIED\ndecided by: rule contractors-no-premium\n');
    expect(out.explain.stdout).toContain('  - premium is denied by rule contractors-no-premium; standard (served by economy), economy would be allowed\n');
  });
});
