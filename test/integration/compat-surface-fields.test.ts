/**
 * The request fields of each compatible API that tollgate does not pass on to the provider. A
 * field whose value would change the answer or what it costs is refused with 400 naming it, before
 * anything reaches the provider; the same field at the value that changes nothing (the API's
 * default) is taken, and the provider gets what it would have without it. The official openai and
 * @anthropic-ai/sdk clients against tollgate, tollgate against the fake OpenAI and Anthropic servers.
 */
import Anthropic, { APIError as AnthropicError } from '@anthropic-ai/sdk';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { fakeProvidersYaml, sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-surface-fields';

async function failure<E>(p: Promise<unknown>, type: abstract new (...args: never[]) => E): Promise<E> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(type);
  return err as E;
}

const HELLO = [{ role: 'user' as const, content: 'Hello there' }];

describe('request fields tollgate does not pass on', () => {
  let anthropic: FakeProviderServer;
  let openai: FakeProviderServer;
  let bedrock: FakeProviderServer;
  let gw: TestGateway;
  let oa: OpenAI;
  let an: Anthropic;

  beforeAll(async () => {
    [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeBedrock()]);
    gw = await startTestGateway(`
version: 1
${fakeProvidersYaml({ anthropic: anthropic.url, openai: openai.url, bedrock: bedrock.url })}
tiers:
  claude: [anthropic/claude-sonnet-4-5]
  gpt: [openai/gpt-5-mini]
  bedrock: [bedrock/anthropic.claude-sonnet-4-5-v1:0]
defaultTier: gpt
apiKeys:
  - { id: surface, sha256: ${sha(KEY)}, user: erin }
`);
    oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
    an = new Anthropic({ baseURL: gw.url, apiKey: KEY, maxRetries: 0 });
  });
  afterAll(async () => {
    await gw.close();
    await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  });
  beforeEach(() => {
    for (const f of [anthropic, openai, bedrock]) f.reset();
  });

  describe('POST /v1/chat/completions', () => {
    const CHANGING: [string, unknown][] = [
      ['logprobs', true],
      ['top_logprobs', 2],
      ['top_p', 0.5],
      ['frequency_penalty', 0.5],
      ['presence_penalty', -0.5],
      ['logit_bias', { '50256': -100 }],
      ['seed', 7],
      ['reasoning_effort', 'low'],
      ['verbosity', 'low'],
      ['web_search_options', {}],
      ['modalities', ['text', 'audio']],
      ['moderation', { model: 'omni-moderation-latest' }],
      ['service_tier', 'flex'],
      ['store', true],
    ];

    it.each(CHANGING)('refuses %s = %j with 400 naming it, and sends nothing to the provider', async (field, value) => {
      const err = await failure(oa.chat.completions.create({ model: 'gpt', messages: HELLO, [field]: value } as never), APIError);
      expect([err.status, err.code, err.param, err.message]).toEqual([400, 'INVALID_REQUEST', field, `400 INVALID_REQUEST: Invalid request: ${field} is not supported by tollgate.`]);
      expect(openai.requests).toHaveLength(0);
    });

    it("takes those fields at their defaults, and the hints user, metadata, safety_identifier and the prompt cache's, sending the provider what a plain call sends", async () => {
      await oa.chat.completions.create({ model: 'gpt', messages: HELLO });
      const r = await oa.chat.completions.create({
        model: 'gpt',
        messages: HELLO,
        logprobs: false,
        top_logprobs: 0,
        top_p: 1,
        frequency_penalty: 0,
        presence_penalty: 0,
        logit_bias: {},
        modalities: ['text'],
        service_tier: 'auto',
        store: false,
        tools: [],
        tool_choice: 'none',
        parallel_tool_calls: true,
        user: 'u-1',
        metadata: { team: 'platform' },
        safety_identifier: 'f3a1c9',
        prompt_cache_key: 'support-bot',
        prompt_cache_retention: '24h',
        stream_options: null,
      } as never);
      expect(r.choices[0]!.message.content).toBe('fake openai reply to: Hello there');
      expect(openai.requests).toHaveLength(2);
      expect(openai.requests[1]!.body).toEqual(openai.requests[0]!.body);
    });

    it("refuses an assistant turn's refusal or audio, naming where each is", async () => {
      const turns = [
        { role: 'assistant', content: null, refusal: 'I cannot help with that.' },
        { role: 'assistant', content: null, audio: { id: 'audio_1' } },
      ];
      const params = [];
      for (const turn of turns) {
        const err = await failure(oa.chat.completions.create({ model: 'gpt', messages: [...HELLO, turn, ...HELLO] } as never), APIError);
        params.push([err.status, err.param]);
      }
      expect(params).toEqual([
        [400, 'messages.1.refusal'],
        [400, 'messages.1.audio'],
      ]);
      expect(openai.requests).toHaveLength(0);
    });

    it("takes a part's cache breakpoint without sending it: the provider gets the text as without one", async () => {
      const part = (extra: object) => [{ role: 'user', content: [{ type: 'text', text: 'A long shared prefix', ...extra }] }];
      await oa.chat.completions.create({ model: 'gpt', messages: part({}) } as never);
      await oa.chat.completions.create({ model: 'gpt', messages: part({ prompt_cache_breakpoint: { mode: 'explicit' } }) } as never);
      expect(openai.requests).toHaveLength(2);
      expect(openai.requests[1]!.body).toEqual(openai.requests[0]!.body);
    });
  });

  describe('POST /v1/messages', () => {
    const CHANGING: [string, unknown][] = [
      ['top_p', 0.5],
      ['top_k', 5],
      ['output_config', { format: { type: 'json_schema', schema: { type: 'object' } } }],
      ['output_config', { effort: 'low' }],
      ['inference_geo', 'us'],
      ['speed', 'fast'],
      ['service_tier', 'standard_only'],
      ['diagnostics', { previous_message_id: null }],
      ['context_management', { edits: [{ type: 'clear_tool_uses_20250919' }] }],
    ];

    it.each(CHANGING)('refuses %s = %j with 400 naming it, and sends nothing to the provider', async (field, value) => {
      const err = await failure(an.messages.create({ model: 'claude', max_tokens: 50, messages: HELLO, [field]: value } as never), AnthropicError);
      expect([err.status, err.type, (err.error as { error: { message: string } }).error.message]).toEqual([
        400,
        'invalid_request_error',
        `INVALID_REQUEST: Invalid request: ${field} is not supported by tollgate.`,
      ]);
      expect(anthropic.requests).toHaveLength(0);
    });

    it('takes cache_control at the top, on a system block and on a message block without sending it', async () => {
      const block = (extra: object) => ({ type: 'text' as const, text: 'A long shared prefix', ...extra });
      const call = (extra: object, top: object) =>
        an.messages.create({ model: 'claude', max_tokens: 50, system: [block(extra)], messages: [...HELLO, { role: 'assistant', content: 'Hi' }, { role: 'user', content: [{ type: 'text', text: 'and' }, block(extra)] }], ...top } as never);
      await call({}, {});
      await call({ cache_control: { type: 'ephemeral' } }, { cache_control: { type: 'ephemeral' } });
      expect(anthropic.requests).toHaveLength(2);
      expect(anthropic.requests[1]!.body).toEqual(anthropic.requests[0]!.body);
    });

    it('takes metadata.user_id, the standard speed, the auto service tier and an empty output_config, sending the provider what a plain call sends', async () => {
      await an.messages.create({ model: 'claude', max_tokens: 50, messages: HELLO });
      const msg = await an.messages.create({ model: 'claude', max_tokens: 50, messages: HELLO, metadata: { user_id: 'f3a1c9' }, speed: 'standard', service_tier: 'auto', output_config: {} });
      expect(msg.content).toEqual([{ type: 'text', text: 'fake anthropic reply to: Hello there' }]);
      expect(anthropic.requests).toHaveLength(2);
      expect(anthropic.requests[1]!.body).toEqual(anthropic.requests[0]!.body);
    });

    it('refuses in count_tokens what the call refuses', async () => {
      const err = await failure(an.messages.countTokens({ model: 'claude', messages: HELLO, top_k: 5 } as never), AnthropicError);
      expect([err.status, (err.error as { error: { message: string } }).error.message]).toEqual([400, 'INVALID_REQUEST: Invalid request: top_k is not supported by tollgate.']);
    });
  });

  describe('POST /v1/responses', () => {
    const CHANGING: [string, unknown][] = [
      ['top_p', 0.5],
      ['top_logprobs', 3],
      ['truncation', 'auto'],
      ['service_tier', 'priority'],
      ['context_management', [{ type: 'compaction', compact_threshold: 1000 }]],
    ];

    it.each(CHANGING)('refuses %s = %j with 400 naming it, and sends nothing to the provider', async (field, value) => {
      const err = await failure(oa.responses.create({ model: 'gpt', input: 'Hello there', [field]: value } as never), APIError);
      expect([err.status, err.code, err.param]).toEqual([400, 'INVALID_REQUEST', field]);
      expect(openai.requests).toHaveLength(0);
    });

    it('refuses text.verbosity, naming it', async () => {
      const err = await failure(oa.responses.create({ model: 'gpt', input: 'Hello there', text: { verbosity: 'low' } }), APIError);
      expect([err.status, err.param]).toEqual([400, 'text.verbosity']);
    });

    it("takes those fields at their defaults, and the prompt cache's hints, sending the provider what a plain call sends", async () => {
      await oa.responses.create({ model: 'gpt', input: 'Hello there' });
      const r = await oa.responses.create({ model: 'gpt', input: 'Hello there', top_p: 1, truncation: 'disabled', service_tier: 'auto', text: { format: { type: 'text' }, verbosity: null }, store: true, user: 'u-1', prompt_cache_retention: '24h' });
      expect([r.status, r.output_text]).toEqual(['completed', 'fake openai reply to: Hello there']);
      expect(r).toMatchObject({ store: false });
      expect(openai.requests).toHaveLength(2);
      expect(openai.requests[1]!.body).toEqual(openai.requests[0]!.body);
    });
  });
});
