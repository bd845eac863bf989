/**
 * A policy reload keeps the signing keys fetched from an issuer whose key-fetching settings it does
 * not change (issuer, jwksUri, jwksCacheSeconds, jwksCooldownSeconds): while the identity provider
 * is down, an unrelated policy edit does not lock out every OIDC caller whose token the cached keys
 * verify. A gateway in its own process, reloading on a change of its policy file.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestIssuer } from '../helpers/jwks.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';

const AUD = 'https://ai.example.test/mcp';

describe('a policy reload while the identity provider is down', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-reload-jwks-'));
  let gw: GatewayProcess | undefined;
  afterAll(async () => {
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const chat = async (token: string) => {
    const res = await fetch(gw!.mcpUrl.replace(/\/mcp$/, '/v1/chat/completions'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ model: 'standard', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const body = (await res.json()) as { error?: { message?: string } };
    return { status: res.status, message: body.error?.message };
  };
  const reloads = () => gw!.stderr().match(/"msg":"policy reloaded"/g)?.length ?? 0;
  async function edit(policyFile: string, from: string, to: string): Promise<void> {
    const before = reloads();
    writeFileSync(policyFile, readFileSync(policyFile, 'utf8').replace(from, to));
    for (let i = 0; i < 200 && reloads() === before; i++) await new Promise((r) => setTimeout(r, 50));
    expect(reloads()).toBe(before + 1);
  }

  it('keeps verifying tokens with the keys fetched before the reload, until the policy changes how they are fetched', { timeout: 90_000 }, async () => {
    const idp = await startTestIssuer();
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(
      policyFile,
      `
version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
identity:
  resource: ${AUD}
  oidc: [ { issuer: ${idp.issuer}, jwksUri: ${idp.jwksUri}, claims: { user: preferred_username }, jwksCacheSeconds: 600, jwksCooldownSeconds: 60 } ]
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
`,
    );
    gw = await spawnGateway({ policyFile, eventsFile: join(dir, 'events.jsonl'), env: { TOLLGATE_LOG_LEVEL: 'info' }, startTimeoutMs: 60_000 });
    const token = await idp.sign({ aud: AUD, preferred_username: 'carol' });
    expect(await chat(token)).toEqual({ status: 200, message: undefined });
    await idp.close();
    expect(await chat(token)).toEqual({ status: 200, message: undefined });

    // An unrelated edit: the budget's limit.
    await edit(policyFile, 'tokens: 100000', 'tokens: 200000');
    expect(await chat(token)).toEqual({ status: 200, message: undefined });

    // An edit of how the issuer's keys are fetched starts afresh, and the issuer is down.
    await edit(policyFile, 'jwksCooldownSeconds: 60', 'jwksCooldownSeconds: 61');
    expect(await chat(token)).toEqual({ status: 401, message: `AUTH_INVALID: The token cannot be checked now: the keys of ${idp.issuer} could not be fetched.` });
  });
});
