/**
 * Refusals the HTTP edge makes before any route (a browser Origin or a Host that is not allowed)
 * reach a caller of the OpenAI- or Anthropic-compatible endpoints in that API's error shape, with
 * the request id headers that name the refusal's decision event, so each official SDK raises its own
 * PermissionDeniedError and its request id leads to the event. They came in tollgate's own body (the
 * Host check's in JSON-RPC's) without a request id. And an `Expect` header other than 100-continue
 * is ignored, as RFC 9110 lets a server do: Node answered 417 on its own, and no event was left.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { sendRaw } from '../helpers/raw.js';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway(basicPolicy(), { env: { TOLLGATE_ALLOWED_HOSTS: 'ai.example.com' } });
});
afterAll(() => gw.close());

const EVIL = 'https://evil.example';

/** The decision event of request `id`, once recorded. */
async function eventOf(id: string | null | undefined) {
  expect(id).toBeTruthy();
  await gw.idle();
  const e = gw.events.find((x) => x['request.id'] === id);
  expect(e).toBeDefined();
  return e!;
}

describe('an Origin the gateway does not allow', () => {
  it('is refused to the OpenAI SDK as its PermissionDeniedError, with the request id of the event', async () => {
    const client = new OpenAI({ apiKey: KEYS.alice, baseURL: `${gw.url}/v1`, maxRetries: 0, defaultHeaders: { origin: EVIL } });
    const err = await client.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    const e = err as InstanceType<typeof OpenAI.PermissionDeniedError>;
    expect(e.status).toBe(403);
    expect(e.message).toContain(`FORBIDDEN: Origin ${EVIL} is not allowed to call this gateway.`);
    expect((e.error as { type?: string }).type).toBe('permission_error');
    expect(await eventOf(e.requestID)).toMatchObject({ 'error.code': 'FORBIDDEN', outcome: 'refused' });
  });

  it('is refused to the Anthropic SDK as its PermissionDeniedError, with the request id of the event', async () => {
    const client = new Anthropic({ apiKey: KEYS.alice, baseURL: gw.url, maxRetries: 0, defaultHeaders: { origin: EVIL } });
    const err = await client.messages.create({ model: 'standard', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.PermissionDeniedError);
    const e = err as InstanceType<typeof Anthropic.PermissionDeniedError>;
    expect(e.status).toBe(403);
    expect(e.error).toMatchObject({ type: 'error', error: { type: 'permission_error' } });
    expect(await eventOf(e.requestID)).toMatchObject({ 'error.code': 'FORBIDDEN' });
  });

  it('keeps tollgate\'s own body on /mcp, and gives it a request id too', async () => {
    const res = await sendRaw(gw.mcpUrl, { headers: { 'content-type': 'application/json', origin: EVIL, authorization: `Bearer ${KEYS.alice}` }, body: '{}' });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toEqual({ error: { code: 'FORBIDDEN', message: `Origin ${EVIL} is not allowed to call this gateway.`, details: {} } });
    expect(await eventOf(res.headers['x-request-id'] as string)).toMatchObject({ 'error.code': 'FORBIDDEN' });
  });
});

describe('a Host the gateway does not allow', () => {
  const send = (path: string, headers: Record<string, string>) =>
    sendRaw(gw.url, { path, headers: { 'content-type': 'application/json', host: 'evil.example', authorization: `Bearer ${KEYS.alice}`, ...headers }, body: JSON.stringify({ model: 'standard', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }) });

  it('is refused on /v1/chat/completions in the OpenAI shape', async () => {
    const res = await send('/v1/chat/completions', {});
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toMatchObject({ error: { type: 'permission_error', message: 'FORBIDDEN: Invalid Host: evil.example' } });
    expect(await eventOf(res.headers['x-request-id'] as string)).toMatchObject({ 'error.code': 'FORBIDDEN' });
  });

  it('is refused on /v1/messages in the Anthropic shape, with its request-id header', async () => {
    const res = await send('/v1/messages', { 'anthropic-version': '2023-06-01' });
    expect(res.status).toBe(403);
    const body = JSON.parse(res.text) as { type: string; error: { type: string; message: string }; request_id: string };
    expect(body).toMatchObject({ type: 'error', error: { type: 'permission_error', message: 'FORBIDDEN: Invalid Host: evil.example' } });
    expect(res.headers['request-id']).toBe(body.request_id);
    expect(await eventOf(body.request_id)).toMatchObject({ 'error.code': 'FORBIDDEN' });
  });

  it('keeps the MCP SDK\'s JSON-RPC answer on /mcp', async () => {
    const res = await send('/mcp', { accept: 'application/json, text/event-stream' });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32000, message: 'Invalid Host: evil.example' }, id: null });
  });
});

describe('an Expect header other than 100-continue', () => {
  it('is ignored: the call is served and recorded, where Node answered 417 and nothing was recorded', async () => {
    const before = gw.events.length;
    const res = await sendRaw(gw.url, {
      path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEYS.alice}`, expect: 'foo' },
      body: JSON.stringify({ model: 'standard', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(200);
    await gw.idle();
    expect(gw.events.slice(before).map((e) => [e['request.id'], e.outcome])).toEqual([[res.headers['x-request-id'], 'success']]);
  });
});
