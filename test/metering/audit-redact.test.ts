/**
 * What reaches the record (the decision event and the journal that keeps it) from text tollgate
 * does not write itself: a provider's error message that quotes the prompt or part of the
 * provider key, and a logged prompt holding a credential cut across two messages.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy, sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const PROVIDER_KEY = 'plain-provider-credential-0123456789abcdef';
/** An Anthropic key in its real shape, which the credential finder knows. */
const ANTHROPIC_KEY = `sk-ant-api03-${'A1b2C3d4E5'.repeat(9)}xyzAA`;
const PLAN = 'the merger with Initech closes on the ninth of March';

describe('the record of a call', () => {
  let gw: TestGateway | undefined;
  let dataDir: string | undefined;
  const servers: Server[] = [];
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    dataDir = undefined;
  });

  /** An OpenAI-compatible server that refuses every call with this status and error message, made from the request. */
  async function upstreamAnswering(status: number, message: (req: { key: string; prompt: string }) => string): Promise<string> {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const key = (req.headers.authorization ?? '').replace(/^Bearer /, '');
        const prompt = (JSON.parse(body) as { messages: { content: string }[] }).messages.map((m) => m.content).join(' ');
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: message({ key, prompt }), type: 'invalid_request_error', param: 'messages', code: null } }));
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  }

  async function gatewayBefore(url: string): Promise<TestGateway> {
    dataDir = await mkdtemp(join(tmpdir(), 'tollgate-audit-'));
    return startTestGateway(
      `
version: 1
providers:
  openai: { kind: openai, apiKey: ${PROVIDER_KEY}, baseUrl: "${url}" }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  standard: [openai/gpt-5-mini]
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform] }
`,
      { env: { TOLLGATE_DATA_DIR: dataDir } },
    );
  }

  const chat = (g: TestGateway, messages: { role: string; content: string }[]) =>
    fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'standard', messages }),
    });

  /** Every file of the journal directory, as text. */
  async function journalText(): Promise<string> {
    let text = '';
    for (const name of await readdir(dataDir!, { recursive: true })) {
      text += await readFile(join(dataDir!, name), 'utf8').catch(() => '');
    }
    return text;
  }

  it('leaves out of the record the prompt a provider error quotes, when prompts are not logged', async () => {
    const url = await upstreamAnswering(400, ({ prompt }) => `Invalid value for 'messages[0].content': '${prompt}' is not supported.`);
    gw = await gatewayBefore(url);
    const res = await chat(gw, [{ role: 'user', content: PLAN }]);
    expect(res.status).toBe(502);
    await gw.idle();
    const e = gw.events.at(-1)!;
    expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'PROVIDER_ERROR' });
    expect(e.reason).toBe("Provider openai failed (HTTP 400 invalid_request_error): Invalid value for 'messages[0].content': '[PROMPT]' is not supported.");
    expect(await journalText()).toContain('HTTP 400 invalid_request_error');
    expect(await journalText()).not.toContain('Initech');
  });

  it('leaves out of the caller\'s error and of the record a part of the provider key a provider error quotes', async () => {
    const url = await upstreamAnswering(401, ({ key }) => `Incorrect API key provided: ${key.slice(0, 30)}... You can find your API key at https://platform.openai.com.`);
    gw = await gatewayBefore(url);
    const res = await chat(gw, [{ role: 'user', content: 'hi' }]);
    expect(res.status).toBe(502);
    const answer = await res.text();
    expect(answer).toContain('Incorrect API key provided: [redacted]...');
    expect(answer).not.toContain(PROVIDER_KEY.slice(0, 16));
    await gw.idle();
    const e = gw.events.at(-1)!;
    expect(e.reason).toBe('Provider openai failed (HTTP 401 invalid_request_error): Incorrect API key provided: [redacted]... You can find your API key at https://platform.openai.com.');
    expect(await journalText()).toContain('Incorrect API key provided');
    expect(await journalText()).not.toContain(PROVIDER_KEY.slice(0, 16));
  });

  it('scrubs from a logged prompt a key cut across two messages, which the content rules see whole', async () => {
    const policy = basicPolicy({
      rules: `
  - id: no-anthropic-keys
    when: "'anthropic' in request.secrets"
    effect: deny
    message: The prompt holds an Anthropic key.`,
    }).replace('version: 1', 'version: 1\nmetering: { logPrompts: true }');
    gw = await startTestGateway(policy);
    const res = await chat(gw, [
      { role: 'user', content: `use ${ANTHROPIC_KEY.slice(0, 50)}` },
      { role: 'user', content: `${ANTHROPIC_KEY.slice(50)} for the deploy` },
    ]);
    expect(res.status).toBe(403);
    const e = gw.events.at(-1)!;
    expect(e).toMatchObject({ effect: 'deny', 'policy.rule_id': 'no-anthropic-keys' });
    const logged = JSON.stringify(e['gen_ai.prompt']);
    expect(logged).not.toContain(ANTHROPIC_KEY.slice(13, 50));
    expect(logged).not.toContain(ANTHROPIC_KEY.slice(50, 90));
    // Only the messages glued end to end show the key: the finder places it on the text around the
    // seam, which covers both of these short messages.
    expect(e['gen_ai.prompt']).toEqual({ messages: [{ role: 'user', content: '[REDACTED]' }, { role: 'user', content: '[REDACTED]' }] });
  });

  it('keeps the reason of a refusal short, however long the value it names', async () => {
    gw = await startTestGateway(basicPolicy());
    const type = 'x'.repeat(100_000);
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: [{ type, text: 'hi' }] }] }),
    });
    expect(res.status).toBe(400);
    await gw.idle();
    const e = gw.events.at(-1)!;
    expect(e['error.code']).toBe('INVALID_REQUEST');
    const named = 'Invalid request: messages.0.content.0.type: content parts of type "';
    expect(e.reason).toBe(`${named}${'x'.repeat(999 - named.length)}…`);
    expect(JSON.stringify(e).length).toBeLessThan(2_000);
  });
});
