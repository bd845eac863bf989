/**
 * OIDC callers while the shared store holding issued API keys (Redis) does not answer: a token
 * cannot be an issued key (those are `tg_` and 32 base64url characters, never a JWT), so it is
 * verified against its issuer without waiting on the key store, and a `failMode: open` budget lets
 * its caller through, recorded as the user the token names. A gateway in its own process against a
 * private redis-server frozen with SIGSTOP (a hung host).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha } from '../fixtures/policies.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';
import { deleteKeys, startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';

const AUD = 'https://ai.example.test/mcp';

describe('OIDC callers while Redis hangs', () => {
  let redis: PrivateRedis;
  let idp: TestIssuer;
  let gw: GatewayProcess;
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-jwt-outage-'));
  const prefix = uniquePrefix('jwt-outage');

  beforeAll(async () => {
    redis = await startPrivateRedis();
    idp = await startTestIssuer();
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(
      policyFile,
      `
version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
apiKeys:
  - { id: k-alice, sha256: ${sha('key-alice')}, user: alice }
identity:
  resource: ${AUD}
  oidc: [ { issuer: ${idp.issuer}, jwksUri: ${idp.jwksUri}, claims: { user: preferred_username } } ]
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 }, failMode: open }
`,
    );
    gw = await spawnGateway({
      policyFile,
      eventsFile: join(dir, 'events.jsonl'),
      env: { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_STORE_TIMEOUT_MS: '1000' },
      startTimeoutMs: 60_000,
    });
  }, 90_000);

  afterAll(async () => {
    redis.thaw();
    await gw?.stop();
    await idp.close();
    await deleteKeys(redis.url, prefix);
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const chat = async (credential: string) => {
    const res = await fetch(gw.mcpUrl.replace(/\/mcp$/, '/v1/chat/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${credential}` },
      body: JSON.stringify({ model: 'standard', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    return { status: res.status, code: body.error?.code };
  };

  it('serves a token under a failMode: open budget, charged to the user it names, and refuses an unknown key as unknown', { timeout: 90_000 }, async () => {
    const token = await idp.sign({ aud: AUD, preferred_username: 'carol' });
    // The issuer's keys are fetched while everything answers.
    expect(await chat(token)).toEqual({ status: 200, code: undefined });
    await gw.eventsWhen(1);

    redis.freeze();
    // A token the gateway has not seen (a lookup of the one above would be answered from the cache).
    const fresh = await idp.sign({ aud: AUD, preferred_username: 'carol', jti: 'during-the-outage' });
    expect(await chat(fresh)).toEqual({ status: 200, code: undefined });
    // A key that is not in the policy and is not shaped as an issued key is unknown, whatever the store.
    expect(await chat('key-nobody-at-all')).toEqual({ status: 401, code: 'AUTH_INVALID' });
    redis.thaw();
    // What the outage left queued is written with the next call's.
    expect(await chat('key-alice')).toEqual({ status: 200, code: undefined });

    const events = await gw.eventsWhen(4, 30_000);
    // The outage's events are written once Redis answers again, after the call that came later.
    const recorded = events.map((e) => [e.outcome, e['error.code'] ?? null, e['user.id'] ?? e['auth.credential.kind'], e['auth.method'] ?? null]);
    expect(recorded.sort()).toEqual([
      ['refused', 'AUTH_INVALID', 'api_key', null],
      ['success', null, 'alice', 'api_key'],
      ['success', null, 'carol', 'jwt'],
      ['success', null, 'carol', 'jwt'],
    ]);
  });
});
