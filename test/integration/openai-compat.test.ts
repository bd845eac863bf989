import OpenAI, { APIError } from 'openai';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';
import { rejection } from '../helpers/rejection.js';

const NOW = Date.parse('2026-11-25T10:00:00Z'); // a Wednesday; the weekly budget resets Monday 00:00 Paris

/** Charges `amount` tokens to every budget line of `key`, as if earlier calls had used them. */
async function precharge(gw: TestGateway, key: string, amount: number): Promise<void> {
  const g = gw.runtime.gateway;
  const lines = applicableLines(g.policy.budgets, keyPrincipal(g, key), NOW, 'tollgate:');
  await g.store.settle(`seed-${key}-${amount}`, lines.map((l) => ({ ...l.line, amount })));
}

const failure = (p: Promise<unknown>) => rejection<APIError>(p, APIError);

describe('OpenAI-compatible /v1/chat/completions with the openai SDK', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  const start = async (policy = basicPolicy()) => {
    gw = await startTestGateway(policy, { now: () => NOW });
    return gw;
  };
  const client = (key: string) => new OpenAI({ baseURL: `${gw!.url}/v1`, apiKey: key, maxRetries: 0 });

  it('answers a plain call with the served model, exact usage and budget headers', async () => {
    await start();
    const { data, response } = await client(KEYS.alice)
      .chat.completions.create({ model: 'standard', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello' }], max_tokens: 50 })
      .withResponse();
    expect(data.model).toBe('demo/medium');
    expect(data.object).toBe('chat.completion');
    expect(data.choices).toEqual([{ index: 0, message: { role: 'assistant', content: '[medium] You said: Hello', refusal: null }, logprobs: null, finish_reason: 'stop' }]);
    // "Be brief." is 3 tokens and "Hello" 2 in the demo's count; the reply is 4 words.
    expect(data.usage).toEqual({ prompt_tokens: 5, completion_tokens: 4, total_tokens: 9, prompt_tokens_details: { cached_tokens: 0 } });
    expect(data.id).toBe(`chatcmpl-${response.headers.get('x-request-id')}`);
    expect(response.headers.get('x-tollgate-budget-remaining')).toBe('9991');
    expect(response.headers.get('x-tollgate-budget-reset')).toBe('2026-11-29T23:00:00.000Z');
    expect(response.headers.get('x-tollgate-decision')).toBe('allow');
    expect(gw!.events.at(-1)).toMatchObject({ effect: 'allow', outcome: 'success', transport: 'openai' });
  });

  it('accepts a full model ref, a bare model id and text-part content', async () => {
    await start();
    const openai = client(KEYS.alice);
    const byRef = await openai.chat.completions.create({ model: 'demo/large', messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }] });
    expect(byRef.model).toBe('demo/large');
    expect(byRef.choices[0]!.message.content).toBe('[large] You said: Hi');
    const byId = await openai.chat.completions.create({ model: 'small', messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 2 });
    expect(byId.model).toBe('demo/small');
    expect(byId.choices[0]!.message.content).toBe('[small] You ');
    expect(byId.choices[0]!.finish_reason).toBe('length');
  });

  it('streams text chunks, a final usage chunk with no choices, then [DONE]', async () => {
    await start();
    const stream = await client(KEYS.alice).chat.completions.create({
      model: 'standard',
      messages: [{ role: 'user', content: 'Hello there' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? null)).toEqual(['', '[medium] ', 'You ', 'said: ', 'Hello ', 'there', null, null]);
    expect(chunks.every((c) => c.model === 'demo/medium')).toBe(true);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('stop');
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual({ prompt_tokens: 3, completion_tokens: 5, total_tokens: 8, prompt_tokens_details: { cached_tokens: 0 } });
    expect(gw!.events.at(-1)).toMatchObject({ effect: 'allow', outcome: 'success', transport: 'openai' });
  });

  it("gives a streamed answer's head the budgets as the call's own admission found them, with no read of its own", async () => {
    await start();
    await precharge(gw!, KEYS.alice, 100);
    const read = vi.spyOn(gw!.runtime.gateway.store, 'read');
    const { data: stream, response } = await client(KEYS.alice)
      .chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello there' }], stream: true })
      .withResponse();
    for await (const _ of stream) void _;
    // Before this call: 10,000 less the 100 charged earlier.
    expect(response.headers.get('x-tollgate-budget-remaining')).toBe('9900');
    expect(response.headers.get('x-tollgate-budget-reset')).toBe('2026-11-29T23:00:00.000Z');
    // No read: the reservation reported what the budget held (admission without the read,
    // src/pipeline/steps/decide.ts). The head once had a read of its own, the decision another.
    expect(read).toHaveBeenCalledTimes(0);
    expect(gw!.events.at(-1)).toMatchObject({ effect: 'allow', outcome: 'success', transport: 'openai' });
  });

  it('makes tier-down visible in the response model', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 8500); // 15% left, under the 20% threshold
    const r = await client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 20 });
    expect(r.model).toBe('demo/small');
    expect(r.choices[0]!.message.content).toBe('[small] You said: Hello');
  });

  it('refuses an exhausted budget with 429 insufficient_quota, as OpenAI does, and BUDGET_EXHAUSTED in the message and tollgate_code', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 10000);
    const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }] }));
    expect(err.status).toBe(429);
    expect(err.code).toBe('insufficient_quota');
    expect(err.type).toBe('insufficient_quota');
    expect((err.error as { tollgate_code: string }).tollgate_code).toBe('BUDGET_EXHAUSTED');
    expect(err.message).toBe('429 BUDGET_EXHAUSTED: Budget user-weekly (user alice) is exhausted; it resets at 2026-11-29T23:00:00.000Z.');
    expect(err.headers?.get('x-should-retry')).toBe('false');
    expect(err.headers?.get('x-tollgate-budget-remaining')).toBe('0');
    expect(err.headers?.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('refuses a streamed call on an exhausted budget with 429 before any chunk', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 10000);
    const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], stream: true }));
    expect(err.status).toBe(429);
    expect(err.code).toBe('insufficient_quota');
    expect((err.error as { tollgate_code: string }).tollgate_code).toBe('BUDGET_EXHAUSTED');
  });

  it('refuses a policy rule with 403 naming the rule message', async () => {
    await start();
    const err = await failure(client(KEYS.bob).chat.completions.create({ model: 'premium', messages: [{ role: 'user', content: 'Hello' }] }));
    expect(err.status).toBe(403);
    expect(err.code).toBe('POLICY_DENIED');
    expect(err.type).toBe('permission_error');
    expect(err.message).toBe('403 POLICY_DENIED: Contractors may use standard and economy models only.');
    expect(err.headers?.get('x-tollgate-budget-remaining')).toBe('10000');
  });

  it('refuses a body over the size limit with 413 PAYLOAD_TOO_LARGE in the OpenAI error shape', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW, maxBodyBytes: 1024 });
    const err = await failure(client(KEYS.alice).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'x'.repeat(2048) }] }));
    expect([err.status, err.code, err.type, err.message]).toEqual([413, 'PAYLOAD_TOO_LARGE', 'invalid_request_error', '413 PAYLOAD_TOO_LARGE: The request body exceeds 1024 bytes.']);
  });

  it('refuses an unknown key with 401 in the OpenAI error shape', async () => {
    await start();
    const err = await failure(client('not-a-key').chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }] }));
    expect(err.status).toBe(401);
    expect(err.error).toEqual({
      message: 'AUTH_INVALID: The API key is not recognised (unknown, revoked or disabled).',
      type: 'authentication_error',
      param: null,
      code: 'AUTH_INVALID',
      tollgate_code: 'AUTH_INVALID',
      details: {},
    });
  });

  it('reads the key after Bearer and any number of spaces, as RFC 9110 writes the header', async () => {
    await start();
    const body = JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }] });
    for (const authorization of [`Bearer  ${KEYS.alice}`, `bearer ${KEYS.alice}`]) {
      const res = await fetch(`${gw!.url}/v1/chat/completions`, { method: 'POST', headers: { authorization, 'content-type': 'application/json' }, body });
      expect([authorization, res.status]).toEqual([authorization, 200]);
    }
  });

  it('says a body that is JSON but not an object must be one, and one that is not JSON is not', async () => {
    await start();
    const answers = [];
    for (const body of ['null', '42', '"hello"', '{"model":']) {
      const res = await fetch(`${gw!.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' }, body });
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      answers.push([body, res.status, error.code, error.message]);
    }
    expect(answers).toEqual([
      ['null', 400, 'INVALID_REQUEST', 'INVALID_REQUEST: The body must be a JSON object.'],
      ['42', 400, 'INVALID_REQUEST', 'INVALID_REQUEST: The body must be a JSON object.'],
      ['"hello"', 400, 'INVALID_REQUEST', 'INVALID_REQUEST: The body must be a JSON object.'],
      ['{"model":', 400, 'INVALID_REQUEST', 'INVALID_REQUEST: The body is not valid JSON.'],
    ]);
  });

  it('refuses an unknown model, an over-ceiling max_tokens and stop sequences with 400', async () => {
    await start();
    const openai = client(KEYS.alice);
    const unknown = await failure(openai.chat.completions.create({ model: 'gpt-nope', messages: [{ role: 'user', content: 'Hello' }] }));
    expect([unknown.status, unknown.code, unknown.param]).toEqual([400, 'UNKNOWN_MODEL', 'model']);
    const big = await failure(openai.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 1_000_000 }));
    expect([big.status, big.code]).toEqual([400, 'INVALID_REQUEST']);
    expect(big.message).toBe('400 INVALID_REQUEST: Invalid arguments: max_tokens 1000000 exceeds the gateway ceiling of 32768.');
    // Named as the caller sent it: the cap's newer field.
    const bigCompletion = await failure(openai.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], max_completion_tokens: 1e9 }));
    expect([bigCompletion.status, bigCompletion.code]).toEqual([400, 'INVALID_REQUEST']);
    expect(bigCompletion.message).toBe('400 INVALID_REQUEST: Invalid arguments: max_completion_tokens 1000000000 exceeds the gateway ceiling of 32768.');
    const stop = await failure(openai.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], stop: ['\n'] }));
    expect([stop.status, stop.code, stop.param, stop.message]).toEqual([400, 'INVALID_REQUEST', 'stop', '400 INVALID_REQUEST: Invalid request: stop is not supported by tollgate.']);
  });

  it('takes an empty tools list as no tools, and refuses a tool it cannot honour', async () => {
    await start();
    const openai = client(KEYS.alice);
    const none = await openai.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], tools: [] });
    expect(none.choices[0]!.message.content).toBeTruthy();
    const tool = { type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: {} } } };
    const refused = await failure(openai.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], tools: [tool] }));
    expect([refused.status, refused.code, refused.param]).toEqual([400, 'INVALID_REQUEST', 'tools']);
  });

  it('refuses a JSON response format and an assistant tool call it cannot honour, and takes a text format and an empty tool call list', async () => {
    await start();
    const openai = client(KEYS.alice);
    const hello = [{ role: 'user' as const, content: 'Hello' }];
    const text = await openai.chat.completions.create({ model: 'standard', messages: hello, response_format: { type: 'text' } });
    expect(text.choices[0]!.message.content).toBeTruthy();
    for (const format of [{ type: 'json_object' as const }, { type: 'json_schema' as const, json_schema: { name: 'answer', schema: { type: 'object' } } }]) {
      const refused = await failure(openai.chat.completions.create({ model: 'standard', messages: hello, response_format: format }));
      expect([refused.status, refused.code, refused.param]).toEqual([400, 'INVALID_REQUEST', 'response_format']);
    }
    const empty = await openai.chat.completions.create({ model: 'standard', messages: [...hello, { role: 'assistant', content: 'Hi', tool_calls: [] }, ...hello] });
    expect(empty.choices[0]!.message.content).toBeTruthy();
    const call = { id: 'call_1', type: 'function' as const, function: { name: 'lookup', arguments: '{}' } };
    const refused = await failure(openai.chat.completions.create({ model: 'standard', messages: [...hello, { role: 'assistant', content: null, tool_calls: [call] }, ...hello] }));
    expect([refused.status, refused.code, refused.param]).toEqual([400, 'INVALID_REQUEST', 'messages.1.tool_calls']);
  });
});
