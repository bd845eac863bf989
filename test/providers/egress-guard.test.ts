/**
 * Every network adapter refuses, before any byte leaves, a request to a host that is not on the
 * policy's egress allowlist; and serves normally when the host is on it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { createProvider } from '../../src/providers/registry.js';
import type { Provider } from '../../src/providers/provider.js';
import type { ProviderConfig } from '../../src/policy/schema.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';

const request = { model: 'm-1', messages: [{ role: 'user' as const, content: 'hello' }], maxTokens: 5 };

function cases(): { kind: string; start: () => Promise<FakeProviderServer>; config: (url: string) => ProviderConfig; model: string }[] {
  return [
    {
      kind: 'anthropic',
      start: () => startFakeAnthropic(),
      config: (url) => ({ kind: 'anthropic', apiKey: 'sk-test', baseUrl: url, timeoutMs: 2000, maxRetries: 0 }),
      model: 'claude-sonnet-4-5',
    },
    {
      kind: 'openai',
      start: () => startFakeOpenAI(),
      config: (url) => ({ kind: 'openai', apiKey: 'sk-test', baseUrl: url, timeoutMs: 2000, maxRetries: 0 }),
      model: 'gpt-5-mini',
    },
    {
      kind: 'bedrock',
      start: () => startFakeBedrock(),
      config: (url) => ({ kind: 'bedrock', region: 'us-east-1', accessKeyId: 'AKIDTEST', secretAccessKey: 's', baseUrl: url, timeoutMs: 2000, maxRetries: 0 }),
      model: 'anthropic.claude-sonnet-4-5-v1:0',
    },
  ];
}

for (const c of cases()) {
  describe(`${c.kind} adapter egress guard`, () => {
    let fake: FakeProviderServer;
    beforeAll(async () => {
      fake = await c.start();
    });
    afterAll(async () => {
      await fake.close();
    });

    const build = (allow: string[]): Provider => createProvider(c.kind, c.config(fake.url), { egressAllow: allow });

    it('refuses a host off the allowlist with EGRESS_DENIED and sends nothing', async () => {
      fake.reset();
      const provider = build(['api.example.com']);
      for (const call of [() => provider.complete({ ...request, model: c.model }), () => provider.stream({ ...request, model: c.model }, () => {})]) {
        const err = await call().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(GatewayError);
        expect((err as GatewayError).code).toBe('EGRESS_DENIED');
        expect((err as GatewayError).details).toEqual({ provider: c.kind, host: new URL(fake.url).host });
      }
      expect(fake.requests).toHaveLength(0);
    });

    it('serves when the host is allowed', async () => {
      fake.reset();
      const result = await build(['127.0.0.1']).complete({ ...request, model: c.model });
      expect(result.usage.inputTokens).toBe(1);
      expect(fake.requests).toHaveLength(1);
    });
  });
}
