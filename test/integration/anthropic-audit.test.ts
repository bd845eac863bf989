/**
 * What clients tollgate does not control meet on the Anthropic-compatible endpoints: the
 * `anthropic-beta` header the SDK's `betas` and Claude Code send, message content the Messages API
 * refuses, and the stream's events through to an error mid-stream. The official @anthropic-ai/sdk
 * (and raw HTTP where the wire itself is the subject) against tollgate, tollgate against the fake
 * Anthropic and OpenAI servers.
 */
import Anthropic, { APIError } from '@anthropic-ai/sdk';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { fakeProvidersYaml, sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { rejection } from '../helpers/rejection.js';

const KEY = 'key-anthropic-audit';
const HELLO = [{ role: 'user' as const, content: 'Hello there' }];

const failure = (p: Promise<unknown>) => rejection<APIError>(p, APIError);

/** The `event:` names of an SSE body, in order, and each event's data. */
function events(body: string): { event: string; data: Record<string, unknown> }[] {
  return body
    .split('\n\n')
    .filter((frame) => frame.trim())
    .map((frame) => {
      const lines = frame.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))!.slice('event: '.length);
      const data = JSON.parse(lines.find((l) => l.startsWith('data: '))!.slice('data: '.length)) as Record<string, unknown>;
      return { event, data };
    });
}

describe('the Anthropic-compatible endpoints against clients tollgate does not control', () => {
  let anthropic: FakeProviderServer;
  let openai: FakeProviderServer;
  let bedrock: FakeProviderServer;
  let gw: TestGateway;
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
defaultTier: claude
apiKeys:
  - { id: audit, sha256: ${sha(KEY)}, user: erin }
`);
    an = new Anthropic({ baseURL: gw.url, apiKey: KEY, maxRetries: 0 });
  });
  afterAll(async () => {
    await gw.close();
    await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  });
  beforeEach(() => {
    for (const f of [anthropic, openai, bedrock]) f.reset();
  });

  describe('the anthropic-beta header', () => {
    it('refuses a beta that changes the answer, naming it, before anything reaches the provider', async () => {
      const err = await failure(an.beta.messages.create({ model: 'claude', max_tokens: 20, messages: HELLO, betas: ['context-1m-2025-08-07'] }));
      expect(err.status).toBe(400);
      expect(err.error).toMatchObject({
        type: 'error',
        error: {
          type: 'invalid_request_error',
          message: 'INVALID_REQUEST: Invalid request: anthropic-beta context-1m-2025-08-07 is not supported by tollgate.',
          details: { error_code: 'INVALID_REQUEST' },
        },
      });
      expect(anthropic.counts.received).toBe(0);
      await gw.idle();
      expect(gw.events.at(-1)).toMatchObject({ transport: 'anthropic', 'user.id': 'erin', outcome: 'failed', 'error.code': 'INVALID_REQUEST' });
    });

    it('refuses a beta tollgate does not know among betas it takes, in a header of several', async () => {
      const res = await fetch(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': KEY, 'anthropic-version': '2023-06-01', 'anthropic-beta': 'interleaved-thinking-2025-05-14, some-future-beta-2031-01-01' },
        body: JSON.stringify({ model: 'claude', max_tokens: 20, messages: HELLO }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toBe(
        'INVALID_REQUEST: Invalid request: anthropic-beta some-future-beta-2031-01-01 is not supported by tollgate.',
      );
      expect(anthropic.counts.received).toBe(0);
    });

    it('takes the betas that only admit fields tollgate refuses on their own, as Claude Code sends them', async () => {
      const r = await an.beta.messages.create({
        model: 'claude',
        max_tokens: 20,
        messages: HELLO,
        betas: ['interleaved-thinking-2025-05-14', 'fine-grained-tool-streaming-2025-05-14', 'context-management-2025-06-27', 'oauth-2025-04-20'],
      });
      expect(r.content).toEqual([{ type: 'text', text: 'fake anthropic reply to: Hello there' }]);
    });

    it('refuses the same betas when counting tokens', async () => {
      const err = await failure(an.beta.messages.countTokens({ model: 'claude', messages: HELLO, betas: ['context-1m-2025-08-07'] }));
      expect(err.status).toBe(400);
      expect(err.type).toBe('invalid_request_error');
      expect((err.error as { error: { message: string } }).error.message).toBe('INVALID_REQUEST: Invalid request: anthropic-beta context-1m-2025-08-07 is not supported by tollgate.');
    });
  });

  describe('message content the Messages API refuses', () => {
    it.each([
      ['an empty string', '', 'messages.0: all messages must have non-empty content except for the optional final assistant message'],
      ['an empty list of blocks', [], 'messages.0: all messages must have non-empty content except for the optional final assistant message'],
      ['an empty text block', [{ type: 'text', text: 'Hello' }, { type: 'text', text: '' }], 'messages: text content blocks must be non-empty'],
    ])('refuses a user message of %s with 400, as Anthropic does, rather than a 502 from the provider', async (_name, content, reason) => {
      const err = await failure(an.messages.create({ model: 'claude', max_tokens: 20, messages: [{ role: 'user', content: content as string }] }));
      expect(err.status).toBe(400);
      expect(err.type).toBe('invalid_request_error');
      expect((err.error as { error: { message: string } }).error.message).toBe(`INVALID_REQUEST: Invalid request: ${reason}`);
      expect(anthropic.counts.received).toBe(0);
    });

    it.each([
      ['an image block', 'messages.0.content.1.type', [{ type: 'text', text: 'what is this?' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }], 'image'],
      ['a document block', 'messages.0.content.0.type', [{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } }], 'document'],
      ['a tool_result block', 'messages.0.content.0.type', [{ type: 'tool_result', tool_use_id: 't', content: 'x' }], 'tool_result'],
    ])('refuses %s naming the block and its type', async (_name, path, content, type) => {
      const err = await failure(an.messages.create({ model: 'claude', max_tokens: 20, messages: [{ role: 'user', content: content as never }] }));
      expect(err.status).toBe(400);
      expect((err.error as { error: { message: string } }).error.message).toBe(
        `INVALID_REQUEST: Invalid request: ${path}: content blocks of type "${type}" are not supported by tollgate; only text blocks go through.`,
      );
      const count = await failure(an.messages.countTokens({ model: 'claude', messages: [{ role: 'user', content: content as never }] }));
      expect((count.error as { error: { message: string } }).error.message).toContain(`content blocks of type "${type}"`);
      const system = await failure(an.messages.create({ model: 'claude', max_tokens: 20, system: content as never, messages: HELLO }));
      expect((system.error as { error: { message: string } }).error.message).toContain(`system.${path.slice('messages.0.content.'.length)}: content blocks of type "${type}"`);
      expect(anthropic.counts.received).toBe(0);
    });

    it('takes an empty final assistant message, the prefill Anthropic allows', async () => {
      const r = await an.messages.create({ model: 'gpt', max_tokens: 20, messages: [...HELLO, { role: 'assistant', content: '' }] });
      expect(r.stop_reason).toBe('end_turn');
    });
  });

  describe('streaming', () => {
    const post = (body: object) =>
      fetch(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': KEY, 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ max_tokens: 20, messages: HELLO, stream: true, ...body }),
      });

    it('sends the Messages events in order, the totals in message_delta', async () => {
      const res = await post({ model: 'claude' });
      expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const all = events(await res.text());
      expect(all.map((e) => e.event)).toEqual([
        'message_start',
        'content_block_start',
        ...Array<string>(6).fill('content_block_delta'),
        'content_block_stop',
        'message_delta',
        'message_stop',
      ]);
      for (const e of all) expect(e.data.type).toBe(e.event);
      expect(all.at(-2)!.data).toEqual({
        type: 'message_delta',
        delta: { stop_reason: 'end_turn', stop_sequence: null },
        usage: { input_tokens: 2, output_tokens: 6, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      });
    });

    it('ends a stream the provider breaks with an error event, which the SDK raises', async () => {
      anthropic.failNext({ kind: 'cut', afterWords: 2 });
      const res = await post({ model: 'claude' });
      const all = events(await res.text());
      expect(all.map((e) => e.event)).toEqual(['message_start', 'content_block_start', 'content_block_delta', 'content_block_delta', 'error']);
      expect(all.at(-1)!.data).toMatchObject({ type: 'error', error: { type: 'api_error', details: { error_code: 'PROVIDER_UNAVAILABLE' } } });

      anthropic.failNext({ kind: 'cut', afterWords: 2 });
      const err = await failure(an.messages.stream({ model: 'claude', max_tokens: 20, messages: HELLO }).finalMessage());
      expect(err.error).toMatchObject({ type: 'error', error: { type: 'api_error', message: 'PROVIDER_UNAVAILABLE: Provider anthropic failed (connection_lost): the connection closed mid-answer' } });
    });
  });
});
