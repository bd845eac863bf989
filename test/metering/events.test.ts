/**
 * Decision events as an auditor reads them: one per call, every field exact, and no secret in any
 * of them (provider keys echoed in an upstream error, credentials in a refused prompt, log fields).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterEach, describe, expect, it } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { createLogger, policySecrets, scrubSecrets } from '../../src/metering/redact.js';
import { parsePolicy } from '../../src/policy/load.js';
import { KEYS, basicPolicy, sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const NOW = Date.parse('2026-11-25T10:00:00.000Z');

describe('decision events', () => {
  let gw: TestGateway | undefined;
  const clients: Client[] = [];
  const servers: Server[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    await gw?.close();
    gw = undefined;
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  });
  const connect = async (key: string) => {
    const c = await connectHttp(gw!.mcpUrl, key);
    clients.push(c);
    return c;
  };

  it('describes an allowed call with principal, models, reserved and actual tokens, cost and latency', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    const alice = await connect(KEYS.alice);
    const r = await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    const { requestId } = r.structuredContent as { requestId: string };
    expect(gw.events).toHaveLength(1);
    expect(JSON.parse(JSON.stringify(gw.events[0]))).toEqual({
      event: 'tollgate.decision',
      'request.id': requestId,
      time: '2026-11-25T10:00:00.000Z',
      transport: 'http',
      effect: 'allow',
      outcome: 'success',
      'policy.version': gw.runtime.gateway.policy.version,
      reason: 'within policy and budget',
      'user.id': 'alice',
      'user.teams': ['platform'],
      'user.cost_center': 'cc-1',
      'user.groups': ['employees'],
      'auth.method': 'api_key',
      'auth.credential.id': 'k-alice',
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'demo',
      'gen_ai.response.model': 'medium',
      'gen_ai.request.max_tokens': 100,
      'gen_ai.usage.input_tokens': 2,
      'gen_ai.usage.output_tokens': 4,
      'tollgate.tier.requested': 'standard',
      'tollgate.tier.served': 'standard',
      'tollgate.model.served': 'demo/medium',
      'tollgate.reserved': [{ budget: 'user-weekly', subject: 'alice', amount: 129 }],
      'tollgate.charged': [{ budget: 'user-weekly', subject: 'alice', amount: 6, unit: 'tokens' }],
      'tollgate.estimated_input_tokens': 29,
      'tollgate.reserved_tokens': { input: 29, output: 100 },
      'tollgate.settled_by': 'call',
      'tollgate.cost_usd': 0.000066,
      'tollgate.attempts': [{ model: 'demo/medium', provider: 'demo', ok: true, ms: 0 }],
      'tollgate.latency_ms': 0,
      'tollgate.upstream_ms': 0,
    });
  });

  it('names the budget that stepped a call down a tier and the model that served it', async () => {
    gw = await startTestGateway(basicPolicy({ userTokens: 1000 }), { now: () => NOW });
    const g = gw.runtime.gateway;
    const lines = applicableLines(g.policy.budgets, keyPrincipal(g, KEYS.alice), NOW, 'tollgate:');
    await g.store.settle('seed', lines.map((l) => ({ ...l.line, amount: 900 })));
    const alice = await connect(KEYS.alice);
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 10, model: 'demo/medium' } });
    expect(gw.events.at(-1)).toMatchObject({
      effect: 'tier_down',
      outcome: 'success',
      'policy.budget_id': 'user-weekly',
      'gen_ai.request.model': 'demo/medium',
      'tollgate.provider.requested': 'demo',
      'gen_ai.provider.name': 'demo',
      'gen_ai.response.model': 'small',
      'tollgate.tier.requested': 'standard',
      'tollgate.tier.served': 'economy',
      'tollgate.model.served': 'demo/small',
      'tollgate.reserved_tokens': { input: 26, output: 10 },
      'tollgate.charged': [{ budget: 'user-weekly', subject: 'alice', amount: 5, unit: 'tokens' }],
    });
  });

  it('records a policy denial with the rule id, nothing reserved and nothing served', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    const bob = await connect(KEYS.bob);
    await bob.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'premium' } });
    const e = gw.events.at(-1)!;
    expect(e).toMatchObject({
      effect: 'deny',
      outcome: 'refused',
      'error.code': 'POLICY_DENIED',
      'policy.rule_id': 'contractors-no-premium',
      reason: 'Contractors may use standard and economy models only.',
      'user.id': 'bob',
      'user.groups': ['contractors'],
      'tollgate.tier.requested': 'premium',
      'gen_ai.usage.input_tokens': 0,
      'gen_ai.usage.output_tokens': 0,
      'tollgate.cost_usd': 0,
      'tollgate.attempts': [],
    });
    for (const field of ['tollgate.tier.served', 'tollgate.model.served', 'tollgate.reserved', 'tollgate.reserved_tokens', 'tollgate.charged', 'gen_ai.provider.name']) {
      expect(e[field as keyof typeof e]).toBeUndefined();
    }
  });

  it('records a call that fails before any decision as an error with its code', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    const alice = await connect(KEYS.alice);
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hi', model: 'demo/nope' } });
    expect(gw.events.at(-1)).toMatchObject({ effect: 'error', outcome: 'failed', 'error.code': 'UNKNOWN_MODEL', 'gen_ai.request.model': 'demo/nope' });
  });

  it('keeps a DLP-refused AWS key out of the event, even with logPrompts on', async () => {
    const policy = basicPolicy({
      rules: `
  - id: no-aws-keys
    when: "request.text.matches('AKIA[0-9A-Z]{16}')"
    effect: deny
    message: The prompt contains an AWS access key id.`,
    }).replace('version: 1', 'version: 1\nmetering: { logPrompts: true }');
    gw = await startTestGateway(policy, { now: () => NOW });
    const carol = await connect(KEYS.carol);
    await carol.callTool({ name: 'complete', arguments: { prompt: 'deploy with AKIAABCDEFGHIJKLMNOP and Bearer abcdefghijklmnop1234 please' } });
    const e = gw.events.at(-1)!;
    expect(e).toMatchObject({ effect: 'deny', 'policy.rule_id': 'no-aws-keys', reason: 'The prompt contains an AWS access key id.' });
    expect(e['gen_ai.prompt']).toEqual({ messages: [{ role: 'user', content: 'deploy with [REDACTED] and Bearer [REDACTED] please' }] });
    expect(JSON.stringify(e)).not.toContain('AKIAABCDEFGHIJKLMNOP');
    expect(JSON.stringify(e)).not.toContain('abcdefghijklmnop1234');
  });

  it('leaves prompts and completions out unless logPrompts is on', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    const alice = await connect(KEYS.alice);
    await alice.callTool({ name: 'complete', arguments: { prompt: 'the secret plan' } });
    const text = JSON.stringify(gw.events.at(-1));
    expect(text).not.toContain('secret plan');
    expect(gw.events.at(-1)).not.toHaveProperty('gen_ai.prompt');
    expect(gw.events.at(-1)).not.toHaveProperty('gen_ai.completion');
  });

  it('scrubs the provider key out of an upstream error message that echoes it', async () => {
    // An OpenAI-compatible server that answers 401 and quotes the key it was sent, as some do.
    const upstream = createServer((req, res) => {
      const key = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${key}. Also tried sk-proj-Zz9Yy8Xx7Ww6Vv5Uu4.`, type: 'invalid_request_error', code: 'invalid_api_key' } }));
    });
    servers.push(upstream);
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
    gw = await startTestGateway(
      `
version: 1
providers:
  openai: { kind: openai, apiKey: plain-provider-credential-42, baseUrl: "${url}" }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  standard: [openai/gpt-5-mini]
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform] }
`,
      { now: () => NOW },
    );
    const alice = await connect(KEYS.alice);
    const r = await alice.callTool({ name: 'complete', arguments: { prompt: 'hi' } });
    expect(r.isError).toBe(true);
    const e = gw.events.at(-1)!;
    expect(e).toMatchObject({ effect: 'allow', outcome: 'failed', 'error.code': 'PROVIDER_ERROR' });
    // The adapter masks its own key ([redacted]); the event's scrub catches the other one.
    expect(e.reason).toBe('Provider openai failed (HTTP 401 invalid_request_error): Incorrect API key provided: [redacted]. Also tried [REDACTED].');
    expect(JSON.stringify(e)).not.toContain('plain-provider-credential-42');
  });

  it('censors credential fields and scrubs error messages in the gateway log', async () => {
    const lines: string[] = [];
    const dest = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = createLogger('info', dest);
    log.info({ req: { headers: { authorization: 'Bearer tg-live-0123456789', host: 'x' } }, provider: { apiKey: 'sk-abc' } }, 'request');
    log.error({ err: new Error('upstream said: bad key sk-ant-api03-abcdefghijklmnop') }, 'failed with token=hunter2hunter2');
    const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, any>);
    expect(first!.req.headers).toEqual({ authorization: '[REDACTED]', host: 'x' });
    expect(first!.provider).toEqual({ apiKey: '[REDACTED]' });
    expect(second!.err.message).toBe('upstream said: bad key [REDACTED]');
    expect(second!.msg).toBe('failed with token=[REDACTED]');
    expect(lines.join('')).not.toMatch(/tg-live|sk-ant-api03|hunter2/);
  });

  it('recognises common credential shapes in free text', () => {
    const samples = [
      'Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl',
      'key AKIAZ3MBRXQ7LPDE4KTY',
      'token ghp_abcdefghijklmnopqrstuvwxyz0123456789',
      'Splunk 11111111-2222-3333-4444-555555555555',
      'password=correct-horse',
      'api_key: "abcd1234efgh"',
    ];
    expect(samples.map((s) => scrubSecrets(s))).toEqual([
      'Authorization: Bearer [REDACTED]',
      'key [REDACTED]',
      'token [REDACTED]',
      'Splunk [REDACTED]',
      'password=[REDACTED]',
      'api_key: "[REDACTED]"',
    ]);
    const policy = parsePolicy(
      `
version: 1
providers:
  openai: { kind: openai, apiKey: plain-provider-credential-42 }
egress: { allow: [api.openai.com] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  standard: [openai/gpt-5-mini]
`,
      'p.yaml',
    );
    expect(scrubSecrets('echo plain-provider-credential-42!', policySecrets(policy))).toBe('echo [REDACTED]!');
    expect(scrubSecrets('Budget user-weekly has 120 tokens left; max_tokens lowered to 20')).toBe('Budget user-weekly has 120 tokens left; max_tokens lowered to 20');
    const withHooks = parsePolicy(
      `
version: 1
providers:
  demo: { kind: demo }
egress: { allow: [hooks.slack.com] }
tiers:
  standard: [demo/medium]
alerts:
  webhooks:
    - { id: chan, url: "https://hooks.slack.com/services/T0/B0/plain-hook-secret-7", format: slack, headers: { authorization: "Bearer plain-header-secret-9" } }
`,
      'p.yaml',
    );
    expect(scrubSecrets('posted to https://hooks.slack.com/services/T0/B0/plain-hook-secret-7 with Bearer plain-header-secret-9', policySecrets(withHooks))).toBe('posted to [REDACTED] with [REDACTED]');
    // AWS's documentation example key is no secret: secretlint's AWS rule lets it through.
    expect(scrubSecrets('the docs use AKIAIOSFODNN7EXAMPLE')).toBe('the docs use AKIAIOSFODNN7EXAMPLE');
    // Short texts' results are kept per list of known secrets: the same text scrubbed under
    // another list is scrubbed for that list, and a kept result is the same as a fresh one.
    const echo = 'echo plain-provider-credential-42!';
    expect(scrubSecrets(echo)).toBe(echo);
    expect(scrubSecrets(echo, policySecrets(policy))).toBe('echo [REDACTED]!');
    expect(scrubSecrets(echo, ['plain-provider-credential-42'])).toBe('echo [REDACTED]!');
    expect(scrubSecrets(echo)).toBe(echo);
    for (let round = 0; round < 2; round++) {
      // More texts than are kept (1,000), twice over: each answer is still the text's own.
      for (let i = 0; i < 1_200; i++) {
        expect(scrubSecrets(`call ${i} with AKIAZ3MBRXQ7LPDE4KT${i % 10}`, policySecrets(policy))).toBe(`call ${i} with [REDACTED]`);
        expect(scrubSecrets(`call ${i} with plain-provider-credential-42`, policySecrets(policy))).toBe(`call ${i} with [REDACTED]`);
      }
    }
    // A long text is scrubbed afresh (not kept) with the same result.
    const long = `${'x'.repeat(600)} AKIAZ3MBRXQ7LPDE4KTY`;
    expect(scrubSecrets(long)).toBe(`${'x'.repeat(600)} [REDACTED]`);
    expect(scrubSecrets(long)).toBe(`${'x'.repeat(600)} [REDACTED]`);
  });

  it('scrubs credentials that only show once the text is normalised or decoded', () => {
    expect(scrubSecrets('key AKIA\u200BZ3MBRXQ7LPDE4KTY ok')).toBe('key [REDACTED] ok');
    expect(scrubSecrets('key ＡＫＩＡＺ３ＭＢＲＸＱ７ＬＰＤＥ４ＫＴＹ ok')).toBe('key [REDACTED] ok');
    expect(scrubSecrets('key A K I A Z 3 M B R X Q 7 L P D E 4 K T Y ok')).toBe('key [REDACTED] ok');
    expect(scrubSecrets('key akiaz3mbrxq7lpde4kty ok')).toBe('key [REDACTED] ok');
    expect(scrubSecrets(`key ${Buffer.from('AKIAZ3MBRXQ7LPDE4KTY').toString('base64')} ok`)).toBe('key [REDACTED] ok');
    expect(scrubSecrets('key 414b49415a334d42525851374c504445344b5459 ok')).toBe('key [REDACTED] ok');
    expect(scrubSecrets('----BEGIN RSA PRIVATE KEY----\nMIIEowIBAAKCAQEA\n----END RSA PRIVATE KEY----\nthanks')).toBe('[REDACTED]\nthanks');
  });
});
