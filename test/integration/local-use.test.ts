/**
 * Local use over HTTP: browser pages on this machine may call a gateway bound to loopback (their
 * Origin is accepted, any port) while any other Origin is still refused; and --dev-anonymous
 * serves requests without a credential as a principal the policy declares, charging and recording
 * refusals to it, while requests with a credential authenticate as always.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkDevAnonymous } from '../../src/cli/serve.js';
import { CliError } from '../../src/cli/exit.js';
import { parsePolicy } from '../../src/policy/load.js';
import { basicPolicy, KEYS } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const INIT = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

function initialize(gw: TestGateway, headers: Record<string, string>) {
  return fetch(gw.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(INIT),
  });
}

describe('Origins when bound to loopback', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  it.each(['http://localhost:5173', 'http://127.0.0.1:9', 'http://[::1]:3000', 'https://localhost', 'http://localhost'])('accepts a page from this machine: %s', async (origin) => {
    const res = await initialize(gw, { origin, authorization: `Bearer ${KEYS.alice}` });
    expect(res.status).toBe(200);
  });

  it.each(['http://evil.example', 'http://localhost.evil.example:5173', 'http://127.0.0.2:8080', 'null', 'file://localhost', 'http://localhost:5173/path'])(
    'still refuses any other Origin with 403: %s',
    async (origin) => {
      const res = await initialize(gw, { origin, authorization: `Bearer ${KEYS.alice}` });
      expect(res.status).toBe(403);
      expect(JSON.stringify(await res.json())).toContain(`Origin ${origin} is not allowed to call this gateway.`);
    },
  );
});

describe('Origins when bound to every interface', () => {
  it('refuses a localhost Origin that is not listed', async () => {
    const gw = await startTestGateway(basicPolicy(), { env: { TOLLGATE_HOST: '0.0.0.0' } });
    try {
      const res = await fetch(gw.mcpUrl.replace('0.0.0.0', '127.0.0.1'), {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', origin: 'http://localhost:5173', authorization: `Bearer ${KEYS.alice}` },
        body: JSON.stringify(INIT),
      });
      expect(res.status).toBe(403);
    } finally {
      await gw.close();
    }
  });
});

describe('--dev-anonymous', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy(), { env: { TOLLGATE_DEV_ANONYMOUS: 'k-bob' } });
  });
  afterAll(() => gw.close());

  const anonymousClient = async () => {
    const client = new Client({ name: 'no-credential', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gw.mcpUrl)));
    return client;
  };

  it('serves an MCP client that sends no credential as the declared principal, and charges it', async () => {
    const client = await anonymousClient();
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
    expect(r.isError).toBeFalsy();
    const { requestId, budgets } = r.structuredContent as { requestId: string; budgets: { id: string; subject: string; used: number }[] };
    expect(budgets.map((b) => [b.id, b.subject])).toEqual([['user-weekly', 'bob']]);
    await gw.idle();
    expect(gw.events.find((e) => e['request.id'] === requestId)).toMatchObject({
      'user.id': 'bob',
      'auth.method': 'anonymous',
      'tollgate.charged': [{ budget: 'user-weekly', subject: 'bob', unit: 'tokens' }],
    });
    await client.close();
  });

  it('records a refusal of an anonymous call against that principal', async () => {
    const client = await anonymousClient();
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello', tier: 'premium', max_tokens: 10 } });
    expect(r.isError).toBe(true);
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ 'user.id': 'bob', 'auth.method': 'anonymous', effect: 'deny', 'error.code': 'POLICY_DENIED' });
    await client.close();
  });

  it('serves the OpenAI-compatible endpoint without a key as that principal, refusals included', async () => {
    const ok = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 }),
    });
    expect(ok.status).toBe(200);
    const bad = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'standard' }) });
    expect(bad.status).toBe(400);
    await gw.idle();
    const id = bad.headers.get('x-request-id');
    expect(gw.events.find((e) => e['request.id'] === id)).toMatchObject({ 'user.id': 'bob', 'auth.method': 'anonymous', 'error.code': 'INVALID_REQUEST' });
  });

  it('still authenticates a request that presents a credential: a good key is its own user, a bad one gets 401', async () => {
    const alice = await connectHttp(gw.mcpUrl, KEYS.alice);
    const budget = (await alice.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { user: string };
    expect(budget.user).toBe('alice');
    await alice.close();
    const res = await initialize(gw, { authorization: 'Bearer key-nobody' });
    expect(res.status).toBe(401);
  });
});

describe('--dev-anonymous at start', () => {
  const policy = parsePolicy(basicPolicy(), 'p.yaml');

  it('prints a loud warning naming whom requests without a credential are charged to', () => {
    expect(checkDevAnonymous(policy, '127.0.0.1', 'alice')).toContain('tollgate: WARNING: --dev-anonymous alice: requests WITHOUT a credential are served and charged as user alice');
  });

  it('refuses a principal the policy does not declare', () => {
    expect(() => checkDevAnonymous(policy, '127.0.0.1', 'mallory')).toThrow(CliError);
    expect(() => checkDevAnonymous(policy, '127.0.0.1', 'mallory')).toThrow('--dev-anonymous mallory: the policy p.yaml has no enabled apiKeys entry with that id or user');
  });

  it('refuses to start on a non-loopback address: clear error on stderr, exit 2, nothing served', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-dev-anon-'));
    try {
      const file = join(dir, 'policy.yaml');
      writeFileSync(file, basicPolicy());
      const run = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--host', '0.0.0.0', '--port', '0', '--data-dir', 'none', '--dev-anonymous', 'alice', '--policy', file], {
          env: { PATH: process.env.PATH ?? '', TOLLGATE_LOG_LEVEL: 'silent' },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, stderr }));
      });
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('refusing to serve on 0.0.0.0 with --dev-anonymous alice (TOLLGATE_DEV_ANONYMOUS)');
      expect(run.stderr).toContain('allowed on a loopback address only');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
