/**
 * A policy key may not take an id a key issued with `tollgate keys` holds: the two would share the
 * id in decision events (`auth.credential.id`), in listings and in every `scope: key` rate-limit
 * line (`key:<id>`), though they are different keys of different users. `keys issue` refuses an id
 * the policy has; a policy that brings an issued id is refused at start (exit 2) and on a reload
 * (the policy serving stays, and the log says why). Gateways in their own processes, keys in
 * their data directory.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runKeysCommand } from '../../src/admin/keys.js';
import { sha } from '../fixtures/policies.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';

const policy = (extraKey = '') => `
version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
apiKeys:
  - { id: k-admin, sha256: ${sha('admin-key-1234567')}, user: admin }
${extraKey}
rateLimits:
  - { id: per-key-rpm, scope: key, requestsPerMinute: 5 }
`;
const BOB_AS_CI = `  - { id: ci, sha256: ${sha('bob-key-1234567')}, user: bob }`;

describe('a policy key under an id an issued key holds', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-key-ids-'));
  let gw: GatewayProcess | undefined;
  afterAll(async () => {
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const issue = (name: string, policyFile: string, ...args: string[]) =>
    runKeysCommand(['issue', ...args], { TOLLGATE_DATA_DIR: join(dir, `${name}.jsonl.data`), TOLLGATE_POLICY: policyFile });

  it('refuses to start, exit 2, naming the id and where the policy has it', { timeout: 60_000 }, async () => {
    const policyFile = join(dir, 'start.yaml');
    writeFileSync(policyFile, policy());
    await issue('start', policyFile, '--user', 'dana', '--id', 'ci');
    writeFileSync(policyFile, policy(BOB_AS_CI));
    const started = spawnGateway({ policyFile, eventsFile: join(dir, 'start.jsonl'), startTimeoutMs: 60_000 });
    // One that serves is stopped, not left behind.
    started.then((g) => g.stop(), () => undefined);
    await expect(started).rejects.toThrow(
      `gateway exited with 2:\ntollgate: refusing to serve the policy ${policyFile}: apiKeys[1].id: API key id "ci" is held by a key issued with tollgate keys (tollgate keys list); give the policy's key another id\n`,
    );
  });

  it('refuses a reload that brings it, keeps the policy serving, and says why', { timeout: 60_000 }, async () => {
    const policyFile = join(dir, 'reload.yaml');
    writeFileSync(policyFile, policy());
    gw = await spawnGateway({ policyFile, eventsFile: join(dir, 'reload.jsonl'), startTimeoutMs: 60_000 });
    const dana = (await issue('reload', policyFile, '--user', 'dana', '--id', 'ci')).split('\n')[0]!;

    writeFileSync(policyFile, policy(BOB_AS_CI));
    for (let i = 0; i < 200 && !gw.stderr().includes('policy_reload_failed'); i++) await new Promise((r) => setTimeout(r, 50));
    const refused = gw
      .stderr()
      .split('\n')
      .filter((l) => l.includes('policy_reload_failed'))
      .map((l) => JSON.parse(l) as { issues: unknown });
    expect(refused.map((l) => l.issues)).toEqual([[{ path: 'apiKeys[1].id', message: `API key id "ci" is held by a key issued with tollgate keys (tollgate keys list); give the policy's key another id` }]]);

    const chat = async (key: string) =>
      (
        await fetch(gw!.mcpUrl.replace(/\/mcp$/, '/v1/chat/completions'), {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body: JSON.stringify({ model: 'standard', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
        })
      ).status;
    expect(await chat('bob-key-1234567')).toBe(401);
    expect(await chat(dana)).toBe(200);
    const events = await gw.eventsWhen(2);
    expect(events.map((e) => [e['error.code'] ?? null, e['user.id'] ?? null, e['auth.credential.id'] ?? null])).toEqual([
      ['AUTH_INVALID', null, null],
      [null, 'dana', 'ci'],
    ]);
  });
});
