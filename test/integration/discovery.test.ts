/**
 * Discovery and dry runs with the official clients: GET /v1/models in the OpenAI shape (openai SDK)
 * and in the Anthropic shape (@anthropic-ai/sdk `models.list`, paginated), POST
 * /v1/messages/count_tokens (`messages.countTokens`), POST /v1/tollgate/estimate, and the 404 that
 * names the endpoint meant. Every dry run is authenticated and journaled and charges nothing.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
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

const openai = (key: string) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0 });
const anthropic = (key: string) => new Anthropic({ baseURL: gw.url, apiKey: key, maxRetries: 0 });
const used = async (key: string) => (await gw.runtime.gateway.myBudget(keyPrincipal(gw.runtime.gateway, key)))[0]!;

describe('GET /v1/models', () => {
  it('lists the tiers and models an employee may use, in the OpenAI list shape', async () => {
    const page = await openai(KEYS.alice).models.list();
    expect(page.data).toEqual([
      { id: 'premium', object: 'model', created: 0, owned_by: 'tollgate' },
      { id: 'standard', object: 'model', created: 0, owned_by: 'tollgate' },
      { id: 'economy', object: 'model', created: 0, owned_by: 'tollgate' },
      { id: 'demo/large', object: 'model', created: 0, owned_by: 'demo' },
      { id: 'demo/medium', object: 'model', created: 0, owned_by: 'demo' },
      { id: 'demo/small', object: 'model', created: 0, owned_by: 'demo' },
    ]);
  });

  it('leaves out a tier a rule closes to the caller, and its models', async () => {
    const page = await openai(KEYS.bob).models.list();
    expect(page.data.map((m) => m.id)).toEqual(['standard', 'economy', 'demo/medium', 'demo/small']);
  });

  it('answers the Anthropic SDK in its own shape, page by page', async () => {
    const client = anthropic(KEYS.alice);
    const first = await client.models.list({ limit: 4 });
    expect(first.data[0]).toEqual({ type: 'model', id: 'premium', display_name: 'premium (tier: demo/large)', created_at: '1970-01-01T00:00:00Z', max_tokens: null });
    expect(first.data[3]).toEqual({ type: 'model', id: 'demo/large', display_name: 'demo/large', created_at: '1970-01-01T00:00:00Z', max_tokens: 8192 });
    expect([first.has_more, first.first_id, first.last_id]).toEqual([true, 'premium', 'demo/large']);
    const all: string[] = [];
    for await (const m of client.models.list({ limit: 4 })) all.push(m.id);
    expect(all).toEqual(['premium', 'standard', 'economy', 'demo/large', 'demo/medium', 'demo/small']);
  });

  it('refuses an unknown key with 401, recorded', async () => {
    await expect(openai('not-a-key').models.list()).rejects.toMatchObject({ status: 401, code: 'AUTH_INVALID' });
    await expect(anthropic('not-a-key').models.list()).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
    expect(gw.events.at(-1)).toMatchObject({ outcome: 'refused', 'error.code': 'AUTH_INVALID', transport: 'anthropic' });
  });

  it('refuses a page size out of range with 400, recorded as the caller\'s', async () => {
    for (const limit of [0, 1001]) {
      const before = gw.events.length;
      const err = await anthropic(KEYS.alice).models.list({ limit }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.BadRequestError);
      const requestId = (err as InstanceType<typeof Anthropic.BadRequestError>).requestID;
      await gw.idle();
      expect(gw.events.slice(before)).toEqual([
        expect.objectContaining({ 'request.id': requestId, 'user.id': 'alice', transport: 'anthropic', 'error.code': 'INVALID_REQUEST', reason: 'Invalid request: limit must be an integer from 1 to 1000.' }),
      ]);
    }
  });
});

describe('POST /v1/messages/count_tokens', () => {
  it('counts the input for the model that would serve, journaled as a dry run that charges nothing', async () => {
    const before = await used(KEYS.carol);
    const { data, response } = await anthropic(KEYS.carol)
      .messages.countTokens({ model: 'standard', system: 'Be brief.', messages: [{ role: 'user', content: 'Hello there' }] })
      .withResponse();
    // The demo provider counts a token per 4 characters: 3 for the system prompt, 3 for the message.
    expect(data).toEqual({ input_tokens: 6 });
    expect(response.headers.get('x-tollgate-model')).toBe('demo/medium');
    expect(response.headers.get('x-tollgate-token-count')).toBe('exact');
    expect(await used(KEYS.carol)).toEqual(before);
    const e = gw.events.find((x) => x['request.id'] === response.headers.get('x-request-id'))!;
    expect(e).toMatchObject({ transport: 'anthropic', effect: 'allow', outcome: 'success', 'tollgate.dry_run': 'count_tokens', 'tollgate.token_count': { model: 'demo/medium', tokens: 6, exact: true } });
    expect([e['tollgate.charged'], e['tollgate.reserved'], e['gen_ai.usage.input_tokens']]).toEqual([undefined, undefined, 0]);
  });

  it('refuses what a policy rule refuses the call, with 403 and the rule', async () => {
    const err = await anthropic(KEYS.bob)
      .messages.countTokens({ model: 'premium', messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.PermissionDeniedError);
    expect((err as InstanceType<typeof Anthropic.PermissionDeniedError>).message).toContain('POLICY_DENIED: Contractors may use standard and economy models only.');
    expect(gw.events.at(-1)).toMatchObject({ 'tollgate.dry_run': 'count_tokens', effect: 'deny', outcome: 'refused', 'error.code': 'POLICY_DENIED', 'policy.rule_id': 'contractors-no-premium' });
  });

  it('records a count refused for its key as a dry run, which reports and refusal alerts leave out', async () => {
    const err = await anthropic('not-a-key')
      .messages.countTokens({ model: 'standard', messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.AuthenticationError);
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ 'tollgate.dry_run': 'count_tokens', outcome: 'refused', 'error.code': 'AUTH_INVALID', transport: 'anthropic' });
    const res = await fetch(`${gw.url}/v1/tollgate/estimate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'hi' }) });
    expect(res.status).toBe(401);
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ 'tollgate.dry_run': 'estimate', outcome: 'refused', 'error.code': 'AUTH_REQUIRED', transport: 'http' });
  });

  it('refuses a body that is not a Messages body with 400', async () => {
    const err = await anthropic(KEYS.carol)
      .messages.countTokens({ model: 'standard', messages: [] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect(gw.events.at(-1)).toMatchObject({ 'tollgate.dry_run': 'count_tokens', outcome: 'failed', 'error.code': 'INVALID_REQUEST' });
  });
});

describe('POST /v1/tollgate/estimate', () => {
  const estimate = (key: string, body: unknown) =>
    fetch(`${gw.url}/v1/tollgate/estimate`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('says what the call would get, without reserving or charging, then the call gets it', async () => {
    const g = gw.runtime.gateway;
    const lines = applicableLines(g.policy.budgets, keyPrincipal(g, KEYS.carol), NOW, 'tollgate:');
    await g.store.settle('seed-carol', lines.map((l) => ({ ...l.line, amount: 8500 }))); // 15% left: one tier down
    const res = await estimate(KEYS.carol, { model: 'standard', prompt: 'Hello', max_tokens: 20 });
    expect(res.status).toBe(200);
    const e = (await res.json()) as Record<string, unknown>;
    expect(e).toMatchObject({
      decision: { effect: 'tier_down', requestedTier: 'standard', tier: 'economy', budgetId: 'user-weekly' },
      model: 'demo/small',
      models: ['demo/small'],
      maxTokens: 20,
      inputTokens: { bound: expect.any(Number), counted: [{ model: 'demo/small', tokens: 2 }] },
      budgets: [expect.objectContaining({ id: 'user-weekly', remaining: 1500, reservation: expect.any(Number) })],
    });
    const b = (e.budgets as { remaining: number; reservation: number; remainingAfter: number }[])[0]!;
    expect(b.remainingAfter).toBe(b.remaining - b.reservation);
    const cost = e.costUsd as { min: number; max: number };
    expect(cost.min).toBe((2 * 1) / 1e6); // "Hello": 2 tokens at $1 per million, no output
    expect(gw.events.at(-1)).toMatchObject({ transport: 'http', 'tollgate.dry_run': 'estimate', effect: 'tier_down', outcome: 'success' });

    const { data: r, response } = await openai(KEYS.carol).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 20 }).withResponse();
    expect(r.model).toBe('demo/small');
    expect(response.headers.get('x-tollgate-decision')).toBe('tier_down');
    await gw.idle();
    const call = gw.events.find((x) => x['request.id'] === response.headers.get('x-request-id'))!;
    expect(call['tollgate.cost_usd']).toBeGreaterThanOrEqual(cost.min);
    expect(call['tollgate.cost_usd']).toBeLessThanOrEqual(cost.max);
    expect((await used(KEYS.carol)).remaining).toBeGreaterThanOrEqual(b.remainingAfter);
  });

  it('answers a refusal the call would meet as the estimate, and refuses only what stops the estimate itself', async () => {
    const denied = await estimate(KEYS.bob, { tier: 'premium', prompt: 'hi' });
    expect(denied.status).toBe(200);
    expect(((await denied.json()) as { decision: unknown }).decision).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'contractors-no-premium' });
    const bad = await estimate(KEYS.bob, { prompt: 'hi', max_tokens: 'many' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('INVALID_REQUEST');
    const anon = await fetch(`${gw.url}/v1/tollgate/estimate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"hi"}' });
    expect(anon.status).toBe(401);
    expect(anon.headers.get('www-authenticate')).toMatch(/^Bearer /);
  });

  it('refuses a body that is not JSON after authenticating, recorded as the caller\'s', async () => {
    const res = await fetch(`${gw.url}/v1/tollgate/estimate`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' }, body: '{nope' });
    expect(res.status).toBe(400);
    expect(gw.events.at(-1)).toMatchObject({ 'user.id': 'alice', 'tollgate.dry_run': 'estimate', 'error.code': 'INVALID_REQUEST' });
  });
});

describe('an unknown path', () => {
  it('names the endpoint meant', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completion`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(404);
    const { error } = (await res.json()) as { error: { code: string; message: string; details: { suggestion: string } } };
    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toContain('Did you mean POST /v1/chat/completions?');
    expect(error.details.suggestion).toBe('/v1/chat/completions');
    const get = await fetch(`${gw.url}/v1/messages`, { headers: { authorization: `Bearer ${KEYS.alice}` } });
    expect(get.status).toBe(404);
    expect(((await get.json()) as { error: { message: string } }).error.message).toContain('/v1/messages takes POST, not GET.');
  });
});
