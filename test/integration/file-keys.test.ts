/**
 * API keys issued without Redis: `tollgate keys` (runKeysCommand, with TOLLGATE_DATA_DIR and no
 * REDIS_URL) appends them to keys.jsonl in the data directory, and a gateway serving from that
 * directory accepts them, across a restart, and refuses a revoked one within the lookup cache time
 * (5 s). The gateway runs on a clock the test moves, so the cache time passes without waiting.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runKeysCommand } from '../../src/admin/keys.js';
import { basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

describe('API keys issued into the data directory (no Redis)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
  // tollgate keys checks the journal holds this policy's budgets: it reads the gateway's policy.
  const policyFile = join(mkdtempSync(join(tmpdir(), 'tollgate-keys-policy-')), 'policy.yaml');
  writeFileSync(policyFile, basicPolicy());
  const env = { TOLLGATE_DATA_DIR: dir, TOLLGATE_POLICY: policyFile };
  let gw: TestGateway | undefined;
  let clock = Date.now();
  const now = () => clock;
  const start = async () => (gw = await startTestGateway(basicPolicy(), { env, now }));
  const keys = (...args: string[]) => runKeysCommand(args, env);

  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const complete = async (key: string) => {
    const client = await connectHttp(gw!.mcpUrl, key);
    try {
      const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 5 } });
      await gw!.idle();
      return r;
    } finally {
      await client.close();
    }
  };
  const initialize = (key: string) =>
    fetch(gw!.mcpUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    }).then(async (res) => ({ status: res.status, body: await res.text() }));

  it('authenticates a key issued before the gateway starts, and one issued while it runs, across a restart; refuses a revoked one after 5 s', async () => {
    const issued = JSON.parse(await keys('issue', '--user', 'dana', '--teams', 'research', '--cost-center', 'cc-9', '--id', 'dana-ci', '--json')) as { key: string; sha256: string; id: string };
    expect(issued.key).toMatch(/^tg_[A-Za-z0-9_-]{32}$/);
    // Only the hash is on disk.
    const file = readFileSync(join(dir, 'keys.jsonl'), 'utf8');
    expect(file).toContain(issued.sha256);
    expect(file).not.toContain(issued.key);

    await start();
    expect((await complete(issued.key)).isError).toBeFalsy();
    expect(gw!.events.at(-1)).toMatchObject({ 'user.id': 'dana', 'user.teams': ['research'], 'user.cost_center': 'cc-9', 'auth.method': 'api_key' });

    // Issued while the gateway runs: accepted at once, without moving the clock.
    const text = await keys('issue', '--user', 'erin', '--id', 'erin-1');
    const erinKey = text.split('\n')[0]!;
    expect(text).toContain('# id erin-1 for erin; shown once');
    expect((await complete(erinKey)).isError).toBeFalsy();
    expect(gw!.events.at(-1)).toMatchObject({ 'user.id': 'erin' });

    // A new process on the same directory (the first one closed, releasing the journal).
    await gw!.close();
    gw = undefined;
    await start();
    expect((await complete(issued.key)).isError).toBeFalsy();
    expect((await complete(erinKey)).isError).toBeFalsy();

    expect(await keys('revoke', '--id', 'dana-ci')).toContain(`revoked dana-ci (dana) at `);
    // Looked up at this clock and kept for 5 s.
    expect((await initialize(issued.key)).status).toBe(200);
    clock += 4999;
    expect((await initialize(issued.key)).status).toBe(200);
    clock += 1;
    const refused = await initialize(issued.key);
    expect(refused.status).toBe(401);
    expect(refused.body).toContain('not recognised');
    expect((await initialize(erinKey)).status).toBe(200);

    // Still refused after another restart.
    await gw!.close();
    gw = undefined;
    await start();
    expect((await initialize(issued.key)).status).toBe(401);

    const listed = JSON.parse(await keys('list', '--json')) as { id: string; sha256: string; user: string; revokedAt?: string }[];
    expect(listed.map((k) => [k.id, k.user, k.revokedAt !== undefined])).toEqual([
      ['dana-ci', 'dana', true],
      ['erin-1', 'erin', false],
    ]);
    expect(listed[0]!.sha256).toBe(issued.sha256);
    expect(await keys('list')).toMatch(/^dana-ci\tdana\tteams=research\tcostCenter=cc-9\trevoked .+\nerin-1\terin\tteams=\tcostCenter=-\tactive\n$/);
  });

  it('refuses a second key under an id in use, revoked or not', async () => {
    await keys('issue', '--user', 'eve', '--id', 'eve-1');
    await expect(keys('issue', '--user', 'eve', '--id', 'eve-1')).rejects.toThrow('A key with id "eve-1" already exists');
    await keys('revoke', '--id', 'eve-1');
    await expect(keys('issue', '--user', 'eve', '--id', 'eve-1')).rejects.toThrow('A key with id "eve-1" already exists');
    await expect(keys('revoke', '--id', 'nobody')).rejects.toThrow('No issued key with id "nobody"');
  });

  it('takes --data-dir over TOLLGATE_DATA_DIR, and needs Redis or a data directory', async () => {
    const other = mkdtempSync(join(tmpdir(), 'tollgate-keys-other-'));
    try {
      await runKeysCommand(['issue', '--user', 'finn', '--id', 'finn-1', '--data-dir', other], env);
      expect(readFileSync(join(other, 'keys.jsonl'), 'utf8')).toContain('"finn-1"');
      expect(await keys('list')).not.toContain('finn-1');
      await expect(runKeysCommand(['list'], { TOLLGATE_DATA_DIR: 'none' })).rejects.toThrow('tollgate keys needs somewhere to keep keys');
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});
