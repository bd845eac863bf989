import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha } from '../fixtures/policies.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const AUD = 'tollgate';

function policy(idp: TestIssuer): string {
  return `
version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
identity:
  oidc:
    - issuer: ${idp.issuer}
      jwksUri: ${idp.jwksUri}
      audience: ${AUD}
      claims: { user: preferred_username }
apiKeys:
  - { id: k-frank, sha256: ${sha('key-frank')}, user: frank }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week }
    limit: { tokens: 5000 }
`;
}

/** Runs `tollgate stdio` with the given credential variables and stdin closed, events to `eventsFile`; resolves on exit. */
function runStdio(policyPath: string, env: Record<string, string>, eventsFile: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policyPath], {
      env: { PATH: process.env.PATH ?? '', TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_EVENTS_FILE: eventsFile, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end();
  });
}

/** The refusals recorded in an events file: transport, code, reason and credential kind. */
function refusals(file: string): unknown[][] {
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .map((e) => [e.transport, e['error.code'], e.reason, e['auth.credential.kind']]);
}

describe('stdio credentials from the environment', () => {
  let idp: TestIssuer;
  let dir: string;
  let policyPath: string;
  beforeAll(async () => {
    idp = await startTestIssuer();
    dir = mkdtempSync(join(tmpdir(), 'tollgate-auth-stdio-'));
    policyPath = join(dir, 'policy.yaml');
    writeFileSync(policyPath, policy(idp));
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await idp.close();
  });

  it('serves a caller whose TOLLGATE_TOKEN verifies, charging the user it names', async () => {
    const token = await idp.sign({ sub: 'id-1', aud: AUD, preferred_username: 'erin' });
    const client = new Client({ name: 'tollgate-test', version: '1.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policyPath],
        env: { PATH: process.env.PATH ?? '', TOLLGATE_TOKEN: token, TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl') },
        stderr: 'ignore',
      }),
    );
    await client.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
    const budget = (await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { user: string; budgets: { subject: string; used: number }[] };
    expect(budget).toMatchObject({ user: 'erin', budgets: [{ subject: 'erin', used: 6 }] });
    await client.close();
  });

  it.concurrent('exits 3 before serving, with a clear message and nothing on stdout, for an expired token', async () => {
    const token = await idp.sign({ sub: 'id-1', aud: AUD, preferred_username: 'erin', iat: idp.nowS() - 900, exp: idp.nowS() - 600 });
    const events = join(dir, 'expired.jsonl');
    expect(await runStdio(policyPath, { TOLLGATE_TOKEN: token }, events)).toEqual({
      code: 3,
      stdout: '',
      stderr: 'tollgate: AUTH_INVALID: TOLLGATE_TOKEN was rejected: The token has expired.\n',
    });
    expect(refusals(events)).toEqual([['stdio', 'AUTH_INVALID', 'TOLLGATE_TOKEN was rejected: The token has expired.', 'jwt']]);
  });

  it.concurrent('exits 3 when both TOLLGATE_API_KEY and TOLLGATE_TOKEN are set, and records the refusal it reports', async () => {
    const events = join(dir, 'both.jsonl');
    const message = 'Both TOLLGATE_API_KEY and TOLLGATE_TOKEN are set: set only one, so it is clear who is charged.';
    expect(await runStdio(policyPath, { TOLLGATE_API_KEY: 'key-frank', TOLLGATE_TOKEN: 'a.b.c' }, events)).toEqual({ code: 3, stdout: '', stderr: `tollgate: AUTH_INVALID: ${message}\n` });
    expect(refusals(events)).toEqual([['stdio', 'AUTH_INVALID', message, 'none']]);
  });

  it.concurrent('exits 3 when neither TOLLGATE_API_KEY nor TOLLGATE_TOKEN is set', async () => {
    const events = join(dir, 'none.jsonl');
    expect(await runStdio(policyPath, {}, events)).toEqual({
      code: 3,
      stdout: '',
      stderr: "tollgate: AUTH_REQUIRED: Neither TOLLGATE_API_KEY nor TOLLGATE_TOKEN is set: stdio mode needs the caller's API key or token in the environment.\n",
    });
    expect(refusals(events)).toEqual([['stdio', 'AUTH_REQUIRED', 'No credential was presented; send an API key or token.', 'none']]);
  });

  /** The log lines (pino JSON) on stderr, and the lines that are not JSON. */
  const split = (stderr: string) => {
    const lines = stderr.trim().split('\n');
    const json = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; event?: string; transport?: string; user?: string });
    return { json, text: lines.filter((l) => !l.startsWith('{')) };
  };

  it('never logs ready for a bad API key, and exits 3 with AUTH_INVALID', async () => {
    const events = join(dir, 'bad-key.jsonl');
    const run = await runStdio(policyPath, { TOLLGATE_API_KEY: 'key-not-listed', TOLLGATE_LOG_LEVEL: 'info' }, events);
    expect(run.code).toBe(3);
    expect(run.stdout).toBe('');
    const { json, text } = split(run.stderr);
    expect(json.map((l) => l.msg)).not.toContain('tollgate ready');
    expect(run.stderr).not.toContain('ready');
    expect(text).toEqual(['tollgate: AUTH_INVALID: TOLLGATE_API_KEY was rejected: The API key is not recognised (unknown, revoked or disabled).']);
    expect(refusals(events)).toEqual([['stdio', 'AUTH_INVALID', 'TOLLGATE_API_KEY was rejected: The API key is not recognised (unknown, revoked or disabled).', 'api_key']]);
  });

  it('logs ready once the key is accepted, naming the caller', async () => {
    const run = await runStdio(policyPath, { TOLLGATE_API_KEY: 'key-frank', TOLLGATE_LOG_LEVEL: 'info' }, join(dir, 'good-key.jsonl'));
    expect(run.code).toBe(0);
    const ready = split(run.stderr).json.filter((l) => l.msg === 'tollgate ready');
    expect(ready.map((l) => [l.event, l.transport, l.user])).toEqual([['started', 'stdio', 'frank']]);
  });
});
