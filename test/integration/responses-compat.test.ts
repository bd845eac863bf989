/**
 * POST /v1/responses with the official openai SDK (`client.responses.create`, plain and streamed)
 * against the gateway on the demo provider: text in (a string, or message items with input_text
 * parts), text out, usage mapped, the Responses event sequence, refusals in the OpenAI error shape,
 * and one decision event per call like every way in.
 */
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway(basicPolicy(), { now: () => NOW });
});
afterAll(async () => {
  await gw?.close();
});

const client = (key: string) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0 });

describe('OpenAI Responses API subset at /v1/responses', () => {
  it('answers a string input with the served model, the text and the usage', async () => {
    const { data, response } = await client(KEYS.alice).responses.create({ model: 'standard', input: 'Hello', instructions: 'Be brief.', max_output_tokens: 50 }).withResponse();
    expect(data.id).toBe(`resp_${response.headers.get('x-request-id')}`);
    expect([data.object, data.status, data.model, data.output_text]).toEqual(['response', 'completed', 'demo/medium', '[medium] You said: Hello']);
    expect(data.output).toEqual([
      { type: 'message', id: `msg_${response.headers.get('x-request-id')}`, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: '[medium] You said: Hello', annotations: [], logprobs: [] }] },
    ]);
    // "Be brief." is 3 tokens and "Hello" 2 in the demo's count; the reply is 4 words.
    expect(data.usage).toEqual({ input_tokens: 5, input_tokens_details: { cached_tokens: 0 }, output_tokens: 4, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 9 });
    expect(response.headers.get('x-tollgate-decision')).toBe('allow');
    await gw.idle();
    expect(gw.events.find((e) => e['request.id'] === response.headers.get('x-request-id'))).toMatchObject({ transport: 'openai', effect: 'allow', outcome: 'success', 'gen_ai.usage.input_tokens': 5 });
  });

  it('takes message items with input_text parts, joined on a line break, and says when the answer was cut', async () => {
    const r = await client(KEYS.alice).responses.create({
      model: 'demo/small',
      input: [
        { role: 'developer', content: 'Answer in English.' },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'alpha beta' }, { type: 'input_text', text: 'gamma delta' }] },
      ],
      max_output_tokens: 3,
    });
    expect(r.output_text).toBe('[small] You said: ');
    expect([r.status, r.incomplete_details]).toEqual(['incomplete', { reason: 'max_output_tokens' }]);
    // The demo provider answers with the last message: both parts, on two lines.
    const full = await client(KEYS.alice).responses.create({ model: 'demo/small', input: [{ role: 'user', content: [{ type: 'input_text', text: 'alpha beta' }, { type: 'input_text', text: 'gamma delta' }] }] });
    expect(full.output_text).toBe('[small] You said: alpha beta\ngamma delta');
  });

  it('refuses a max_output_tokens over the ceiling naming max_output_tokens', async () => {
    const err = (await client(KEYS.alice)
      .responses.create({ model: 'standard', input: 'Hello', max_output_tokens: 1e9 })
      .then(() => undefined, (e: unknown) => e)) as APIError;
    expect(err).toBeInstanceOf(APIError);
    expect([err.status, err.code, err.message]).toEqual([400, 'INVALID_REQUEST', '400 INVALID_REQUEST: Invalid arguments: max_output_tokens 1000000000 exceeds the gateway ceiling of 32768.']);
  });

  it('streams the Responses event sequence, text deltas and the completed response with usage', async () => {
    const stream = await client(KEYS.alice).responses.create({ model: 'standard', input: 'Hello there', stream: true });
    const events = [];
    for await (const e of stream) events.push(e);
    expect(events.map((e) => e.type)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const deltas = events.flatMap((e) => (e.type === 'response.output_text.delta' ? [e.delta] : []));
    expect(deltas.join('')).toBe('[medium] You said: Hello there');
    const done = events.at(-1)!;
    if (done.type !== 'response.completed') throw new Error('not completed');
    expect(done.response.status).toBe('completed');
    expect(done.response.model).toBe('demo/medium');
    expect(done.response.usage).toEqual({ input_tokens: 3, input_tokens_details: { cached_tokens: 0 }, output_tokens: 5, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 8 });
    expect(events[0]!.type === 'response.created' && events[0]!.response.status).toBe('in_progress');
  });

  it('streams through the SDK helper to the final response', async () => {
    const stream = client(KEYS.alice).responses.stream({ model: 'economy', input: 'Hi' });
    const text: string[] = [];
    stream.on('response.output_text.delta', (e) => text.push(e.delta));
    const final = await stream.finalResponse();
    expect(final.output_text).toBe('[small] You said: Hi');
    expect(text.join('')).toBe('[small] You said: Hi');
  });

  it('refuses an exhausted budget with 429 insufficient_quota before any event, streamed or not', async () => {
    const g = gw.runtime.gateway;
    const lines = applicableLines(g.policy.budgets, keyPrincipal(g, KEYS.carol), NOW, 'tollgate:');
    await g.store.settle('seed-carol', lines.map((l) => ({ ...l.line, amount: 10000 })));
    for (const stream of [false, true]) {
      const err = await client(KEYS.carol).responses.create({ model: 'standard', input: 'Hello', stream }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect([(err as APIError).status, (err as APIError).code, (err as APIError).type]).toEqual([429, 'insufficient_quota', 'insufficient_quota']);
    }
    expect(gw.events.at(-1)).toMatchObject({ transport: 'openai', outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' });
  });

  it('refuses tools and an input with no user text with 400 naming the field', async () => {
    const tools = await client(KEYS.bob)
      .responses.create({ model: 'standard', input: 'Hi', tools: [{ type: 'function', name: 'f', parameters: {}, strict: true }] })
      .then(() => undefined, (e: unknown) => e as APIError);
    expect([tools?.status, tools?.code, tools?.param]).toEqual([400, 'INVALID_REQUEST', 'tools']);
    const empty = await client(KEYS.bob)
      .responses.create({ model: 'standard', input: [{ role: 'system', content: 'Only this.' }] })
      .then(() => undefined, (e: unknown) => e as APIError);
    expect([empty?.status, empty?.param]).toEqual([400, 'input']);
    expect(gw.events.at(-1)).toMatchObject({ transport: 'openai', outcome: 'failed', 'error.code': 'INVALID_REQUEST', 'user.id': 'bob' });
  });
});
