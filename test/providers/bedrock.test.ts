import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer, get as httpsGet } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { createBedrockProvider, proxyAgents, type BedrockConfig } from '../../src/providers/bedrock.js';
import { FRAMING, unreportedInputTokens } from '../../src/providers/estimate.js';
import type { CompletionRequest } from '../../src/providers/provider.js';
import { startFakeBedrock, type FakeBedrockServer } from '../../tools/fake-providers/bedrock.js';
import { promptTokens, replyWords } from '../../tools/fake-providers/types.js';
import { providerContract } from './contract.js';

const MODEL = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const SECRET = 'test-secret-key-never-shown';

function bedrockConfig(fake: { url: string }, over: Partial<BedrockConfig> = {}): BedrockConfig {
  return {
    kind: 'bedrock',
    region: 'eu-west-1',
    accessKeyId: 'AKIDTESTTOLLGATE',
    secretAccessKey: SECRET,
    baseUrl: fake.url,
    timeoutMs: 1500,
    maxRetries: 0,
    ...over,
  };
}

providerContract({
  kind: 'bedrock',
  model: MODEL,
  startFake: () => startFakeBedrock(),
  makeProvider: (fake, { timeoutMs }) => createBedrockProvider('bedrock-eu', bedrockConfig(fake, { timeoutMs })),
});

async function rejection(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return err as GatewayError;
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const request = (over: Partial<CompletionRequest> = {}): CompletionRequest => ({
  model: MODEL,
  system: 'You are terse.',
  messages: [
    { role: 'user', content: 'Hello there' },
    { role: 'assistant', content: 'Hi.' },
    { role: 'user', content: 'Name three rivers' },
  ],
  maxTokens: 50,
  temperature: 0.5,
  ...over,
});

describe('Bedrock adapter specifics', () => {
  let fake: FakeBedrockServer;

  beforeAll(async () => {
    fake = await startFakeBedrock();
  });
  afterAll(async () => {
    await fake.close();
  });
  beforeEach(() => fake.reset());

  const provider = () => createBedrockProvider('bedrock-eu', bedrockConfig(fake));

  it('sends a signed Converse request with the model id percent-encoded in the path', async () => {
    await provider().complete(request());
    const seen = fake.requests[0]!;
    expect(seen.method).toBe('POST');
    expect(seen.path).toBe('/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse');
    expect(seen.body).toEqual({
      system: [{ text: 'You are terse.' }],
      messages: [
        { role: 'user', content: [{ text: 'Hello there' }] },
        { role: 'assistant', content: [{ text: 'Hi.' }] },
        { role: 'user', content: [{ text: 'Name three rivers' }] },
      ],
      inferenceConfig: { maxTokens: 50, temperature: 0.5 },
    });
    const auth = String(seen.headers.authorization);
    expect(auth.startsWith('AWS4-HMAC-SHA256 Credential=AKIDTESTTOLLGATE/')).toBe(true);
    expect(auth).toContain('/eu-west-1/bedrock/aws4_request');
    expect(auth).not.toContain(SECRET);
  });

  it('streams from the converse-stream path and reports the model that was asked for', async () => {
    const deltas: string[] = [];
    const result = await provider().stream(request(), (d) => deltas.push(d));
    expect(fake.requests[0]!.path).toBe('/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream');
    expect(deltas).toEqual(replyWords('bedrock', 'Name three rivers', 50));
    expect(result).toEqual({
      text: 'fake bedrock reply to: Name three rivers',
      model: MODEL,
      usage: { inputTokens: promptTokens('You are terse.', request().messages), outputTokens: 7 },
      stopReason: 'end_turn',
    });
  });

  it('omits the system blocks and temperature when the request has none', async () => {
    await provider().complete(request({ system: undefined, temperature: undefined }));
    const body = fake.requests[0]!.body as Record<string, unknown>;
    expect(body.system).toBeUndefined();
    expect(body.inferenceConfig).toEqual({ maxTokens: 50 });
  });

  it('counts prompt-cache reads and writes as input, since Bedrock leaves them out of inputTokens', async () => {
    fake.setPromptCache({ readTokens: 4, writeTokens: 2 });
    const total = promptTokens('You are terse.', request().messages);
    const result = await provider().complete(request());
    expect(result.usage).toEqual({ inputTokens: total, outputTokens: 7, cachedInputTokens: 4 });
    const streamed = await provider().stream(request(), () => {});
    expect(streamed.usage).toEqual({ inputTokens: total, outputTokens: 7, cachedInputTokens: 4 });
  });

  it('maps ThrottlingException to PROVIDER_UNAVAILABLE with status 429', async () => {
    fake.failNext({ kind: 'status', status: 429 });
    const err = await rejection(provider().complete(request()));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details).toEqual({ provider: 'bedrock-eu', status: 429, upstreamType: 'ThrottlingException' });
    expect(err.message).toBe('Provider bedrock-eu failed (HTTP 429 ThrottlingException): Injected failure 429.');
  });

  it('maps ValidationException to PROVIDER_ERROR with status 400', async () => {
    fake.failNext({ kind: 'status', status: 400 });
    const err = await rejection(provider().complete(request()));
    expect(err.code).toBe('PROVIDER_ERROR');
    expect(err.details).toEqual({ provider: 'bedrock-eu', status: 400, upstreamType: 'ValidationException' });
  });

  it('maps AccessDeniedException to PROVIDER_ERROR with status 403', async () => {
    fake.failNext({ kind: 'status', status: 403 });
    const err = await rejection(provider().complete(request()));
    expect(err.code).toBe('PROVIDER_ERROR');
    expect(err.details).toEqual({ provider: 'bedrock-eu', status: 403, upstreamType: 'AccessDeniedException' });
  });

  it('maps ServiceUnavailableException on a stream to PROVIDER_UNAVAILABLE, charging nothing', async () => {
    fake.failNext({ kind: 'status', status: 503 });
    const err = await rejection(provider().stream(request(), () => {}));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details).toEqual({ provider: 'bedrock-eu', status: 503, upstreamType: 'ServiceUnavailableException' });
  });

  it('charges the bound of the text received when an exception event arrives mid-stream', async () => {
    fake.failNextStreamWith({ type: 'throttlingException', message: 'Too many tokens, slow down.', afterWords: 2 });
    const deltas: string[] = [];
    const err = await rejection(provider().stream(request(), (d) => deltas.push(d)));
    expect(deltas).toEqual(['fake ', 'bedrock ']);
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details).toEqual({
      provider: 'bedrock-eu',
      status: 429,
      upstreamType: 'ThrottlingException',
      // One token per UTF-8 byte of 'fake bedrock ' (Bedrock reports usage only at the end).
      usage: { inputTokens: unreportedInputTokens(request(), FRAMING.bedrock), outputTokens: 13 },
    });
    expect(err.message).toBe('Provider bedrock-eu failed (HTTP 429 ThrottlingException): Too many tokens, slow down.');
  });

  it('treats a model stream error mid-stream as a cut stream, so the pipeline fails over', async () => {
    fake.failNextStreamWith({ type: 'modelStreamErrorException', message: 'The model stopped.', afterWords: 1 });
    const err = await rejection(provider().stream(request(), () => {}));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details.upstreamType).toBe('ModelStreamErrorException');
    expect(err.details.status).toBeUndefined();
    expect(err.message).toBe('Provider bedrock-eu failed (ModelStreamErrorException): The model stopped.');
    expect(err.details.usage).toEqual({ inputTokens: unreportedInputTokens(request(), FRAMING.bedrock), outputTokens: 'fake '.length });
  });

  it('closes the upstream stream when the caller cancels midway, saying it had answered (Bedrock reports usage only at the end; the pipeline charges the input bound and the text that went out)', async () => {
    fake.setWordDelay(50);
    const controller = new AbortController();
    const deltas: string[] = [];
    const pending = provider().stream(request({ signal: controller.signal }), (d) => {
      deltas.push(d);
      if (deltas.length === 2) controller.abort();
    });
    const err = await rejection(pending);
    expect(err.code).toBe('CANCELLED');
    expect(err.details).toEqual({ provider: 'bedrock-eu', answered: true });
    expect(deltas).toEqual(['fake ', 'bedrock ']);
    await until(() => fake.requests[0]!.aborted);
    expect(fake.requests[0]!.completed).toBe(false);
  });

  it("passes a failing text listener's error through unchanged and closes the upstream stream", async () => {
    fake.setWordDelay(20);
    const boom = new Error('listener failed');
    const err = await provider()
      .stream(request(), () => {
        throw boom;
      })
      .catch((e: unknown) => e);
    expect(err).toBe(boom);
    await until(() => fake.requests[0]!.aborted);
  });

  it('times out a stream that goes silent after it opened, charging the input', async () => {
    fake.setWordDelay(1000);
    const quick = createBedrockProvider('bedrock-eu', bedrockConfig(fake, { timeoutMs: 300 }));
    const err = await rejection(quick.stream(request(), () => {}));
    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(err.details).toEqual({
      provider: 'bedrock-eu',
      upstreamType: 'timeout',
      usage: { inputTokens: unreportedInputTokens(request(), FRAMING.bedrock), outputTokens: 0 },
    });
    await until(() => fake.requests[0]!.aborted);
  });

  it('passes on no more text once the caller cancels; a stream Bedrock had already finished is served with the usage it reported', async () => {
    const controller = new AbortController();
    const deltas: string[] = [];
    // No word delay: the whole answer, metadata included, has arrived before the first delta is handled.
    const result = await provider().stream(request({ signal: controller.signal }), (d) => {
      deltas.push(d);
      controller.abort();
    });
    expect(deltas).toEqual(['fake ']);
    expect(result.stopReason).toBe('end_turn');
    expect(result.usage.outputTokens).toBe(replyWords('bedrock', 'Name three rivers', 50).length);
  });

  it('charges the input of a failed stream at what admission reserved, else at the bound (UTF-8 bytes plus 8 per message and 16)', () => {
    // 'You are terse.' 14 bytes, 'Hello there' 11, 'Hi.' 3, 'Name three rivers' 17: 45 + 4 x 8 + 16.
    expect(unreportedInputTokens(request(), FRAMING.bedrock)).toBe(93);
    expect(unreportedInputTokens(request({ inputTokens: 21 }), FRAMING.bedrock)).toBe(21);
  });

  it('answers the same for a model id with several colons', async () => {
    const model = 'arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku:0';
    const result = await provider().complete(request({ model }));
    expect(fake.requests[0]!.path).toBe(`/model/${encodeURIComponent(model)}/converse`);
    expect(result.model).toBe(model);
    expect(result.text).toBe('fake bedrock reply to: Name three rivers');
  });

  it('answers 403 to a request without a SigV4 signature', async () => {
    const res = await fetch(`${fake.url}/model/m/converse`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'hi' }] }] }),
    });
    expect(res.status).toBe(403);
    expect(res.headers.get('x-amzn-errortype')).toBe('AccessDeniedException:http://internal.amazon.com/coral/com.amazon.bedrock/');
    expect(await res.json()).toEqual({ message: 'Missing or invalid SigV4 Authorization header.' });
  });

  it('gets a ValidationException back for a request Bedrock would refuse (maxTokens 0)', async () => {
    const err = await rejection(provider().complete(request({ maxTokens: 0 })));
    expect(err.code).toBe('PROVIDER_ERROR');
    expect(err.details).toEqual({ provider: 'bedrock-eu', status: 400, upstreamType: 'ValidationException' });
  });

  it('sends the session token of temporary credentials', async () => {
    await createBedrockProvider('b', bedrockConfig(fake, { sessionToken: 'session-token-1' })).complete(request());
    expect(fake.requests[0]!.headers['x-amz-security-token']).toBe('session-token-1');
  });

  it('signs with the default AWS credential chain when the policy gives no keys', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'AKIDFROMENVIRONMENT';
    process.env.AWS_SECRET_ACCESS_KEY = 'environment-secret';
    try {
      const fromChain = createBedrockProvider('b', bedrockConfig(fake, { accessKeyId: undefined, secretAccessKey: undefined }));
      await fromChain.complete(request());
      expect(String(fake.requests[0]!.headers.authorization)).toContain('Credential=AKIDFROMENVIRONMENT/');
    } finally {
      for (const [key, value] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret]] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });

  it("names the endpoint it calls: the policy baseUrl, else the region's public Bedrock runtime", () => {
    expect(provider().baseUrl).toBe(fake.url);
    expect(createBedrockProvider('b', bedrockConfig(fake, { baseUrl: undefined })).baseUrl).toBe('https://bedrock-runtime.eu-west-1.amazonaws.com');
  });

  it('requires the access key and secret together', () => {
    expect(() => createBedrockProvider('b', bedrockConfig(fake, { secretAccessKey: undefined }))).toThrow(
      'Provider "b": accessKeyId and secretAccessKey must be given together.',
    );
  });

  it('retries a throttled call itself when maxRetries allows it', async () => {
    fake.failNext({ kind: 'status', status: 429 });
    const result = await createBedrockProvider('b', bedrockConfig(fake, { maxRetries: 1 })).complete(request());
    expect(result.text).toBe('fake bedrock reply to: Name three rivers');
    expect(fake.requests).toHaveLength(2);
  });
});

/** A minimal HTTPS_PROXY: answers CONNECT by piping to the target, records what it was asked. */
async function startConnectProxy(refuse = false): Promise<{ url: string; connects: { target: string; auth?: string }[]; close: () => Promise<void> }> {
  const connects: { target: string; auth?: string }[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    connects.push({ target: req.url ?? '', auth: req.headers['proxy-authorization'] });
    if (refuse) return void client.end('HTTP/1.1 407 Proxy Authentication Required\r\n\r\n');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host === 'localhost' ? '127.0.0.1' : host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://proxyuser:${encodeURIComponent('p@ss word')}@127.0.0.1:${(server.address() as AddressInfo).port}`,
    connects,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

describe('Bedrock adapter through a corporate proxy', () => {
  let fake: FakeBedrockServer;
  beforeAll(async () => {
    fake = await startFakeBedrock();
  });
  afterAll(async () => {
    await fake.close();
  });

  it('tunnels calls and streams through the proxy with CONNECT, with the proxy credentials', async () => {
    const proxy = await startConnectProxy();
    try {
      const provider = createBedrockProvider('b', bedrockConfig(fake), { proxy: proxy.url });
      const result = await provider.complete(request());
      const streamed = await provider.stream(request(), () => {});
      expect(result.text).toBe('fake bedrock reply to: Name three rivers');
      expect(streamed.text).toBe('fake bedrock reply to: Name three rivers');
      expect(proxy.connects[0]).toEqual({
        target: `127.0.0.1:${fake.port}`,
        auth: `Basic ${Buffer.from('proxyuser:p@ss word').toString('base64')}`,
      });
    } finally {
      await proxy.close();
    }
  });

  it('reports a proxy that refuses the tunnel as PROVIDER_UNAVAILABLE without its password', async () => {
    const proxy = await startConnectProxy(true);
    try {
      const provider = createBedrockProvider('b', bedrockConfig(fake), { proxy: proxy.url });
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.message).toContain('HTTP 407');
      expect(err.message).not.toContain('p@ss');
      expect(err.message).not.toContain('proxyuser');
    } finally {
      await proxy.close();
    }
  });

  let hasOpenssl = true;
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    hasOpenssl = false;
  }

  it.skipIf(!hasOpenssl)('runs TLS end to end inside the tunnel, checking the certificate of the real host', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-tls-'));
    const proxy = await startConnectProxy();
    let server: ReturnType<typeof createHttpsServer> | undefined;
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      const cert = readFileSync(join(dir, 'cert.pem'));
      server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert }, (req, res) => res.end(`tls ok ${req.url}`));
      await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
      const port = (server.address() as AddressInfo).port;
      const { httpsAgent } = proxyAgents(proxy.url);
      const body = await new Promise<string>((resolve, reject) => {
        httpsGet({ host: 'localhost', port, path: '/model/x/converse', agent: httpsAgent, ca: cert }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(text));
        }).on('error', reject);
      });
      httpsAgent.destroy();
      expect(body).toBe('tls ok /model/x/converse');
      expect(proxy.connects.map((c) => c.target)).toEqual([`localhost:${port}`]);
    } finally {
      server?.closeAllConnections();
      await new Promise((r) => (server ? server.close(r) : r(undefined)));
      await proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('accepts only an http:// proxy URL', () => {
    expect(() => proxyAgents('socks5://127.0.0.1:1080')).toThrow('The proxy must be an http:// URL (CONNECT tunnel); got socks5://127.0.0.1:1080.');
  });
});
