import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { createAnthropicProvider, type AnthropicConfig } from '../../src/providers/anthropic.js';
import type { CompletionRequest } from '../../src/providers/provider.js';
import { createProvider } from '../../src/providers/registry.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeProxy } from '../../tools/fake-providers/http.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { providerContract } from './contract.js';

const KEY = 'sk-ant-test-0123456789';
const MODEL = 'claude-sonnet-5-5';

// The whole file runs against both clients: the official SDK, and the direct path (anthropicWire.ts).
for (const client of ['sdk', 'direct'] as const) {
describe(`Anthropic adapter, client ${client}`, () => {

function config(fake: FakeProviderServer, over: Partial<AnthropicConfig> = {}): AnthropicConfig {
  return { kind: 'anthropic', apiKey: KEY, baseUrl: fake.url, timeoutMs: 1500, maxRetries: 0, client, ...over };
}

providerContract({
  kind: 'anthropic',
  model: MODEL,
  startFake: () => startFakeAnthropic({ apiKey: KEY }),
  makeProvider: (fake, { timeoutMs }) => createAnthropicProvider('anthropic', config(fake, { timeoutMs })),
});

async function failure(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return err as GatewayError;
}

const request: CompletionRequest = {
  model: MODEL,
  system: 'Answer in French.',
  messages: [{ role: 'user', content: 'Name a colour' }],
  maxTokens: 50,
  temperature: 0.7,
};

describe('Anthropic adapter specifics', () => {
  let fake: FakeProviderServer;
  beforeAll(async () => {
    fake = await startFakeAnthropic({ apiKey: KEY });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('sends the model, system prompt, messages and max_tokens, and leaves temperature out (API 2026-10-21 refuses it)', async () => {
    await createAnthropicProvider('anthropic', config(fake)).complete(request);
    expect(fake.requests[0]!.path).toBe('/v1/messages');
    expect(fake.requests[0]!.body).toEqual({
      model: MODEL,
      system: 'Answer in French.',
      messages: [{ role: 'user', content: 'Name a colour' }],
      max_tokens: 50,
    });
  });

  it('fake refuses sampling parameters on API version 2026-10-21 and accepts them on 2023-06-01', async () => {
    const send = (version: string): Promise<Response> =>
      fetch(`${fake.url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': KEY, 'anthropic-version': version, 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, max_tokens: 2, temperature: 0.2, messages: [{ role: 'user', content: 'hi' }] }),
      });
    const refused = await send('2026-10-21');
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({
      type: 'error',
      error: { type: 'invalid_request_error', message: 'temperature: Extra inputs are not permitted' },
      request_id: expect.stringMatching(/^req_/),
    });
    expect((await send('2023-06-01')).status).toBe(200);
  });

  it('is what the registry builds for kind anthropic, pointed at its baseUrl', () => {
    const provider = createProvider('claude', config(fake));
    expect([provider.name, provider.kind, provider.baseUrl]).toEqual(['claude', 'anthropic', fake.url]);
  });

  it('authenticates with a Bearer key and an anthropic-version header, as SDK 1.x does', async () => {
    await createAnthropicProvider('anthropic', config(fake)).complete(request);
    expect(fake.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(fake.requests[0]!.headers['anthropic-version']).toEqual(expect.any(String));
  });

  it('fake also accepts the x-api-key header that older SDKs and curl users send', async () => {
    const res = await fetch(`${fake.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, max_tokens: 2, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      id: expect.stringMatching(/^msg_/),
      type: 'message',
      role: 'assistant',
      model: MODEL,
      content: [{ type: 'text', text: 'fake anthropic' }],
      stop_reason: 'max_tokens',
      stop_sequence: null,
      usage: { input_tokens: 1, output_tokens: 2, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, service_tier: 'standard' },
    });
  });

  it('fake answers a request without any key with an authentication_error body', async () => {
    const res = await fetch(`${fake.url}/v1/messages`, { method: 'POST', headers: { 'anthropic-version': '2023-06-01' }, body: '{}' });
    expect(res.status).toBe(401);
    const body = (await res.json()) as { type: string; error: { type: string } };
    expect(body.type).toBe('error');
    expect(body.error.type).toBe('authentication_error');
  });

  it('reports a wrong key as PROVIDER_ERROR with status 401, without echoing the key', async () => {
    const wrong = 'sk-ant-wrong-key-987';
    const err = await failure(createAnthropicProvider('anthropic', config(fake, { apiKey: wrong })).complete(request));
    expect(err.code).toBe('PROVIDER_ERROR');
    expect(err.details.status).toBe(401);
    expect(err.details.upstreamType).toBe('authentication_error');
    expect(err.message).not.toContain(wrong);
  });

  it('maps 529 overloaded to PROVIDER_UNAVAILABLE', async () => {
    fake.failNext({ kind: 'status', status: 529 });
    const err = await failure(createAnthropicProvider('anthropic', config(fake)).complete(request));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details.status).toBe(529);
    expect(err.details.upstreamType).toBe('overloaded_error');
  });

  it('charges the cut stream with the input from message_start and the bound of the text received', async () => {
    fake.failNext({ kind: 'cut', afterWords: 2 });
    const deltas: string[] = [];
    const err = await failure(createAnthropicProvider('anthropic', config(fake)).stream(request, (d) => deltas.push(d)));
    expect(err.details.upstreamType).toBe('connection_lost');
    // One token per UTF-8 byte of the two words that arrived (message_delta never came).
    expect(err.details.usage).toEqual({ inputTokens: 6, outputTokens: Buffer.byteLength(deltas.join('')) });
    expect(Buffer.byteLength(deltas.join(''))).toBe(15);
  });

  it('says CANCELLED and charges what streamed when the caller aborts midway', async () => {
    const controller = new AbortController();
    const deltas: string[] = [];
    const err = await failure(
      createAnthropicProvider('anthropic', config(fake)).stream({ ...request, signal: controller.signal }, (d) => {
        deltas.push(d);
        if (deltas.length === 2) controller.abort();
      }),
    );
    expect(err.code).toBe('CANCELLED');
    expect(err.details.usage).toEqual({ inputTokens: 6, outputTokens: Buffer.byteLength(deltas.join('')) });
  });
});

describe('Anthropic prompt-cache accounting', () => {
  let fake: FakeProviderServer;
  beforeAll(async () => {
    fake = await startFakeAnthropic({ apiKey: KEY, cacheReadTokens: 4 });
  });
  afterAll(() => fake.close());

  it('counts cache reads inside inputTokens and reports them as cachedInputTokens', async () => {
    const result = await createAnthropicProvider('anthropic', config(fake)).complete(request);
    expect(result.usage).toEqual({ inputTokens: 6, cachedInputTokens: 4, outputTokens: 7 });
  });

  it('does the same for a streamed call', async () => {
    const result = await createAnthropicProvider('anthropic', config(fake)).stream(request, () => {});
    expect(result.usage).toEqual({ inputTokens: 6, cachedInputTokens: 4, outputTokens: 7 });
    expect(result.stopReason).toBe('end_turn');
  });
});

describe('Anthropic adapter behind a corporate proxy', () => {
  it('sends its calls through the proxy it was given', async () => {
    const fake = await startFakeAnthropic({ apiKey: KEY });
    const proxy = await startFakeProxy();
    try {
      const provider = createAnthropicProvider('anthropic', config(fake), { proxy: proxy.url });
      const result = await provider.complete(request);
      expect(result.text).toBe('fake anthropic reply to: Name a colour');
      expect(proxy.targets).toEqual([`127.0.0.1:${fake.port}`]);
      expect(fake.requests).toHaveLength(1);
    } finally {
      await proxy.close();
      await fake.close();
    }
  });
});

describe('Anthropic stream that stalls after the headers', () => {
  it('gives up after timeoutMs without an event, charges what arrived and closes the connection', async () => {
    let closed = false;
    // The fakes' faults cannot stall midway, so this one-off server sends two events and goes quiet.
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const start = { type: 'message', id: 'msg_1', role: 'assistant', model: MODEL, content: [], stop_reason: null, stop_sequence: null };
      res.write(`event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { ...start, usage: { input_tokens: 9, output_tokens: 1 } } })}\n\n`);
      res.write(`event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hel' } })}\n\n`);
      res.on('close', () => (closed = true));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const provider = createAnthropicProvider('anthropic', { kind: 'anthropic', apiKey: KEY, baseUrl: url, timeoutMs: 300, maxRetries: 0, client });
      const err = await failure(provider.stream(request, () => {}));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details.upstreamType).toBe('timeout');
      // 'Hel': 3 bytes, more than message_start's 1.
      expect(err.details.usage).toEqual({ inputTokens: 9, outputTokens: 3 });
      await expect.poll(() => closed).toBe(true);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('Anthropic-compatible stream whose message_delta has no usage', () => {
  it('serves the answer and charges the output at its bound, where a TypeError failed the call', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const start = { type: 'message', id: 'msg_1', role: 'assistant', model: MODEL, content: [], stop_reason: null, stop_sequence: null };
      const frame = (type: string, data: object) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
      frame('message_start', { message: { ...start, usage: { input_tokens: 9, output_tokens: 1 } } });
      frame('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
      frame('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Hello there' } });
      frame('content_block_stop', { index: 0 });
      frame('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null } });
      frame('message_stop', {});
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const provider = createAnthropicProvider('anthropic', { kind: 'anthropic', apiKey: KEY, baseUrl: url, timeoutMs: 1500, maxRetries: 0, client });
      const result = await provider.stream(request, () => {});
      expect(result.text).toBe('Hello there');
      // 'Hello there': 11 bytes, more than message_start's 1.
      expect(result.usage).toEqual({ inputTokens: 9, outputTokens: 11 });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('Anthropic error event in the middle of a stream', () => {
  it('fails over on overloaded_error as it would on a 529, charging what arrived', async () => {
    // Anthropic can answer 200 and then send `event: error`; no fake fault produces that.
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const start = { type: 'message', id: 'msg_1', role: 'assistant', model: MODEL, content: [], stop_reason: null, stop_sequence: null };
      res.write(`event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { ...start, usage: { input_tokens: 9, output_tokens: 1 } } })}\n\n`);
      res.end(`event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } })}\n\n`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const provider = createAnthropicProvider('anthropic', { kind: 'anthropic', apiKey: KEY, baseUrl: url, timeoutMs: 1500, maxRetries: 0, client });
      const err = await failure(provider.stream(request, () => {}));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details).toEqual({ provider: 'anthropic', status: 529, upstreamType: 'overloaded_error', usage: { inputTokens: 9, outputTokens: 1 } });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('Anthropic stream with \\r\\n line ends, pings and a lone \\r ending the body', () => {
  it('reads every event the SDK reads, the last one included', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const start = { type: 'message', id: 'msg_1', role: 'assistant', model: MODEL, content: [], stop_reason: null, stop_sequence: null };
      const frame = (event: string, data: unknown): string => `event: ${event}\r\ndata: ${JSON.stringify(data)}\r\n\r\n`;
      res.write(frame('message_start', { type: 'message_start', message: { ...start, usage: { input_tokens: 9, output_tokens: 1 } } }));
      res.write(`: a comment\r\n${frame('ping', { type: 'ping' })}`);
      res.write(frame('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Bleu' } }));
      res.write(frame('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } }));
      // The last event's blank line is a lone \r, the body's last byte.
      res.end(`event: message_stop\r\ndata: {"type":"message_stop"}\r\n\r`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const provider = createAnthropicProvider('anthropic', { kind: 'anthropic', apiKey: KEY, baseUrl: url, timeoutMs: 1500, maxRetries: 0, client });
      const deltas: string[] = [];
      const result = await provider.stream(request, (d) => deltas.push(d));
      expect(deltas).toEqual(['Bleu']);
      expect(result).toEqual({ text: 'Bleu', model: MODEL, usage: { inputTokens: 9, outputTokens: 3 }, stopReason: 'end_turn' });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('Anthropic adapter egress allowlist', () => {
  let fake: FakeProviderServer;
  beforeAll(async () => {
    fake = await startFakeAnthropic({ apiKey: KEY });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('refuses a host off the allowlist with EGRESS_DENIED and sends nothing', async () => {
    const provider = createAnthropicProvider('anthropic', config(fake), { egressAllow: ['api.example.com'] });
    for (const call of [() => provider.complete(request), () => provider.stream(request, () => {})]) {
      const err = await failure(call());
      expect(err.code).toBe('EGRESS_DENIED');
      expect(err.details).toEqual({ provider: 'anthropic', host: `127.0.0.1:${fake.port}` });
    }
    expect(fake.requests).toHaveLength(0);
  });

  it('serves when the host is allowed', async () => {
    const result = await createAnthropicProvider('anthropic', config(fake), { egressAllow: ['127.0.0.1'] }).complete(request);
    expect(result.usage.inputTokens).toBe(6);
    expect(fake.requests).toHaveLength(1);
  });

  it('does not follow a redirect, which would leave without the allowlist seeing where', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(307, { location: `${fake.url}/v1/messages` });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const err = await failure(createAnthropicProvider('anthropic', config(fake, { baseUrl: url })).complete(request));
      expect(err.code).toBe('PROVIDER_ERROR');
      expect(err.details.status).toBe(307);
      expect(fake.requests).toHaveLength(0);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
});
}
