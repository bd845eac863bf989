import Anthropic, { APIError } from '@anthropic-ai/sdk';
import { afterEach, describe, expect, it } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';
import { rejection } from '../helpers/rejection.js';

const NOW = Date.parse('2026-11-25T10:00:00Z'); // a Wednesday; the weekly budget resets Monday 00:00 Paris

async function precharge(gw: TestGateway, key: string, amount: number): Promise<void> {
  const g = gw.runtime.gateway;
  const lines = applicableLines(g.policy.budgets, keyPrincipal(g, key), NOW, 'tollgate:');
  await g.store.settle(`seed-${key}-${amount}`, lines.map((l) => ({ ...l.line, amount })));
}

const failure = (p: Promise<unknown>) => rejection<APIError>(p, APIError);

describe('Anthropic-compatible /v1/messages with @anthropic-ai/sdk', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  const start = async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    return gw;
  };
  // The SDK's base URL is the gateway root: it appends /v1/messages itself.
  const client = (key: string) => new Anthropic({ baseURL: gw!.url, apiKey: key, maxRetries: 0 });

  it('answers a plain call with the served model, exact usage and budget headers', async () => {
    await start();
    const { data, response } = await client(KEYS.alice)
      .messages.create({ model: 'standard', max_tokens: 50, system: 'Be brief.', messages: [{ role: 'user', content: 'Hello' }] })
      .withResponse();
    expect(data).toEqual({
      id: `msg_${response.headers.get('request-id')}`,
      type: 'message',
      role: 'assistant',
      model: 'demo/medium',
      content: [{ type: 'text', text: '[medium] You said: Hello' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 5, output_tokens: 4, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
    expect(response.headers.get('x-request-id')).toBe(response.headers.get('request-id'));
    expect(response.headers.get('x-tollgate-budget-remaining')).toBe('9991');
    expect(response.headers.get('x-tollgate-budget-reset')).toBe('2026-11-29T23:00:00.000Z');
    expect(gw!.events.at(-1)).toMatchObject({ effect: 'allow', outcome: 'success', transport: 'anthropic' });
  });

  it('streams with the SDK stream helper: text deltas, then the final message with usage', async () => {
    await start();
    const stream = client(KEYS.alice).messages.stream({ model: 'demo/large', max_tokens: 50, messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello there' }] }] });
    const deltas: string[] = [];
    stream.on('text', (d) => deltas.push(d));
    const final = await stream.finalMessage();
    expect(deltas).toEqual(['[large] ', 'You ', 'said: ', 'Hello ', 'there']);
    expect(final.model).toBe('demo/large');
    expect(final.content).toEqual([{ type: 'text', text: '[large] You said: Hello there' }]);
    expect(final.stop_reason).toBe('end_turn');
    expect(final.usage).toMatchObject({ input_tokens: 3, output_tokens: 5 });
  });

  it('reports max_tokens as the stop reason when the output hits the limit', async () => {
    await start();
    const r = await client(KEYS.alice).messages.create({ model: 'small', max_tokens: 2, messages: [{ role: 'user', content: 'Hi' }] });
    expect(r.content).toEqual([{ type: 'text', text: '[small] You ' }]);
    expect(r.stop_reason).toBe('max_tokens');
  });

  it('makes tier-down visible in the response model', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 8500);
    const r = await client(KEYS.alice).messages.create({ model: 'standard', max_tokens: 20, messages: [{ role: 'user', content: 'Hello' }] });
    expect(r.model).toBe('demo/small');
  });

  it('refuses an exhausted budget with 429 rate_limit_error carrying the code and reason', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 10000);
    const err = await failure(client(KEYS.alice).messages.create({ model: 'standard', max_tokens: 20, messages: [{ role: 'user', content: 'Hello' }] }));
    expect(err.status).toBe(429);
    expect(err.type).toBe('rate_limit_error');
    expect(err.apiMessage).toBe('BUDGET_EXHAUSTED: Budget user-weekly (user alice) is exhausted; it resets at 2026-11-29T23:00:00.000Z.');
    expect(err.details).toEqual({ error_code: 'BUDGET_EXHAUSTED', budgetId: 'user-weekly', resetsAt: '2026-11-29T23:00:00.000Z' });
    expect(err.headers?.get('x-tollgate-budget-remaining')).toBe('0');
  });

  it('refuses a streamed call on an exhausted budget with 429 before any event', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 10000);
    const stream = client(KEYS.alice).messages.stream({ model: 'standard', max_tokens: 20, messages: [{ role: 'user', content: 'Hello' }] });
    const err = await failure(stream.finalMessage());
    expect(err.status).toBe(429);
    expect(err.type).toBe('rate_limit_error');
  });

  it('refuses a policy rule with 403 permission_error naming the rule message', async () => {
    await start();
    const err = await failure(client(KEYS.bob).messages.create({ model: 'premium', max_tokens: 20, messages: [{ role: 'user', content: 'Hello' }] }));
    expect(err.status).toBe(403);
    expect(err.error).toEqual({
      type: 'error',
      error: { type: 'permission_error', message: 'POLICY_DENIED: Contractors may use standard and economy models only.', details: { error_code: 'POLICY_DENIED', ruleId: 'contractors-no-premium' } },
      request_id: err.requestID,
    });
  });

  it('refuses an unknown key with 401 authentication_error', async () => {
    await start();
    const err = await failure(client('not-a-key').messages.create({ model: 'standard', max_tokens: 20, messages: [{ role: 'user', content: 'Hello' }] }));
    expect(err.status).toBe(401);
    expect(err.type).toBe('authentication_error');
    expect(err.apiMessage).toBe('AUTH_INVALID: The API key is not recognised (unknown, revoked or disabled).');
  });

  it('accepts the key as x-api-key, as older SDKs send it', async () => {
    await start();
    const res = await fetch(`${gw!.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': KEYS.carol, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'economy', max_tokens: 20, messages: [{ role: 'user', content: 'Hi' }] }),
    });
    expect(res.status).toBe(200);
    expect((await res.json()).content).toEqual([{ type: 'text', text: '[small] You said: Hi' }]);
  });

  it('refuses a request without max_tokens with 400 invalid_request_error', async () => {
    await start();
    const res = await fetch(`${gw!.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEYS.alice}` },
      body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'Hi' }] }),
    });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toMatchObject({ type: 'invalid_request_error', details: { error_code: 'INVALID_REQUEST' } });
  });
});
