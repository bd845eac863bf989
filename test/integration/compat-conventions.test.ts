/**
 * What each client's conventions become on the way to the provider, and back: OpenAI content parts
 * and Anthropic text blocks reach a provider that takes parts as parts, and one that has none as
 * text joined with newlines, while content rules still read every part; the provider's finish
 * reason comes back as the stop reason of the compat endpoints and of MCP `complete`. Official
 * clients (openai, @anthropic-ai/sdk, the MCP client) against tollgate, tollgate against the fake
 * Anthropic, OpenAI and Bedrock servers through the official SDKs.
 */
import Anthropic from '@anthropic-ai/sdk';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import OpenAI, { APIError } from 'openai';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-conventions';
const policy = (a: FakeProviderServer, o: FakeProviderServer, b: FakeProviderServer) => `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${a.url}", timeoutMs: 5000 }
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${o.url}", timeoutMs: 5000 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${b.url}", timeoutMs: 5000 }
  demo: { kind: demo }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  bedrock/anthropic.claude-sonnet-4-5-v1:0: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  claude: [anthropic/claude-sonnet-4-5]
  gpt: [openai/gpt-5-mini]
  bedrock: [bedrock/anthropic.claude-sonnet-4-5-v1:0]
  local: [demo/medium]
defaultTier: local
apiKeys:
  - { id: conventions, sha256: ${sha(KEY)}, user: erin }
rules:
  - id: no-codenames
    when: "request.compactText.contains('ACME-12345678') || request.text.contains('forbidden fruit')"
    effect: deny
    message: That stays inside.
`;

const PARTS = [
  { type: 'text' as const, text: 'alpha beta' },
  { type: 'text' as const, text: 'gamma delta' },
];

describe('compat conventions through the fakes', () => {
  let anthropic: FakeProviderServer;
  let openai: FakeProviderServer;
  let bedrock: FakeProviderServer;
  let gw: TestGateway;
  let oa: OpenAI;
  let an: Anthropic;
  let mcp: Client;

  beforeAll(async () => {
    [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeBedrock()]);
    gw = await startTestGateway(policy(anthropic, openai, bedrock));
    oa = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
    an = new Anthropic({ baseURL: gw.url, apiKey: KEY, maxRetries: 0 });
    mcp = await connectHttp(gw.mcpUrl, KEY);
  });
  afterAll(async () => {
    await mcp.close();
    await gw.close();
    await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  });
  beforeEach(() => {
    for (const f of [anthropic, openai, bedrock]) f.reset();
  });

  /** The messages of the last request a fake received. */
  const lastMessages = (f: FakeProviderServer) => (f.requests.at(-1)!.body as { messages: unknown[] }).messages;

  describe('content parts', () => {
    it('OpenAI content parts reach Anthropic as text blocks', async () => {
      const r = await oa.chat.completions.create({ model: 'claude', messages: [{ role: 'user', content: PARTS }], max_tokens: 50 });
      expect(lastMessages(anthropic)).toEqual([{ role: 'user', content: PARTS }]);
      expect(r.choices[0]!.message.content).toBe('fake anthropic reply to: alpha beta gamma delta');
    });

    it('OpenAI content parts reach OpenAI as content parts, an assistant turn included', async () => {
      await oa.chat.completions.create({
        model: 'gpt',
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }] },
          { role: 'user', content: PARTS },
        ],
        max_tokens: 50,
      });
      expect(lastMessages(openai)).toEqual([
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }] },
        { role: 'user', content: PARTS },
      ]);
    });

    it('Anthropic text blocks reach Bedrock as content blocks', async () => {
      await an.messages.create({ model: 'bedrock', max_tokens: 50, messages: [{ role: 'user', content: PARTS }] });
      expect(lastMessages(bedrock)).toEqual([{ role: 'user', content: [{ text: 'alpha beta' }, { text: 'gamma delta' }] }]);
    });

    it('Anthropic text blocks reach OpenAI as content parts, and a single block as plain text', async () => {
      await an.messages.create({
        model: 'gpt',
        max_tokens: 50,
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'only one' }] },
          { role: 'assistant', content: 'ok' },
          { role: 'user', content: PARTS },
        ],
      });
      expect(lastMessages(openai)).toEqual([
        { role: 'user', content: 'only one' },
        { role: 'assistant', content: 'ok' },
        { role: 'user', content: PARTS },
      ]);
    });

    it('joins parts with a newline for a provider without parts (the demo), never end to end', async () => {
      const viaOpenAI = await oa.chat.completions.create({ model: 'local', messages: [{ role: 'user', content: PARTS }], max_tokens: 50 });
      expect(viaOpenAI.choices[0]!.message.content).toBe('[medium] You said: alpha beta\ngamma delta');
      const viaAnthropic = await an.messages.create({ model: 'local', max_tokens: 50, messages: [{ role: 'user', content: PARTS }] });
      expect(viaAnthropic.content).toEqual([{ type: 'text', text: '[medium] You said: alpha beta\ngamma delta' }]);
    });

    it('joins system blocks with a newline', async () => {
      await an.messages.create({ model: 'claude', max_tokens: 50, system: [{ type: 'text', text: 'Be brief.' }, { type: 'text', text: 'Be kind.' }], messages: [{ role: 'user', content: 'hi' }] });
      expect((anthropic.requests.at(-1)!.body as { system: unknown }).system).toBe('Be brief.\nBe kind.');
    });

    it('lets content rules read every part: the second part, and a value cut across two parts', async () => {
      const second = await oa.chat.completions
        .create({ model: 'claude', messages: [{ role: 'user', content: [{ type: 'text', text: 'an apple' }, { type: 'text', text: 'the forbidden fruit' }] }] })
        .catch((e: unknown) => e);
      expect(second).toBeInstanceOf(APIError);
      expect((second as APIError).status).toBe(403);
      const cut = await an.messages
        .create({ model: 'claude', max_tokens: 50, messages: [{ role: 'user', content: [{ type: 'text', text: 'code ACME-1234' }, { type: 'text', text: '5678 please' }] }] })
        .catch((e: unknown) => e);
      expect((cut as APIError).status).toBe(403);
      expect((cut as APIError).message).toContain('That stays inside.');
      expect(anthropic.counts.received).toBe(0);
    });

    it('takes parts in MCP complete too', async () => {
      const r = await mcp.callTool({ name: 'complete', arguments: { messages: [{ role: 'user', content: PARTS }], tier: 'gpt', max_tokens: 50 } });
      expect(r.isError).toBeFalsy();
      expect(lastMessages(openai)).toEqual([{ role: 'user', content: PARTS }]);
    });
  });

  describe('stop reasons', () => {
    type Complete = { text: string; stopReason: string; stopSequence?: string };
    const complete = async (tier: string, max_tokens = 50) => {
      const r = await mcp.callTool({ name: 'complete', arguments: { prompt: 'alpha beta gamma', tier, max_tokens } });
      expect(r.isError).toBeFalsy();
      return { s: r.structuredContent as Complete, texts: (r.content as { text: string }[]).map((c) => c.text) };
    };

    it.each(['claude', 'gpt', 'bedrock', 'local'])('MCP complete on %s says end_turn for a finished answer, with only its text', async (tier) => {
      const { s, texts } = await complete(tier);
      expect(s.stopReason).toBe('end_turn');
      expect(texts).toEqual([s.text]);
    });

    it.each(['claude', 'gpt', 'bedrock', 'local'])('MCP complete on %s says max_tokens for an answer cut at the cap, in structuredContent and the text', async (tier) => {
      const { s, texts } = await complete(tier, 2);
      expect(s.stopReason).toBe('max_tokens');
      expect(texts).toEqual([s.text, '[stopReason: max_tokens] The answer was cut at max_tokens.']);
    });

    it('MCP complete says stop_sequence, naming it, when Anthropic stops at one', async () => {
      anthropic.failNext({ kind: 'stop', reason: 'stop_sequence', afterWords: 2, sequence: '###' });
      const { s, texts } = await complete('claude');
      expect(s).toMatchObject({ text: 'fake anthropic', stopReason: 'stop_sequence', stopSequence: '###' });
      expect(texts[1]).toBe('[stopReason: stop_sequence] The answer ended at a stop sequence.');
    });

    it('MCP complete says stop_sequence when Bedrock stops at one', async () => {
      bedrock.failNext({ kind: 'stop', reason: 'stop_sequence', afterWords: 2 });
      expect((await complete('bedrock')).s.stopReason).toBe('stop_sequence');
    });

    it.each([
      ['claude', () => anthropic],
      ['gpt', () => openai],
      ['bedrock', () => bedrock],
    ] as const)('MCP complete on %s says refusal when the provider refuses', async (tier, fake) => {
      fake().failNext({ kind: 'stop', reason: 'refusal', afterWords: 1 });
      const { s, texts } = await complete(tier);
      expect(s.stopReason).toBe('refusal');
      expect(texts[1]).toBe('[stopReason: refusal] The provider refused to answer.');
    });

    it('the OpenAI endpoint answers length, content_filter and stop from the provider, plain and streamed', async () => {
      const cut = await oa.chat.completions.create({ model: 'claude', messages: [{ role: 'user', content: 'alpha beta gamma' }], max_tokens: 2 });
      expect(cut.choices[0]!.finish_reason).toBe('length');
      anthropic.failNext({ kind: 'stop', reason: 'refusal', afterWords: 1 });
      const refused = await oa.chat.completions.create({ model: 'claude', messages: [{ role: 'user', content: 'alpha' }], max_tokens: 50 });
      expect(refused.choices[0]!.finish_reason).toBe('content_filter');
      anthropic.failNext({ kind: 'stop', reason: 'stop_sequence', afterWords: 2 });
      const stream = await oa.chat.completions.create({ model: 'claude', messages: [{ role: 'user', content: 'alpha' }], max_tokens: 50, stream: true });
      const finishes: (string | null)[] = [];
      for await (const c of stream) finishes.push(c.choices[0]?.finish_reason ?? null);
      expect(finishes.filter(Boolean)).toEqual(['stop']);
    });

    it('the Anthropic endpoint answers max_tokens, stop_sequence with its sequence and refusal, plain and streamed', async () => {
      const cut = await an.messages.create({ model: 'gpt', max_tokens: 2, messages: [{ role: 'user', content: 'alpha beta gamma' }] });
      expect([cut.stop_reason, cut.stop_sequence]).toEqual(['max_tokens', null]);
      anthropic.failNext({ kind: 'stop', reason: 'stop_sequence', afterWords: 2, sequence: 'END' });
      const seq = await an.messages.create({ model: 'claude', max_tokens: 50, messages: [{ role: 'user', content: 'alpha' }] });
      expect([seq.stop_reason, seq.stop_sequence]).toEqual(['stop_sequence', 'END']);
      openai.failNext({ kind: 'stop', reason: 'refusal', afterWords: 1 });
      const final = await an.messages.stream({ model: 'gpt', max_tokens: 50, messages: [{ role: 'user', content: 'alpha' }] }).finalMessage();
      expect(final.stop_reason).toBe('refusal');
    });

    it('the Responses endpoint answers incomplete for a cut and content_filter for a refusal, plain and streamed', async () => {
      const cut = await oa.responses.create({ model: 'claude', input: 'alpha beta gamma', max_output_tokens: 2 });
      expect([cut.status, cut.incomplete_details]).toEqual(['incomplete', { reason: 'max_output_tokens' }]);
      anthropic.failNext({ kind: 'stop', reason: 'refusal', afterWords: 1 });
      const refused = await oa.responses.create({ model: 'claude', input: 'alpha', max_output_tokens: 50 });
      expect([refused.status, refused.incomplete_details, refused.output[0]!.type === 'message' && refused.output[0]!.status]).toEqual(['incomplete', { reason: 'content_filter' }, 'incomplete']);
      openai.failNext({ kind: 'stop', reason: 'refusal', afterWords: 1 });
      const stream = oa.responses.stream({ model: 'gpt', input: 'alpha', max_output_tokens: 50 });
      const types: string[] = [];
      for await (const e of stream) types.push(e.type);
      const final = await stream.finalResponse();
      expect([final.status, final.incomplete_details]).toEqual(['incomplete', { reason: 'content_filter' }]);
      expect(types.at(-1)).toBe('response.incomplete');
    });
  });

  describe("a provider's refusal that retrying will not fix", () => {
    it('answers 502 PROVIDER_ERROR with x-should-retry: false, so an SDK that would retry a 502 asks once', async () => {
      const retrying = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 2 });
      openai.failNext({ kind: 'status', status: 400 }, 3);
      const err = await retrying.chat.completions.create({ model: 'gpt', messages: [{ role: 'user', content: 'alpha' }] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect([(err as APIError).status, (err as APIError).code, (err as APIError).headers?.get('x-should-retry')]).toEqual([502, 'PROVIDER_ERROR', 'false']);
      expect(openai.requests).toHaveLength(1);
    });
  });
});
