/**
 * The direct Anthropic client (anthropicWire.ts) held to the official SDK on the request side: the
 * same calls through an adapter on each client must reach the server as the same requests (method,
 * path with its query, every header and its value, the body's text), retries included. The answer
 * side is held by the provider contract and the adapter's tests, which test/providers/anthropic.test.ts
 * runs against both clients. An SDK upgrade that changes what the SDK sends fails this file instead
 * of leaving the direct client behind.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createAnthropicProvider, type AnthropicConfig } from '../../src/providers/anthropic.js';
import type { CompletionRequest } from '../../src/providers/provider.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { wireIdentity } from './wire-identity.js';

const KEY = 'sk-ant-test-0123456789';

const { fake, bothWays } = wireIdentity(() => startFakeAnthropic({ apiKey: KEY }));
afterEach(() => {
  delete process.env.ANTHROPIC_CUSTOM_HEADERS;
});

function config(client: 'sdk' | 'direct', over: Partial<AnthropicConfig> = {}): AnthropicConfig {
  return { kind: 'anthropic', apiKey: KEY, baseUrl: fake().url, timeoutMs: 5000, maxRetries: 0, client, ...over };
}

const request: CompletionRequest = {
  model: 'claude-sonnet-5-5',
  system: 'Réponds en français.',
  messages: [
    { role: 'user', content: 'Name a colour 🎨' },
    { role: 'assistant', content: 'Blue.' },
    { role: 'user', content: '', parts: ['And another', 'with "quotes" and \\ slashes'] },
  ],
  maxTokens: 64,
};

describe('the direct Anthropic client sends what the SDK sends', () => {
  it('a plain call: the same method, path, headers and body', async () => {
    const { sdk, direct } = await bothWays((client) => createAnthropicProvider('anthropic', config(client)).complete(request));
    expect(sdk).toHaveLength(1);
    // The SDK's own headers, named so that a client that sends none fails here rather than passing on an empty match.
    expect(sdk[0]!.headers).toMatchObject({
      authorization: `Bearer ${KEY}`,
      'anthropic-version': expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/),
      'user-agent': expect.stringMatching(/^Anthropic\/JS /),
      'x-stainless-lang': 'js',
      'x-stainless-retry-count': '0',
      'x-stainless-timeout': '5',
      'content-length': String(Buffer.byteLength(sdk[0]!.text)),
    });
    expect(direct).toEqual(sdk);
  });

  it('a streamed call', async () => {
    const { sdk, direct } = await bothWays((client) => createAnthropicProvider('anthropic', config(client)).stream(request, () => {}));
    expect(sdk).toHaveLength(1);
    expect(JSON.parse(sdk[0]!.text)).toMatchObject({ stream: true });
    expect(direct).toEqual(sdk);
  });

  it('a retried call: each attempt as the SDK numbers it', async () => {
    const { sdk, direct } = await bothWays(async (client) => {
      fake().failNext({ kind: 'status', status: 529 });
      fake().failNext({ kind: 'status', status: 529 });
      await createAnthropicProvider('anthropic', config(client, { maxRetries: 2 })).complete(request);
    });
    expect(sdk.map((r) => r.headers['x-stainless-retry-count'])).toEqual(['0', '1', '2']);
    expect(direct).toEqual(sdk);
  }, 15_000);

  it('a base URL with a trailing slash', async () => {
    const { sdk, direct } = await bothWays((client) => createAnthropicProvider('anthropic', config(client, { baseUrl: `${fake().url}/` })).complete(request));
    expect(sdk[0]!.path).toBe('/v1/messages');
    expect(direct).toEqual(sdk);
  });

  it('headers the SDK reads from ANTHROPIC_CUSTOM_HEADERS', async () => {
    process.env.ANTHROPIC_CUSTOM_HEADERS = 'x-team: finance\nx-cost-centre: cc-7';
    const { sdk, direct } = await bothWays((client) => createAnthropicProvider('anthropic', config(client)).complete(request));
    expect(sdk[0]!.headers).toMatchObject({ 'x-team': 'finance', 'x-cost-centre': 'cc-7' });
    expect(direct).toEqual(sdk);
  });
});
