/**
 * A stream cut short after text reached the caller is charged at least the bound of that text (one
 * token per UTF-8 byte, at most max_tokens), even when a usage figure came before it: only a
 * finished stream's figure is the provider's last word on its output. A look-alike server that sends
 * `usage: 1 in / 1 out` first, then words, then drops the connection, was charged 2 tokens for them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const fakes: Record<'openai' | 'bedrock', Pick<FakeProviderServer, 'failNext' | 'close' | 'url'>> = {} as never;
let gw: TestGateway;

beforeAll(async () => {
  [fakes.openai, fakes.bedrock] = await Promise.all([startFakeOpenAI(), startFakeBedrock()]);
  gw = await startTestGateway(`
version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${fakes.openai.url}", maxRetries: 0, timeoutMs: 30000 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${fakes.bedrock.url}", maxRetries: 0, timeoutMs: 30000 }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
  bedrock/anthropic.claude-sonnet-4-5-v1:0: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
tiers:
  openai: [openai/gpt-5-mini]
  bedrock: [bedrock/anthropic.claude-sonnet-4-5-v1:0]
defaultTier: openai
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 1000000 } }
`);
});
afterAll(async () => {
  await gw?.close();
  await Promise.all(Object.values(fakes).map((f) => f?.close()));
});

describe('a stream cut after its text, with a usage figure sent early', () => {
  for (const upstream of ['openai', 'bedrock'] as const) {
    it(`is charged at least the text that arrived, ${upstream}`, async () => {
      fakes[upstream].failNext({ kind: 'cut', afterWords: 6, earlyUsage: true });
      const before = gw.events.length;
      let text = '';
      const err = await gw.runtime.gateway
        .complete({
          principal: { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key' },
          transport: 'openai',
          request: { messages: [{ role: 'user', content: 'Summarise the incident report for the board today' }], tier: upstream, maxTokens: 500 },
          onText: (d) => (text += d),
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(Error);
      expect(Buffer.byteLength(text)).toBeGreaterThan(10);
      await gw.idle();
      const [event] = gw.events.slice(before);
      expect(event!['gen_ai.usage.output_tokens']).toBeGreaterThanOrEqual(Buffer.byteLength(text));
    });
  }
});
