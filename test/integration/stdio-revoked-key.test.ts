/**
 * A key issued with `tollgate keys` and revoked while a `tollgate stdio` session that started with
 * it runs: the session refuses it within the lookup cache time (5 s), as every replica serving
 * HTTP does, with AUTH_INVALID and a decision event. The verification made at start is kept for
 * the session only for what a revocation cannot end: a key the policy lists (until a reload) or a
 * token (until it expires).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, describe, expect, it } from 'vitest';
import { runKeysCommand } from '../../src/admin/keys.js';
import { basicPolicy, KEYS } from '../fixtures/policies.js';

describe('a stdio session whose issued key is revoked', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-stdio-revoked-'));
  const dataDir = join(dir, 'data');
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, basicPolicy());
  const keys = (...args: string[]) => runKeysCommand(args, { TOLLGATE_DATA_DIR: dataDir, TOLLGATE_POLICY: policyFile });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function session(apiKey: string, events: string): Promise<Client> {
    const client = new Client({ name: 'tollgate-test', version: '1.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policyFile, '--data-dir', dataDir, '--events', events],
        env: { PATH: process.env.PATH ?? '', TOLLGATE_API_KEY: apiKey, TOLLGATE_LOG_LEVEL: 'silent' },
        stderr: 'ignore',
      }),
    );
    return client;
  }
  const complete = (client: Client) => client.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 5 } }) as Promise<{ isError?: boolean; content: { text: string }[] }>;
  const decisions = (file: string) =>
    readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e.event === 'tollgate.decision')
      .map((e) => [e.transport, e.outcome, e['error.code'] ?? null, e['user.id'] ?? e['auth.credential.kind']]);

  it('refuses the key with AUTH_INVALID within 5 s of the revocation, and records the refusal', { timeout: 60_000 }, async () => {
    const key = (await keys('issue', '--user', 'dana', '--id', 'dana-stdio')).split('\n')[0]!;
    const events = join(dir, 'revoked.jsonl');
    const client = await session(key, events);
    try {
      expect((await complete(client)).isError).toBeFalsy();
      await keys('revoke', '--id', 'dana-stdio');
      await new Promise((r) => setTimeout(r, 5200));
      const refused = await complete(client);
      expect(refused.isError).toBe(true);
      expect(refused.content[0]!.text).toContain('AUTH_INVALID');
      expect(refused.content[0]!.text).toContain('TOLLGATE_API_KEY was rejected: The API key is not recognised (unknown, revoked or disabled).');
    } finally {
      await client.close();
    }
    expect(decisions(events)).toEqual([
      ['stdio', 'success', null, 'dana'],
      // Not identified: recorded as what it presented, as over HTTP.
      ['stdio', 'refused', 'AUTH_INVALID', 'api_key'],
    ]);
  });

  it('keeps serving a key the policy lists for the whole session', { timeout: 30_000 }, async () => {
    const events = join(dir, 'policy-key.jsonl');
    const client = await session(KEYS.alice, events);
    try {
      expect((await complete(client)).isError).toBeFalsy();
      expect((await complete(client)).isError).toBeFalsy();
    } finally {
      await client.close();
    }
    expect(decisions(events)).toEqual([
      ['stdio', 'success', null, 'alice'],
      ['stdio', 'success', null, 'alice'],
    ]);
  });
});
