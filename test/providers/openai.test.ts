import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { createOpenAIProvider, outputCapFields, type OpenAIConfig } from '../../src/providers/openai.js';
import { FRAMING, unreportedInputTokens } from '../../src/providers/estimate.js';
import type { CompletionRequest } from '../../src/providers/provider.js';
import { createProvider } from '../../src/providers/registry.js';
import { startFakeProxy } from '../../tools/fake-providers/http.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { providerContract } from './contract.js';

const KEY = 'sk-proj-test-0123456789';
const MODEL = 'gpt-4.1-mini';

// The whole file runs against both clients: the official SDK, and the direct path (openaiWire.ts).
for (const client of ['sdk', 'direct'] as const) {
describe(`OpenAI adapter, client ${client}`, () => {

function config(fake: FakeProviderServer, over: Partial<OpenAIConfig> = {}): OpenAIConfig {
  return { kind: 'openai', apiKey: KEY, baseUrl: fake.url, timeoutMs: 1500, maxRetries: 0, client, ...over };
}

providerContract({
  kind: 'openai',
  model: MODEL,
  startFake: () => startFakeOpenAI({ apiKey: KEY }),
  makeProvider: (fake, { timeoutMs }) => createOpenAIProvider('openai', config(fake, { timeoutMs })),
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

describe('OpenAI adapter specifics', () => {
  let fake: FakeProviderServer;
  beforeAll(async () => {
    fake = await startFakeOpenAI({ apiKey: KEY });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('sends the system prompt as a system message, with the model, cap and temperature', async () => {
    await createOpenAIProvider('openai', config(fake)).complete(request);
    expect(fake.requests[0]!.path).toBe('/v1/chat/completions');
    expect(fake.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(fake.requests[0]!.body).toEqual({
      model: MODEL,
      messages: [
        { role: 'system', content: 'Answer in French.' },
        { role: 'user', content: 'Name a colour' },
      ],
      // The fake is not api.openai.com, so the cap also goes in max_tokens for Ollama-style servers.
      max_completion_tokens: 50,
      max_tokens: 50,
      temperature: 0.7,
    });
  });

  it('is what the registry builds for kind openai, pointed at its baseUrl', () => {
    const provider = createProvider('gpt', config(fake));
    expect([provider.name, provider.kind, provider.baseUrl]).toEqual(['gpt', 'openai', fake.url]);
  });

  it('asks for usage in the stream and takes it from the last chunk', async () => {
    const result = await createOpenAIProvider('openai', config(fake)).stream(request, () => {});
    expect(fake.requests[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect(result.usage).toEqual({ inputTokens: 6, outputTokens: 7 });
    expect(result.stopReason).toBe('end_turn');
  });

  it('sends only max_completion_tokens to OpenAI itself and both fields elsewhere', () => {
    expect(outputCapFields('https://api.openai.com/v1', 64)).toEqual({ max_completion_tokens: 64 });
    expect(outputCapFields('https://corp.openai.azure.com/openai/v1', 64)).toEqual({ max_completion_tokens: 64 });
    expect(outputCapFields('http://127.0.0.1:11434/v1', 64)).toEqual({ max_completion_tokens: 64, max_tokens: 64 });
  });

  it('fake streams no usage chunk when include_usage is not asked for', async () => {
    const res = await fetch(`${fake.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, max_tokens: 2, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const events = (await res.text()).split('\n\n').filter((e) => e !== '');
    expect(events.at(-1)).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice('data: '.length)) as { choices: unknown[]; usage?: unknown });
    expect(chunks.map((c) => c.choices.length)).toEqual([1, 1, 1, 1]);
    expect(chunks.every((c) => !('usage' in c))).toBe(true);
  });

  it('reports a wrong key as PROVIDER_ERROR with status 401, without echoing the key', async () => {
    const wrong = 'sk-proj-wrong-key-987';
    const err = await failure(createOpenAIProvider('openai', config(fake, { apiKey: wrong })).complete(request));
    expect(err.code).toBe('PROVIDER_ERROR');
    expect(err.details.status).toBe(401);
    expect(err.details.upstreamType).toBe('invalid_request_error');
    expect(err.message).not.toContain(wrong);
  });

  it('maps 503 to PROVIDER_UNAVAILABLE', async () => {
    fake.failNext({ kind: 'status', status: 503 });
    const err = await failure(createOpenAIProvider('openai', config(fake)).complete(request));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details.status).toBe(503);
    expect(err.details.upstreamType).toBe('server_error');
  });

  it('retries a 503 when maxRetries allows it and serves the second answer', async () => {
    fake.failNext({ kind: 'status', status: 503 });
    const result = await createOpenAIProvider('openai', config(fake, { maxRetries: 1 })).complete(request);
    expect(result.usage).toEqual({ inputTokens: 6, outputTokens: 7 });
    expect(fake.requests).toHaveLength(2);
  });

  it('does not retry a 400 whatever maxRetries says', async () => {
    fake.failNext({ kind: 'status', status: 400 });
    const err = await failure(createOpenAIProvider('openai', config(fake, { maxRetries: 2 })).complete(request));
    expect(err.details.status).toBe(400);
    expect(fake.requests).toHaveLength(1);
  });

  it('charges a cut stream with the bound on the prompt and one token per UTF-8 byte received', async () => {
    fake.failNext({ kind: 'cut', afterWords: 2 });
    const err = await failure(createOpenAIProvider('openai', config(fake)).stream(request, () => {}));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details.upstreamType).toBe('connection_lost');
    // "Answer in French." is 17 bytes, "Name a colour" 13: 30 + 2 x 4 per message + 3. Output: the
    // two words that arrived, 12 bytes.
    expect(err.details.usage).toEqual({ inputTokens: 41, outputTokens: 12 });
  });

  it('charges an unreported prompt at what admission reserved, else at its UTF-8 bytes plus 4 per message and 3', () => {
    expect(unreportedInputTokens({ system: 'Answer in French.', messages: [{ role: 'user', content: 'Name a colour' }] }, FRAMING.openai)).toBe(41);
    expect(unreportedInputTokens({ messages: [{ role: 'user', content: '' }] }, FRAMING.openai)).toBe(7);
    expect(unreportedInputTokens({ messages: [{ role: 'user', content: 'Name a colour' }], inputTokens: 9 }, FRAMING.openai)).toBe(9);
  });

  it('says CANCELLED when the caller aborts midway, answered and with no usage of its own making (the pipeline charges the input bound and the text that went out)', async () => {
    const controller = new AbortController();
    const deltas: string[] = [];
    const err = await failure(
      createOpenAIProvider('openai', config(fake)).stream({ ...request, signal: controller.signal }, (d) => {
        deltas.push(d);
        if (deltas.length === 2) controller.abort();
      }),
    );
    expect(err.code).toBe('CANCELLED');
    // OpenAI reports usage only in the stream's last chunk: nothing reported, so nothing claimed.
    expect(err.details).toEqual({ provider: 'openai', answered: true });
    expect(deltas).toHaveLength(2);
  });
});

describe('OpenAI prompt-cache accounting', () => {
  let fake: FakeProviderServer;
  beforeAll(async () => {
    fake = await startFakeOpenAI({ apiKey: KEY, cachedTokens: 4 });
  });
  afterAll(() => fake.close());

  it('keeps cached tokens inside inputTokens and reports them as cachedInputTokens', async () => {
    const result = await createOpenAIProvider('openai', config(fake)).complete(request);
    expect(result.usage).toEqual({ inputTokens: 6, cachedInputTokens: 4, outputTokens: 7 });
  });

  it('does the same for a streamed call', async () => {
    const result = await createOpenAIProvider('openai', config(fake)).stream(request, () => {});
    expect(result.usage).toEqual({ inputTokens: 6, cachedInputTokens: 4, outputTokens: 7 });
  });
});

describe('OpenAI adapter behind a corporate proxy', () => {
  it('sends its calls through the proxy it was given', async () => {
    const fake = await startFakeOpenAI({ apiKey: KEY });
    const proxy = await startFakeProxy();
    try {
      const provider = createOpenAIProvider('openai', config(fake), { proxy: proxy.url });
      const result = await provider.complete(request);
      expect(result.text).toBe('fake openai reply to: Name a colour');
      expect(proxy.targets).toEqual([`127.0.0.1:${fake.port}`]);
      expect(fake.requests).toHaveLength(1);
    } finally {
      await proxy.close();
      await fake.close();
    }
  });
});

describe('OpenAI stream that stalls after the headers', () => {
  it('gives up after timeoutMs without a chunk, charges what arrived and closes the connection', async () => {
    let closed = false;
    // The fakes' faults cannot stall midway, so this one-off server sends one delta and goes quiet.
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = { id: 'c1', object: 'chat.completion.chunk', created: 1, model: MODEL, choices: [{ index: 0, delta: { content: 'Hel' }, finish_reason: null }] };
      res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      res.on('close', () => (closed = true));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
      const provider = createOpenAIProvider('openai', { kind: 'openai', apiKey: KEY, baseUrl: url, timeoutMs: 300, maxRetries: 0, client });
      const err = await failure(provider.stream(request, () => {}));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details.upstreamType).toBe('timeout');
      // 'Hel': 3 bytes.
      expect(err.details.usage).toEqual({ inputTokens: 41, outputTokens: 3 });
      await expect.poll(() => closed).toBe(true);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('OpenAI-compatible stream that reports no usage', () => {
  // Servers that ignore stream_options.include_usage (some OpenAI-compatible ones) finish without a
  // usage chunk, and one chunk may carry many tokens: the output is charged at its bound, one token
  // a UTF-8 byte up to max_tokens, as for a plain answer without usage, never at one a chunk.
  async function streamOnce(chunks: string[], maxTokens: number) {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const [i, content] of chunks.entries()) {
        const finish = i === chunks.length - 1 ? 'stop' : null;
        const chunk = { id: 'c1', object: 'chat.completion.chunk', created: 1, model: MODEL, choices: [{ index: 0, delta: { content }, finish_reason: finish }] };
        res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      }
      res.end('data: [DONE]\n\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
      const provider = createOpenAIProvider('openai', { kind: 'openai', apiKey: KEY, baseUrl: url, timeoutMs: 1500, maxRetries: 0, client });
      return await provider.stream({ ...request, maxTokens }, () => {});
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  }

  it('charges a long chunk at its bytes, not as one token', async () => {
    const result = await streamOnce(['x '.repeat(1000)], 5000);
    expect(result.usage).toEqual({ inputTokens: 41, outputTokens: 2000 });
  });

  it('charges at most max_tokens', async () => {
    const result = await streamOnce(['x '.repeat(1000), 'y'], 1000);
    expect(result.usage).toEqual({ inputTokens: 41, outputTokens: 1000 });
  });
});

describe('OpenAI error object in the middle of a stream', () => {
  it('fails over, keeping the upstream type and charging what arrived', async () => {
    // OpenAI can answer 200 and then send `data: {"error": ...}`; no fake fault produces that.
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = { id: 'c1', object: 'chat.completion.chunk', created: 1, model: MODEL, choices: [{ index: 0, delta: { content: 'Hel' }, finish_reason: null }] };
      res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      res.end(`data: ${JSON.stringify({ error: { message: 'The server had an error', type: 'server_error', param: null, code: null } })}\n\n`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
      const provider = createOpenAIProvider('openai', { kind: 'openai', apiKey: KEY, baseUrl: url, timeoutMs: 1500, maxRetries: 0, client });
      const err = await failure(provider.stream(request, () => {}));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details).toEqual({ provider: 'openai', upstreamType: 'server_error', usage: { inputTokens: 41, outputTokens: 3 } });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('OpenAI adapter egress allowlist', () => {
  let fake: FakeProviderServer;
  beforeAll(async () => {
    fake = await startFakeOpenAI({ apiKey: KEY });
  });
  afterAll(() => fake.close());
  beforeEach(() => fake.reset());

  it('refuses a host off the allowlist with EGRESS_DENIED and sends nothing', async () => {
    const provider = createOpenAIProvider('openai', config(fake), { egressAllow: ['api.example.com'] });
    for (const call of [() => provider.complete(request), () => provider.stream(request, () => {})]) {
      const err = await failure(call());
      expect(err.code).toBe('EGRESS_DENIED');
      expect(err.details).toEqual({ provider: 'openai', host: `127.0.0.1:${fake.port}` });
    }
    expect(fake.requests).toHaveLength(0);
  });

  it('serves when the host is allowed', async () => {
    const result = await createOpenAIProvider('openai', config(fake), { egressAllow: ['127.0.0.1'] }).complete(request);
    expect(result.usage.inputTokens).toBe(6);
    expect(fake.requests).toHaveLength(1);
  });
});
});
}
