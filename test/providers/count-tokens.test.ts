/**
 * Counting a call's input before it is made, through each adapter and the official SDKs, against
 * the fake providers: Anthropic `POST /v1/messages/count_tokens` (messages.countTokens), Bedrock
 * `POST /model/{id}/count-tokens` (CountTokensCommand), OpenAI locally with the model's tokenizer.
 * Each count equals what the same fake then bills for the call's input (the OpenAI fake billing
 * whitespace words excepted: the real tokenizer counts more).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { createAnthropicProvider } from '../../src/providers/anthropic.js';
import { createBedrockProvider } from '../../src/providers/bedrock.js';
import { createOpenAIProvider } from '../../src/providers/openai.js';
import type { CompletionRequest, Provider } from '../../src/providers/provider.js';
import { createProvider } from '../../src/providers/registry.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import type { FakeBilling } from '../../tools/fake-providers/billing.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';

const hostile: Record<string, string> = {
  prose: 'The committee reviewed the quarterly figures and agreed to postpone the decision until the audit is complete. '.repeat(20),
  letters: 'a '.repeat(3000),
  digits: '3141592653589793238462643383279502884197'.repeat(50),
  cjk: '自然言語処理の研究は急速に進んでいる。'.repeat(60),
  emoji: '😀🎉👍🏽👨‍👩‍👧'.repeat(80),
};

function request(model: string, content: string): CompletionRequest {
  return { model, system: 'Be brief.', messages: [{ role: 'user', content }], maxTokens: 8 };
}

const common = { timeoutMs: 5000, maxRetries: 0 };

describe.each<FakeBilling>(['bpe', 'words'])('counting input tokens against fakes billing by %s', (billing) => {
  let anthropic: FakeProviderServer;
  let bedrock: FakeProviderServer;
  let openai: FakeProviderServer;
  let providers: { kind: string; model: string; provider: Provider; fake: () => FakeProviderServer }[];
  beforeAll(async () => {
    [anthropic, bedrock, openai] = await Promise.all([startFakeAnthropic({ billing }), startFakeBedrock({ billing }), startFakeOpenAI({ billing })]);
    providers = [
      { kind: 'anthropic', model: 'claude-sonnet-5-5', fake: () => anthropic, provider: createAnthropicProvider('a', { kind: 'anthropic', apiKey: 'sk-ant-test', baseUrl: anthropic.url, countTokens: true, ...common }) },
      {
        kind: 'bedrock',
        model: 'anthropic.claude-3-5-haiku-20241022-v1:0',
        fake: () => bedrock,
        provider: createBedrockProvider('b', { kind: 'bedrock', region: 'eu-west-1', accessKeyId: 'AKIDTEST', secretAccessKey: 'secret', baseUrl: bedrock.url, countTokens: true, ...common }),
      },
      { kind: 'openai', model: 'gpt-5-mini', fake: () => openai, provider: createOpenAIProvider('o', { kind: 'openai', apiKey: 'sk-test', baseUrl: openai.url, ...common }) },
    ];
  });
  afterAll(() => Promise.all([anthropic.close(), bedrock.close(), openai.close()]));

  for (const [shape, content] of Object.entries(hostile)) {
    it(`counts ${shape} exactly as the call is then billed, on each provider`, async () => {
      for (const { kind, model, provider } of providers) {
        const req = request(model, content);
        const counted = await provider.countTokens!(req);
        const billed = (await provider.complete(req)).usage.inputTokens;
        // The OpenAI count is local, with the real tokenizer: equal to a fake billing by it, and
        // above one billing whitespace words (every word is at least one token).
        if (kind === 'openai' && billing === 'words') expect(counted).toBeGreaterThanOrEqual(billed);
        else expect({ kind, counted }).toEqual({ kind, counted: billed });
      }
    });
  }

  it('sends the real wire shapes: the Messages input to count_tokens, the Converse input to count-tokens', async () => {
    anthropic.reset();
    bedrock.reset();
    await providers[0]!.provider.countTokens!(request('claude-sonnet-5-5', 'hi'));
    expect(anthropic.requests[0]).toMatchObject({ method: 'POST', path: '/v1/messages/count_tokens', body: { model: 'claude-sonnet-5-5', system: 'Be brief.', messages: [{ role: 'user', content: 'hi' }] } });
    expect(anthropic.requests[0]!.body).not.toHaveProperty('max_tokens');
    await providers[1]!.provider.countTokens!(request('anthropic.claude-3-5-haiku-20241022-v1:0', 'hi'));
    expect(bedrock.requests[0]).toMatchObject({
      method: 'POST',
      path: '/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens',
      body: { input: { converse: { system: [{ text: 'Be brief.' }], messages: [{ role: 'user', content: [{ text: 'hi' }] }] } } },
    });
  });
});

describe('when counting is not available', () => {
  let anthropic: FakeProviderServer;
  beforeAll(async () => {
    anthropic = await startFakeAnthropic({ billing: 'bpe' });
  });
  afterAll(() => anthropic.close());

  it('has no countTokens on Anthropic or Bedrock unless the policy enables it', () => {
    expect(createAnthropicProvider('a', { kind: 'anthropic', apiKey: 'k', baseUrl: anthropic.url, ...common }).countTokens).toBeUndefined();
    expect(createBedrockProvider('b', { kind: 'bedrock', region: 'eu-west-1', accessKeyId: 'A', secretAccessKey: 's', ...common }).countTokens).toBeUndefined();
  });

  it('answers undefined for a model whose tokenizer OpenAI does not name (an OpenAI-compatible server)', async () => {
    const p = createOpenAIProvider('o', { kind: 'openai', apiKey: 'k', baseUrl: 'http://127.0.0.1:9/v1', ...common });
    expect(await p.countTokens!(request('meta-llama/Llama-3.1-8B-Instruct', 'hi'))).toBeUndefined();
  });

  it('forwards countTokens through the lazily loaded adapter, and says undefined when the adapter has none', async () => {
    const enabled = createProvider('a', { kind: 'anthropic', apiKey: 'k', baseUrl: anthropic.url, countTokens: true, ...common });
    expect(await enabled.countTokens!(request('claude-x', 'hello there'))).toBeGreaterThan(0);
    const disabled = createProvider('a', { kind: 'anthropic', apiKey: 'k', baseUrl: anthropic.url, ...common });
    expect(await disabled.countTokens!(request('claude-x', 'hello there'))).toBeUndefined();
  });

  it('fails like a call when the counting endpoint fails', async () => {
    anthropic.failNext({ kind: 'status', status: 529 });
    const p = createAnthropicProvider('a', { kind: 'anthropic', apiKey: 'k', baseUrl: anthropic.url, countTokens: true, ...common });
    const err = await p.countTokens!(request('claude-x', 'hi')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('PROVIDER_UNAVAILABLE');
  });
});
