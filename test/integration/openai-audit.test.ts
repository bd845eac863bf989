/**
 * What clients tollgate does not control meet on the OpenAI-compatible endpoints: the official
 * openai SDK's `models.retrieve`, refusals that name the field at fault for content the gateway
 * cannot pass on, conflicting output caps, and a Responses stream that fails after it began, as
 * the SDK's stream helpers see it. The gateway serves the demo provider and the fake OpenAI server.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { KEYS, basicPolicy, sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { rejection } from '../helpers/rejection.js';

const failure = (p: Promise<unknown>) => rejection<APIError>(p, APIError);

describe('the OpenAI-compatible endpoints with the openai SDK', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(async () => {
    await gw?.close();
  });
  const client = (key: string) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0 });
  const hello = [{ role: 'user' as const, content: 'Hello' }];

  describe('GET /v1/models/{id}', () => {
    it('retrieves a tier and a model ref by id, as the list shows them', async () => {
      const openai = client(KEYS.alice);
      expect(await openai.models.retrieve('standard')).toEqual({ id: 'standard', object: 'model', created: 0, owned_by: 'tollgate' });
      // The SDK sends the slash of a model ref encoded (demo%2Fmedium).
      expect(await openai.models.retrieve('demo/medium')).toEqual({ id: 'demo/medium', object: 'model', created: 0, owned_by: 'demo' });
      const raw = await fetch(`${gw.url}/v1/models/demo/small`, { headers: { authorization: `Bearer ${KEYS.alice}` } });
      expect([raw.status, await raw.json()]).toEqual([200, { id: 'demo/small', object: 'model', created: 0, owned_by: 'demo' }]);
    });

    it('answers an unknown id, and a tier a rule closes to the caller, with 404 naming the model', async () => {
      const unknown = await failure(client(KEYS.alice).models.retrieve('gpt-nope'));
      expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
      expect(unknown.error).toEqual({
        message: 'UNKNOWN_MODEL: Model "gpt-nope" is not one this caller may use; GET /v1/models lists them.',
        type: 'invalid_request_error',
        param: 'model',
        code: 'UNKNOWN_MODEL',
        tollgate_code: 'UNKNOWN_MODEL',
        details: { model: 'gpt-nope' },
      });
      expect(unknown.headers?.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
      expect(unknown.headers?.get('x-should-retry')).toBe('false');
      const closed = await failure(client(KEYS.bob).models.retrieve('premium'));
      expect([closed.status, closed.code]).toEqual([404, 'UNKNOWN_MODEL']);
      await gw.idle();
      expect(gw.events.at(-1)).toMatchObject({ transport: 'openai', 'error.code': 'UNKNOWN_MODEL', 'user.id': 'bob' });
    });

    it('refuses an unknown key with 401, as the list does', async () => {
      const err = await failure(client('not-a-key').models.retrieve('standard'));
      expect([err.status, err.code]).toEqual([401, 'AUTH_INVALID']);
    });

    it("answers the Anthropic SDK's models.retrieve in its shape", async () => {
      const anthropic = new Anthropic({ baseURL: gw.url, apiKey: KEYS.alice, maxRetries: 0 });
      expect(await anthropic.models.retrieve('demo/large')).toMatchObject({ type: 'model', id: 'demo/large', display_name: 'demo/large', created_at: '1970-01-01T00:00:00Z' });
      await expect(anthropic.models.retrieve('gpt-nope')).rejects.toBeInstanceOf(Anthropic.NotFoundError);
    });
  });

  describe('content tollgate cannot pass on', () => {
    it('refuses a chat content part that is not text, naming the part and its type', async () => {
      const image = { type: 'image_url' as const, image_url: { url: 'https://example.com/cat.png' } };
      const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this?' }, image] }] }));
      expect([err.status, err.param, err.message]).toEqual([
        400,
        'messages.0.content.1.type',
        '400 INVALID_REQUEST: Invalid request: messages.0.content.1.type: content parts of type "image_url" are not supported by tollgate; only text parts go through.',
      ]);
    });

    it('refuses a Responses input item or part that is not a message or text, naming it', async () => {
      const output = await failure(client(KEYS.alice).responses.create({ model: 'standard', input: [{ type: 'function_call_output', call_id: 'call_1', output: '42' }] }));
      expect([output.status, output.param, output.message]).toEqual([
        400,
        'input.0.type',
        '400 INVALID_REQUEST: Invalid request: input.0.type: input items of type "function_call_output" are not supported by tollgate; only message items go through.',
      ]);
      const image = await failure(client(KEYS.alice).responses.create({ model: 'standard', input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://example.com/cat.png', detail: 'auto' }] }] }));
      expect([image.status, image.param, image.message]).toEqual([
        400,
        'input.0.content.0.type',
        '400 INVALID_REQUEST: Invalid request: input.0.content.0.type: content parts of type "input_image" are not supported by tollgate; only input_text and output_text parts go through.',
      ]);
    });

    it('says a content that is neither text nor a list of parts must be one', async () => {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 42 }] }),
      });
      const { error } = (await res.json()) as { error: { param: string; message: string } };
      expect([res.status, error.param, error.message]).toEqual([400, 'messages.0.content', 'INVALID_REQUEST: Invalid request: messages.0.content: Invalid input: expected string or array']);
    });

    it("says a part without a type needs one, in zod's words", async () => {
      const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: [{ text: 'Hi' } as never] }] }));
      expect([err.status, err.param, err.message]).toEqual([400, 'messages.0.content.0.type', '400 INVALID_REQUEST: Invalid request: messages.0.content.0.type: Invalid input: expected "text"']);
    });

    it('refuses a chat with only system messages, naming messages', async () => {
      const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'system', content: 'Be brief.' }] }));
      expect([err.status, err.param, err.message]).toEqual([400, 'messages', '400 INVALID_REQUEST: Invalid request: messages: at least one user or assistant message is required.']);
    });
  });

  describe('max_tokens and max_completion_tokens', () => {
    it('refuses both with different values, as OpenAI refuses both, naming max_tokens', async () => {
      const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: hello, max_tokens: 5, max_completion_tokens: 3 }));
      expect([err.status, err.param, err.message]).toEqual([
        400,
        'max_tokens',
        '400 INVALID_REQUEST: Invalid request: max_tokens: max_tokens (5) and max_completion_tokens (3) differ; send one of them.',
      ]);
    });

    it('takes both at the same value as that cap', async () => {
      const r = await client(KEYS.alice).chat.completions.create({ model: 'standard', messages: hello, max_tokens: 3, max_completion_tokens: 3 });
      expect([r.choices[0]!.message.content, r.choices[0]!.finish_reason, r.usage!.completion_tokens]).toEqual(['[medium] You said: ', 'length', 3]);
    });
  });

  describe('a path under /v1 that tollgate does not serve', () => {
    it("answers in the wire's own error shape, so each SDK raises NotFoundError with its type, and records it", async () => {
      const before = gw.events.length;
      const openai = await failure(client(KEYS.alice).files.list());
      expect(openai).toBeInstanceOf(OpenAI.NotFoundError);
      expect(openai.type).toBe('invalid_request_error');
      expect(openai.code).toBe('NOT_FOUND');
      expect(openai.message).toContain('There is no GET /v1/files on this gateway.');
      expect(openai.headers?.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

      const an = new Anthropic({ baseURL: gw.url, apiKey: KEYS.alice, maxRetries: 0 });
      const anthropic = await an.messages.batches.list().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(anthropic).toBeInstanceOf(Anthropic.NotFoundError);
      const body = (anthropic as InstanceType<typeof Anthropic.NotFoundError>).error as { type: string; error: { type: string; message: string } };
      expect(body.type).toBe('error');
      expect(body.error.type).toBe('not_found_error');
      expect(body.error.message).toContain('There is no GET /v1/messages/batches on this gateway.');
      expect((anthropic as InstanceType<typeof Anthropic.NotFoundError>).headers?.get('request-id')).toMatch(/^[0-9a-f-]{36}$/);

      await gw.idle();
      const refused = gw.events.slice(before).map((e) => e['error.code']);
      expect(refused).toEqual(['NOT_FOUND', 'NOT_FOUND']);
    });
  });
});

describe('a Responses stream that fails after it began', () => {
  const KEY = 'key-audit';
  let fake: FakeProviderServer;
  let gw: TestGateway;
  beforeAll(async () => {
    fake = await startFakeOpenAI();
    gw = await startTestGateway(`
version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${fake.url}", timeoutMs: 5000 }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  gpt: [openai/gpt-5-mini]
defaultTier: gpt
apiKeys:
  - { id: audit, sha256: ${sha(KEY)}, user: erin }
`);
  });
  afterAll(async () => {
    await gw?.close();
    await fake?.close();
  });
  beforeEach(() => fake.reset());
  const client = () => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0 });
  const CUT = 'PROVIDER_UNAVAILABLE: Provider openai failed (connection_lost): the connection closed mid-answer';

  it("rejects the SDK helper's finalResponse with an APIError carrying the gateway's code", async () => {
    fake.failNext({ kind: 'cut', afterWords: 2 });
    const stream = client().responses.stream({ model: 'gpt', input: 'one two three' });
    const text: string[] = [];
    stream.on('response.output_text.delta', (e) => text.push(e.delta));
    const err = await failure(stream.finalResponse());
    expect([err.code, err.message]).toEqual(['PROVIDER_UNAVAILABLE', CUT]);
    expect(text.join('')).toBe('fake openai ');
  });

  it('ends a raw stream with an error event in the documented fields and the error object OpenAI sends', async () => {
    fake.failNext({ kind: 'cut', afterWords: 2 });
    const res = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt', input: 'one two three', stream: true }),
    });
    const frames = (await res.text()).trim().split('\n\n');
    const last = frames.at(-1)!.split('\n');
    expect(last[0]).toBe('event: error');
    const data = JSON.parse(last[1]!.slice('data: '.length)) as Record<string, unknown>;
    expect(data).toEqual({
      type: 'error',
      code: 'PROVIDER_UNAVAILABLE',
      message: CUT,
      param: null,
      error: { type: 'server_error', code: 'PROVIDER_UNAVAILABLE', message: CUT, param: null },
      sequence_number: frames.length - 1,
    });
  });
});
