/**
 * API keys issued at run time into the shared store: every replica accepts one as soon as it is
 * issued, and refuses it within the lookup cache time (5 s) once revoked. The replicas run on a
 * clock the test moves, so the cache time passes without waiting for it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

describe('API keys issued into the shared store', () => {
  let redis: TestRedis;
  const prefix = uniquePrefix('keys');
  let a: TestGateway;
  let b: TestGateway;
  // Both replicas read this clock; it stands still unless the test moves it.
  let clock = Date.now();
  const now = () => clock;

  // tollgate keys checks the store holds this policy's budgets: it reads the gateways' policy.
  const policyFile = join(mkdtempSync(join(tmpdir(), 'tollgate-keys-policy-')), 'policy.yaml');
  writeFileSync(policyFile, basicPolicy());

  beforeAll(async () => {
    redis = await startRedis();
    const env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix };
    [a, b] = await Promise.all([startTestGateway(basicPolicy(), { env, now }), startTestGateway(basicPolicy(), { env, now })]);
  });
  afterAll(async () => {
    await a.close();
    await b.close();
    await deleteKeys(redis.url, prefix);
    await redis.stop();
  });

  // Asynchronous on purpose: a spawnSync would stall this process's event loop, and with it the
  // in-process gateways' Redis connections, for as long as the CLI runs.
  const cli = (...args: string[]) =>
    new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', 'src/cli.ts', 'keys', ...args],
        { env: { PATH: process.env.PATH ?? '', REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_POLICY: policyFile }, encoding: 'utf8' },
        (err, stdout, stderr) => resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });

  it('is accepted by every replica once issued, charged to its principal, and refused after revocation', { timeout: 120_000 }, async () => {
    const issued = await cli('issue', '--user', 'dana', '--teams', 'research', '--cost-center', 'cc-9', '--id', 'dana-ci', '--json');
    expect(issued.status).toBe(0);
    const { key, sha256, id } = JSON.parse(issued.stdout) as { key: string; sha256: string; id: string };
    expect(key).toMatch(/^tg_[A-Za-z0-9_-]{32}$/);
    expect(id).toBe('dana-ci');
    expect(issued.stdout).not.toContain('"revokedAt"');

    for (const gw of [a, b]) {
      const c = await connectHttp(gw.mcpUrl, key);
      const r = await c.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 5 } });
      expect(r.isError).toBeFalsy();
      // The answer does not wait for the Redis ledger write; the event follows it.
      await gw.idle();
      expect(gw.events.at(-1)).toMatchObject({ 'user.id': 'dana', 'user.teams': ['research'], 'user.cost_center': 'cc-9', 'auth.method': 'api_key' });
      await c.close();
    }

    const listed = JSON.parse((await cli('list', '--json')).stdout) as { id: string; sha256: string; user: string }[];
    expect(listed.map((k) => [k.id, k.sha256, k.user])).toEqual([['dana-ci', sha256, 'dana']]);
    expect(JSON.stringify(listed)).not.toContain(key);

    const initialize = (gw: TestGateway) =>
      fetch(gw.mcpUrl, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
      });
    expect((await cli('revoke', '--id', 'dana-ci')).status).toBe(0);
    // Each replica looked the key up at the current clock and keeps that answer for 5 s.
    for (const gw of [a, b]) {
      const res = await initialize(gw);
      expect(res.status).toBe(200);
      await res.text();
    }
    clock += 5000;
    for (const gw of [a, b]) {
      const res = await initialize(gw);
      expect(res.status).toBe(401);
      expect(await res.text()).toContain('not recognised');
    }
  });

  it('refuses to issue a second key under an id in use', { timeout: 60_000 }, async () => {
    expect((await cli('issue', '--user', 'eve', '--id', 'eve-1')).status).toBe(0);
    const again = await cli('issue', '--user', 'eve', '--id', 'eve-1');
    // A value the command cannot take: nothing was done (exit 2).
    expect(again.status).toBe(2);
    expect(again.stderr).toContain('INVALID_REQUEST: A key with id "eve-1" already exists');
  });
});
