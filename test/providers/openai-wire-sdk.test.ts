/**
 * The direct client (openaiWire.ts) held to the official SDK on the request side: the same calls
 * through an adapter on each client must reach the server as the same requests (method, path,
 * every header and its value, the body's text), retries included. The answer side is held by the
 * provider contract, which test/providers/openai.test.ts runs against both clients. An SDK upgrade
 * that changes what the SDK sends fails this file instead of leaving the direct client behind.
 */
import { describe, expect, it } from 'vitest';
import { createOpenAIProvider, type OpenAIConfig } from '../../src/providers/openai.js';
import type { CompletionRequest } from '../../src/providers/provider.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import { wireIdentity } from './wire-identity.js';

const KEY = 'sk-proj-test-0123456789';

const { fake, bothWays } = wireIdentity(() => startFakeOpenAI({ apiKey: KEY }));

function config(client: 'sdk' | 'direct', over: Partial<OpenAIConfig> = {}): OpenAIConfig {
  return { kind: 'openai', apiKey: KEY, baseUrl: fake().url, timeoutMs: 5000, maxRetries: 0, client, ...over };
}

const request: CompletionRequest = {
  model: 'gpt-4.1-mini',
  system: 'Réponds en français.',
  messages: [
    { role: 'user', content: 'Name a colour 🎨' },
    { role: 'assistant', content: 'Blue.' },
    { role: 'user', content: '', parts: ['And another', 'with "quotes" and \\ slashes'] },
  ],
  maxTokens: 64,
  temperature: 0.2,
};

describe('the direct OpenAI client sends what the SDK sends', () => {
  it('a plain call: the same method, path, headers and body', async () => {
    const { sdk, direct } = await bothWays((client) => createOpenAIProvider('openai', config(client)).complete(request));
    expect(sdk).toHaveLength(1);
    // The SDK's own headers, named so that a client that sends none fails here rather than passing on an empty match.
    expect(sdk[0]!.headers).toMatchObject({ 'user-agent': expect.stringMatching(/^OpenAI\/JS /), 'x-stainless-lang': 'js', 'x-stainless-retry-count': '0' });
    expect(direct).toEqual(sdk);
  });

  it('a streamed call', async () => {
    const { sdk, direct } = await bothWays((client) => createOpenAIProvider('openai', config(client)).stream(request, () => {}));
    expect(sdk).toHaveLength(1);
    expect(JSON.parse(sdk[0]!.text)).toMatchObject({ stream: true });
    expect(direct).toEqual(sdk);
  });

  it('with an organization', async () => {
    const { sdk, direct } = await bothWays((client) => createOpenAIProvider('openai', config(client, { organization: 'org-finance' })).complete(request));
    expect(sdk[0]!.headers['openai-organization']).toBe('org-finance');
    expect(direct).toEqual(sdk);
  });

  it('a retried call: each attempt as the SDK numbers it', async () => {
    const { sdk, direct } = await bothWays(async (client) => {
      fake().failNext({ kind: 'status', status: 503 });
      fake().failNext({ kind: 'status', status: 503 });
      await createOpenAIProvider('openai', config(client, { maxRetries: 2 })).complete(request);
    });
    expect(sdk.map((r) => r.headers['x-stainless-retry-count'])).toEqual(['0', '1', '2']);
    expect(direct).toEqual(sdk);
  });

  it('a base URL with a trailing slash', async () => {
    const { sdk, direct } = await bothWays((client) => createOpenAIProvider('openai', config(client, { baseUrl: `${fake().url}/` })).complete(request));
    expect(sdk[0]!.path).toBe('/v1/chat/completions');
    expect(direct).toEqual(sdk);
  });
});
