/**
 * Hostile input on the HTTP and stdio transports: whatever bytes arrive, the gateway answers with a
 * status and a code, never a 500, a hang or a crash, and keeps serving the next caller.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';
import { parseRawResponse, rpcMessages, sendOnSocket, sendRaw, type RawRequest, type RawResponse } from '../helpers/raw.js';

const LIMIT = 1024 * 1024;
const PROTOCOL = '2025-11-25';
const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'hostile', version: '1' } } };
const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const AUTH = { authorization: `Bearer ${KEYS.alice}` };

let gw: TestGateway;

/** Resolves once `check` holds (a refusal recorded after its answer left), or fails after 5 s. */
async function waitFor(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** POSTs to /mcp; `headers` override the JSON defaults. */
function post(body: unknown, headers: Record<string, string> = {}, extra: Partial<RawRequest> = {}): Promise<RawResponse> {
  const raw = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  return sendRaw(gw.mcpUrl, { headers: { ...JSON_HEADERS, ...AUTH, ...headers }, body: raw, ...extra });
}

/** Opens a session by hand and returns the headers every later request needs. */
async function openSession(): Promise<Record<string, string>> {
  const init = await post(INIT);
  expect(init.status).toBe(200);
  const session = { 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': PROTOCOL };
  expect((await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, session)).status).toBe(202);
  return session;
}

const callTool = (id: number, args: unknown, name = 'complete') => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });
const sessionCount = async () => ((await (await fetch(`${gw.url}/healthz`)).json()) as { sessions: number }).sessions;
const errorOf = (res: RawResponse) => (JSON.parse(res.text) as { error: { code: string | number; message: string } }).error;

/** A real MCP client completes a call and /healthz answers: the gateway is still serving. */
async function expectStillServing(target: TestGateway = gw): Promise<void> {
  const client = await connectHttp(target.mcpUrl, KEYS.alice);
  const r = await client.callTool({ name: 'complete', arguments: { prompt: 'still there?', max_tokens: 10 } });
  expect(r.isError).toBeFalsy();
  await client.close();
  const health = await fetch(`${target.url}/healthz`);
  expect(health.status).toBe(200);
}

beforeAll(async () => {
  gw = await startTestGateway(basicPolicy({ userTokens: 10_000_000 }), { maxBodyBytes: LIMIT });
});
afterAll(() => gw.close());

describe('malformed JSON-RPC', () => {
  it.each([
    ['a number', '42'],
    ['a string', '"tools/list"'],
    ['null', 'null'],
    ['truncated JSON', '{"jsonrpc":"2.0","id":1,'],
    ['bare words', 'tools/list please'],
  ])('answers 400 with JSON-RPC -32700 for a body that is %s', async (_what, body) => {
    const res = await post(body);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32700, message: 'Parse error: the body is not valid JSON.' }, id: null });
  });

  it('answers 400 -32000 to a first message that is not initialize', async () => {
    for (const body of ['', {}, { jsonrpc: '2.0', id: 1 }, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, [1, 2, 3], [INIT]]) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32000, message: 'No mcp-session-id header: send initialize first.' }, id: null });
    }
  });

  it('answers 400 -32700 to an initialize that is not valid JSON-RPC, and opens no session', async () => {
    const before = await sessionCount();
    for (const body of [{ id: 1, method: 'initialize', params: INIT.params }, { ...INIT, jsonrpc: '1.0' }, { ...INIT, id: null }, { ...INIT, extra: 1 }]) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32700, message: 'Parse error: Invalid JSON-RPC message' }, id: null });
    }
    expect(await sessionCount()).toBe(before);
  });

  it('answers 400 -32700 in a session to messages without jsonrpc or method, with wrong id types, or a batch of garbage', async () => {
    const session = await openSession();
    const bad = [
      { id: 2, method: 'tools/list' },
      { jsonrpc: '2.0', id: 2 },
      { jsonrpc: '2.0', id: { nested: true }, method: 'tools/list' },
      { jsonrpc: '2.0', id: [1], method: 'tools/list' },
      { jsonrpc: '2.0', id: true, method: 'tools/list' },
      { jsonrpc: '2.0', id: 1.5, method: 'tools/list' },
      { jsonrpc: '2.0', id: null, method: 'tools/list' },
      { jsonrpc: '2.0', id: 2, method: 42 },
      [1, 'two', null, {}],
      [{ jsonrpc: '2.0', id: 3, method: 'tools/list' }, 'garbage'],
    ];
    for (const body of bad) {
      const res = await post(body, session);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(errorOf(res)).toEqual({ code: -32700, message: 'Parse error: Invalid JSON-RPC message' });
    }
    await expectStillServing();
  });

  it('answers an unknown method with JSON-RPC -32601 and keeps the session usable', async () => {
    const session = await openSession();
    const res = await post({ jsonrpc: '2.0', id: 7, method: 'tools/explode', params: {} }, session);
    expect(res.status).toBe(200);
    expect(rpcMessages(res)).toEqual([{ jsonrpc: '2.0', id: 7, error: { code: -32601, message: 'Method not found' } }]);
    const list = await post({ jsonrpc: '2.0', id: 8, method: 'tools/list' }, session);
    expect((rpcMessages(list)[0] as { result: { tools: { name: string }[] } }).result.tools.map((t) => t.name)).toEqual(['complete', 'estimate', 'list_models', 'my_budget']);
  });

  it('answers an unsupported MCP-Protocol-Version header with 400 -32000', async () => {
    const session = await openSession();
    const res = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, { ...session, 'mcp-protocol-version': '1999-01-01' });
    expect(res.status).toBe(400);
    expect(errorOf(res).code).toBe(-32000);
    expect(errorOf(res).message).toMatch(/^Bad Request: Unsupported protocol version: 1999-01-01/);
  });

  it('answers an unknown or oversized session id with 404 -32001', async () => {
    for (const sid of ['nope', 'x'.repeat(8000)]) {
      const res = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, { 'mcp-session-id': sid, 'mcp-protocol-version': PROTOCOL });
      expect(res.status).toBe(404);
      expect(errorOf(res)).toEqual({ code: -32001, message: 'Session not found; initialize a new one.' });
    }
  });

  it('answers other methods on /mcp with 405 and Allow, and unknown paths with 404 NOT_FOUND', async () => {
    for (const method of ['PUT', 'PATCH']) {
      const res = await sendRaw(gw.mcpUrl, { method, headers: { ...JSON_HEADERS, ...AUTH }, body: JSON.stringify(INIT) });
      expect(res.status).toBe(405);
      expect(res.headers.allow).toBe('POST, DELETE');
      expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null });
    }
    for (const path of ['/nope', '/../../etc/passwd', '/mcp/extra', '/%00']) {
      const res = await sendRaw(gw.url, { method: 'GET', path });
      expect(res.status, path).toBe(404);
      const { error } = JSON.parse(res.text) as { error: { code: string; message: string; details: { endpoints: string[]; suggestion?: string } } };
      expect(error.code).toBe('NOT_FOUND');
      expect(error.message).toMatch(/^There is no GET \/\S* on this gateway\. Served: POST\|GET\|DELETE \/mcp, POST \/v1\/chat\/completions, /);
      expect(error.details.endpoints).toContain('/mcp');
      expect(error.details.suggestion).toBeUndefined();
    }
  });

  it('refuses a batch larger than the transport allows with -32600', async () => {
    const session = await openSession();
    const batch = Array.from({ length: 1001 }, (_, i) => ({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: i, progress: 1 } }));
    const res = await post(batch, session);
    expect(res.status).toBe(400);
    expect(errorOf(res).code).toBe(-32600);
    await expectStillServing();
  });

  it('refuses a batch that repeats a request id with -32600 and runs none of its calls, streamed or not', async () => {
    const session = await openSession();
    const progress = (id: number, prompt: string) => ({ ...callTool(id, { prompt, max_tokens: 5 }), params: { ...callTool(id, { prompt, max_tokens: 5 }).params, _meta: { progressToken: id } } });
    for (const batch of [
      [callTool(30, { prompt: 'one', max_tokens: 5 }), callTool(30, { prompt: 'two', max_tokens: 5 })],
      [progress(31, 'one'), progress(31, 'two')],
      [{ jsonrpc: '2.0', id: 'x', method: 'tools/list' }, callTool(32, { prompt: 'one', max_tokens: 5 }), { jsonrpc: '2.0', id: 'x', method: 'tools/list' }],
    ]) {
      const before = gw.events.length;
      const res = await post(batch, session);
      expect(res.status, JSON.stringify(batch)).toBe(400);
      const repeated = JSON.stringify(batch[0]!.id);
      expect(errorOf(res)).toEqual({ code: -32600, message: `Invalid Request: the request id ${repeated} appears more than once in the batch` });
      await gw.idle();
      // One edge refusal for the POST; no call ran, so nothing was charged.
      expect(gw.events.slice(before).map((e) => [e['error.code'], e['tollgate.charged']])).toEqual([['INVALID_REQUEST', undefined]]);
    }
    await expectStillServing();
  });
});

describe('content types and Accept', () => {
  const initBody = JSON.stringify(INIT);
  it.each([
    ['text/plain', { 'content-type': 'text/plain' }],
    ['a form', { 'content-type': 'application/x-www-form-urlencoded' }],
    ['multipart', { 'content-type': 'multipart/form-data; boundary=x' }],
    ['no content type', { 'content-type': '' }],
  ])('answers 415 with -32000 to %s, with or without a session', async (_what, headers) => {
    const session = await openSession();
    for (const extra of [{}, session]) {
      const res = await post(initBody, { ...headers, ...extra });
      expect(res.status).toBe(415);
      expect(errorOf(res)).toEqual({ code: -32000, message: 'Unsupported Media Type: Content-Type must be application/json' });
    }
  });

  it('accepts application/json with a utf-8 charset', async () => {
    const res = await post(initBody, { 'content-type': 'application/json; charset=utf-8' });
    expect(res.status).toBe(200);
    expect(res.headers['mcp-session-id']).toBeTruthy();
  });

  it('refuses a charset JSON does not allow with 400 INVALID_REQUEST naming it', async () => {
    const res = await post(initBody, { 'content-type': 'application/json; charset=latin1' });
    expect(res.status).toBe(400);
    expect(errorOf(res)).toEqual({ code: 'INVALID_REQUEST', message: 'The request could not be read: unsupported charset "LATIN1".', details: {} });
  });

  it.each([
    ['/v1/chat/completions', 'openai', { model: 'standard', messages: [{ role: 'user', content: 'hi' }] }],
    ['/v1/responses', 'openai', { model: 'standard', input: 'hi' }],
    ['/v1/messages', 'anthropic', { model: 'standard', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }],
    ['/v1/messages/count_tokens', 'anthropic', { model: 'standard', messages: [{ role: 'user', content: 'hi' }] }],
    ['/v1/tollgate/estimate', 'http', { prompt: 'hi' }],
  ])('refuses a body on %s that is not sent as JSON with 400 INVALID_REQUEST naming its type, recorded as the caller\'s', async (path, transport, body) => {
    for (const [type, named] of [['text/plain', 'it was sent as text/plain'], ['application/x-www-form-urlencoded', 'it was sent as application/x-www-form-urlencoded'], ['', 'it was sent without one']]) {
      const before = gw.events.length;
      const res = await sendRaw(gw.url, { path, headers: { ...AUTH, 'content-type': type! }, body: JSON.stringify(body) });
      expect(res.status, type).toBe(400);
      expect(res.text, type).toContain(`The request body must be JSON, sent with Content-Type: application/json (${named}).`);
      await gw.idle();
      expect(gw.events.slice(before).map((e) => [e.transport, e['error.code'], e['user.id']]), type).toEqual([[transport, 'INVALID_REQUEST', 'alice']]);
    }
  });

  it.each([
    ['text/html', { accept: 'text/html' }],
    ['JSON only', { accept: 'application/json' }],
    ['no Accept', { accept: '' }],
  ])('answers 406 with -32000 when the client accepts %s', async (_what, headers) => {
    const res = await post(initBody, headers);
    expect(res.status).toBe(406);
    expect(errorOf(res)).toEqual({ code: -32000, message: 'Not Acceptable: Client must accept both application/json and text/event-stream' });
    await expectStillServing();
  });
});

describe('body size', () => {
  /** A tools/list request of exactly `size` bytes, padded in `_meta`. */
  function listOfSize(size: number): string {
    const base = JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list', params: { _meta: { pad: '' } } });
    return base.replace('"pad":""', `"pad":"${'x'.repeat(size - base.length)}"`);
  }
  const tooLarge = { error: { code: 'PAYLOAD_TOO_LARGE', message: `The request body exceeds ${LIMIT} bytes.`, details: {} } };

  it('accepts a body of exactly the limit', async () => {
    const session = await openSession();
    const body = listOfSize(LIMIT);
    expect(Buffer.byteLength(body)).toBe(LIMIT);
    const res = await post(body, session);
    expect(res.status).toBe(200);
    expect((rpcMessages(res)[0] as { result: { tools: unknown[] } }).result.tools).toHaveLength(4);
  });

  it('refuses one byte over the limit with 413 PAYLOAD_TOO_LARGE when Content-Length announces it', async () => {
    const session = await openSession();
    const res = await post(listOfSize(LIMIT + 1), session);
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text)).toEqual(tooLarge);
  });

  it('refuses a chunked body without Content-Length once it passes the limit', async () => {
    const session = await openSession();
    const chunks = Array.from({ length: 80 }, () => Buffer.alloc(16 * 1024, 0x20));
    const res = await sendRaw(gw.mcpUrl, { headers: { ...JSON_HEADERS, ...AUTH, ...session }, chunks: ['{"jsonrpc":"2.0","id":1,"method":"tools/list",', ...chunks, '"x":1}'] });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text)).toEqual(tooLarge);
  });

  it('refuses a gzip body that inflates past the limit (a zip bomb) with 413', async () => {
    const bomb = gzipSync(Buffer.alloc(20 * LIMIT, 0x20));
    expect(bomb.length).toBeLessThan(LIMIT / 10);
    const res = await post(bomb, { 'content-encoding': 'gzip' });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text)).toEqual(tooLarge);
  });

  it('refuses a body that is not what its Content-Encoding says, or an unknown encoding, with 400 INVALID_REQUEST', async () => {
    const garbled = await post('not gzip at all', { 'content-encoding': 'gzip' });
    expect([garbled.status, errorOf(garbled)]).toEqual([400, { code: 'INVALID_REQUEST', message: 'The request could not be read: incorrect header check.', details: {} }]);
    const unknown = await post(JSON.stringify(INIT), { 'content-encoding': 'compress' });
    expect([unknown.status, errorOf(unknown)]).toEqual([400, { code: 'INVALID_REQUEST', message: 'The request could not be read: unsupported content encoding "compress".', details: {} }]);
  });

  it('refuses an oversized first request before any session exists, and keeps serving', async () => {
    const before = await sessionCount();
    const res = await post({ ...INIT, params: { ...INIT.params, pad: 'x'.repeat(LIMIT) } });
    expect(res.status).toBe(413);
    expect(await sessionCount()).toBe(before);
    await expectStillServing();
  });
});

describe('deep nesting', () => {
  const DEPTH = 100_000;
  const arrays = '['.repeat(DEPTH) + ']'.repeat(DEPTH);
  const objects = '{"a":'.repeat(DEPTH) + '1' + '}'.repeat(DEPTH);
  const toolCall = (id: number, argsJson: string) => `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"complete","arguments":${argsJson}}}`;
  const toolError = (res: RawResponse) => {
    const msg = rpcMessages(res)[0] as { result: { isError: boolean; _meta: Record<string, { code: string; message: string }> } };
    expect(msg.result.isError).toBe(true);
    return msg.result._meta['io.tollgate/error']!;
  };

  it.each([
    ['an extra argument', (deep: string) => `{"prompt":"hi","deep":${deep}}`, 'Unrecognized key: "deep"'],
    ['the prompt', (deep: string) => `{"prompt":${deep}}`, 'prompt: '],
    ['a message', (deep: string) => `{"messages":[${deep}]}`, 'messages.0: '],
  ])('refuses 100k nested arrays and objects in %s as INVALID_REQUEST', async (_where, wrap, named) => {
    const session = await openSession();
    for (const deep of [arrays, objects]) {
      const res = await post(toolCall(4, wrap(deep)), session);
      expect(res.status).toBe(200);
      const err = toolError(res);
      expect(err.code).toBe('INVALID_REQUEST');
      expect(err.message).toContain(named);
    }
  });

  it('refuses 100k nested arrays as a JSON-RPC id or as the whole body with -32700', async () => {
    const session = await openSession();
    for (const body of [`{"jsonrpc":"2.0","id":${arrays},"method":"tools/list"}`, arrays, objects]) {
      const res = await post(body, session);
      expect(res.status).toBe(400);
      expect(errorOf(res)).toEqual({ code: -32700, message: 'Parse error: Invalid JSON-RPC message' });
    }
    await expectStillServing();
  });
});

describe('invalid UTF-8', () => {
  const notUtf8 = { error: { code: 'INVALID_REQUEST', message: 'The request body is not valid UTF-8.', details: {} } };
  const withBytes = (bytes: number[]) =>
    Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"complete","arguments":{"prompt":"a'), Buffer.from(bytes), Buffer.from('b"}}}')]);

  it.each([
    ['a stray 0xff byte', [0xff]],
    ['a truncated sequence', [0xe2, 0x82]],
    ['an overlong encoding of "/"', [0xc0, 0xaf]],
    ['an encoded UTF-16 surrogate', [0xed, 0xa0, 0x80]],
  ])('refuses a body with %s inside a string with 400 INVALID_REQUEST', async (_what, bytes) => {
    const session = await openSession();
    const res = await post(withBytes(bytes), session);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual(notUtf8);
  });

  it('refuses invalid bytes before any session exists', async () => {
    const res = await post(Buffer.concat([Buffer.from(JSON.stringify(INIT).slice(0, -1)), Buffer.from([0xfe, 0xff]), Buffer.from('}')]));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual(notUtf8);
  });

  it('serves a prompt in valid multi-byte UTF-8 unchanged', async () => {
    const session = await openSession();
    const res = await post(Buffer.from(JSON.stringify(callTool(6, { prompt: 'héllo ✓ 😀', max_tokens: 20 })), 'utf8'), session);
    const msg = rpcMessages(res)[0] as { result: { isError?: boolean; structuredContent: { text: string } } };
    expect(msg.result.isError).toBeUndefined();
    expect(msg.result.structuredContent.text).toContain('héllo ✓ 😀');
    await expectStillServing();
  });
});

describe('tool arguments', () => {
  let client: Client;
  beforeAll(async () => {
    client = await connectHttp(gw.mcpUrl, KEYS.alice);
  });
  afterAll(() => client.close());

  /** Calls `complete` and returns the refusal carried in `_meta`. */
  async function refusal(args: unknown): Promise<{ code: string; message: string }> {
    const r = await client.callTool({ name: 'complete', arguments: args as Record<string, unknown> });
    expect(r.isError).toBe(true);
    return (r._meta as Record<string, { code: string; message: string }>)['io.tollgate/error']!;
  }

  it('answers an unknown tool with JSON-RPC -32602 naming it, and records the refusal as the caller\'s', async () => {
    const session = await openSession();
    for (const name of ['drop_tables', '', '__proto__', 'complete\u0000']) {
      const before = gw.events.length;
      const res = await post(callTool(10, {}, name), session);
      expect(res.status).toBe(200);
      const [msg] = rpcMessages(res) as { error: { code: number; message: string } }[];
      expect(msg!.error.code).toBe(-32602);
      expect(msg!.error.message).toContain(`Unknown tool: ${name}`);
      await waitFor(() => gw.events.length > before);
      const events = gw.events.slice(before);
      expect(events.map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([['http', 'INVALID_REQUEST', 'alice']]);
      expect(String(events[0]!.reason)).toContain('Unknown tool');
    }
  });

  it('answers tools/call params without a tool name with -32602 (not an internal error) in one line, and records the refusal as the caller\'s', async () => {
    const session = await openSession();
    const cases: [unknown, string][] = [
      [undefined, 'params: '],
      [{}, 'params.name: '],
      [{ name: 5, arguments: { prompt: 'hi' } }, 'params.name: '],
    ];
    for (const [params, says] of cases) {
      const before = gw.events.length;
      const res = await post({ jsonrpc: '2.0', id: 12, method: 'tools/call', ...(params === undefined ? {} : { params }) }, session);
      expect(res.status).toBe(200);
      const [msg] = rpcMessages(res) as { error: { code: number; message: string } }[];
      expect(msg!.error.code).toBe(-32602);
      expect(msg!.error.message).toContain(`Invalid params: ${says}`);
      expect(msg!.error.message).not.toContain('\n');
      await waitFor(() => gw.events.length > before);
      const events = gw.events.slice(before);
      expect(events.map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([['http', 'INVALID_REQUEST', 'alice']]);
      expect(String(events[0]!.reason)).toContain(`Invalid tools/call params: ${says}`);
    }
  });

  it('keeps a refusal\'s event small whatever the caller names: a model, tier or tool name of 100,000 characters', async () => {
    const long = 'm'.repeat(100_000);
    for (const args of [{ prompt: 'hi', model: long }, { prompt: 'hi', tier: long }]) {
      const before = gw.events.length;
      const err = await refusal(args);
      expect(err.code).toBe('INVALID_REQUEST');
      expect(err.message.length).toBeLessThan(1000);
      await waitFor(() => gw.events.length > before);
      expect(JSON.stringify(gw.events.slice(before)).length).toBeLessThan(4000);
    }
    const session = await openSession();
    const before = gw.events.length;
    const res = await post(callTool(11, {}, long), session);
    const [msg] = rpcMessages(res) as { error: { code: number } }[];
    expect(msg!.error.code).toBe(-32602);
    await waitFor(() => gw.events.length > before);
    expect(JSON.stringify(gw.events.slice(before)).length).toBeLessThan(4000);
  });

  it.each([
    ['a number as prompt', { prompt: 42 }, 'prompt: Invalid input: expected string, received number'],
    ['an array as prompt', { prompt: ['hi'] }, 'prompt: Invalid input: expected string, received array'],
    ['an empty prompt', { prompt: '' }, 'prompt: '],
    ['max_tokens as a string', { prompt: 'hi', max_tokens: '100' }, 'max_tokens: Invalid input: expected number, received string'],
    ['max_tokens "NaN"', { prompt: 'hi', max_tokens: 'NaN' }, 'max_tokens: '],
    ['a negative max_tokens', { prompt: 'hi', max_tokens: -1 }, 'max_tokens: '],
    ['a zero max_tokens', { prompt: 'hi', max_tokens: 0 }, 'max_tokens: '],
    ['a fractional max_tokens', { prompt: 'hi', max_tokens: 1.5 }, 'max_tokens: '],
    ['a null max_tokens', { prompt: 'hi', max_tokens: null }, 'max_tokens: '],
    ['max_tokens past the safe integers', { prompt: 'hi', max_tokens: 2 ** 60 }, 'max_tokens: '],
    ['max_tokens over the ceiling', { prompt: 'hi', max_tokens: 1_000_000 }, 'max_tokens 1000000 exceeds the gateway ceiling of 32768'],
    ['a temperature out of range', { prompt: 'hi', temperature: 3 }, 'temperature: '],
    ['a temperature as a string', { prompt: 'hi', temperature: 'hot' }, 'temperature: '],
    ['messages as a string', { messages: 'hi' }, 'messages: '],
    ['no messages at all', { messages: [] }, 'messages: '],
    ['a system role message', { messages: [{ role: 'system', content: 'obey' }] }, 'messages.0.role: '],
    ['a numeric message content', { messages: [{ role: 'user', content: 5 }] }, 'messages.0.content: '],
    ['an extra key in a message', { messages: [{ role: 'user', content: 'x', name: 'y' }] }, 'Unrecognized key: "name"'],
    ['a numeric model', { prompt: 'hi', model: 7 }, 'model: '],
    ['an array as tier', { prompt: 'hi', tier: ['premium'] }, 'tier: '],
    ['an extra field', { prompt: 'hi', stream: true }, 'Unrecognized key: "stream"'],
    ['prompt and messages together', { prompt: 'hi', messages: [{ role: 'user', content: 'x' }] }, 'give messages or prompt, not both'],
    ['no arguments', {}, 'give messages or prompt'],
  ])('refuses %s as INVALID_REQUEST naming the field', async (_what, args, named) => {
    const err = await refusal(args);
    expect(err.code).toBe('INVALID_REQUEST');
    expect(err.message).toContain(named);
  });

  it.each([
    ['a string', 'hello', '(arguments): Invalid input: expected object, received string'],
    ['an array', ['hello'], '(arguments): Invalid input: expected object, received array'],
    ['a number', 5, '(arguments): Invalid input: expected object, received number'],
    ['null', null, 'give messages or prompt'],
  ])('refuses tools/call arguments that are %s as a recorded INVALID_REQUEST, not an internal error', async (_what, args, named) => {
    const session = await openSession();
    for (const [i, tool] of ['complete', 'estimate'].entries()) {
      const before = gw.events.length;
      const res = await post(callTool(40 + i, args, tool), session);
      expect(res.status).toBe(200);
      const [msg] = rpcMessages(res) as { result: { isError: boolean; _meta: Record<string, { code: string; message: string }> } }[];
      expect(msg!.result.isError, tool).toBe(true);
      expect(msg!.result._meta['io.tollgate/error']!.code).toBe('INVALID_REQUEST');
      expect(msg!.result._meta['io.tollgate/error']!.message).toContain(named);
      await gw.idle();
      expect(gw.events.slice(before).map((e) => e['error.code'])).toEqual(['INVALID_REQUEST']);
    }
    for (const tool of ['list_models', 'my_budget']) {
      const [msg] = rpcMessages(await post(callTool(42, args, tool), session)) as { error: { code: number; message: string } }[];
      expect(msg!.error).toEqual({ code: -32602, message: 'MCP error -32602: Invalid params: tools/call arguments must be an object.' });
    }
  });

  it('refuses constructor and nested __proto__ keys, naming them, without polluting Object.prototype', async () => {
    const hostile = [
      ['{"prompt":"hi","constructor":{"prototype":{"polluted":"yes"}}}', '(arguments): Unrecognized key: "constructor"'],
      ['{"messages":[{"role":"user","content":"x","__proto__":{"polluted":"yes"}}]}', 'messages.0: Unrecognized key: "__proto__"'],
    ] as const;
    for (const [text, named] of hostile) {
      const err = await refusal(JSON.parse(text));
      expect(err.code).toBe('INVALID_REQUEST');
      expect(err.message).toContain(named);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('drops a top-level __proto__ key in arguments before tollgate sees it (the SDK request schema), and pollutes nothing', async () => {
    const session = await openSession();
    const body = (id: number, params: string) => `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":${params}}`;
    const res = await post(body(11, '{"name":"complete","arguments":{"prompt":"hi","max_tokens":5,"__proto__":{"max_tokens":999999,"polluted":"yes"}}}'), session);
    const [msg] = rpcMessages(res) as { result: { isError?: boolean; structuredContent: { usage: { outputTokens: number } } } }[];
    expect(msg!.result.isError).toBeUndefined();
    expect(msg!.result.structuredContent.usage.outputTokens).toBeLessThanOrEqual(5);
    const around = await post(body(12, '{"name":"list_models","arguments":{},"__proto__":{"polluted":"yes"},"_meta":{"__proto__":{"polluted":"yes"}}}'), session);
    expect(around.status).toBe(200);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  it('refuses non-finite numbers sent as raw JSON (1e400 parses to Infinity)', async () => {
    const session = await openSession();
    const res = await post('{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"complete","arguments":{"prompt":"hi","max_tokens":1e400}}}', session);
    const msg = rpcMessages(res)[0] as { result: { isError: boolean; _meta: Record<string, { code: string; message: string }> } };
    expect(msg.result.isError).toBe(true);
    expect(msg.result._meta['io.tollgate/error']).toMatchObject({ code: 'INVALID_REQUEST' });
    expect(msg.result._meta['io.tollgate/error']!.message).toContain('max_tokens: ');
    await expectStillServing();
  });
});

describe('header injection and malformed HTTP', () => {
  const port = () => new URL(gw.url).port;
  const get = (headerLines: string) => `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\n${headerLines}Connection: close\r\n\r\n`;
  const badRequest = { error: { code: 'INVALID_REQUEST', message: 'The request is not valid HTTP/1.1.', details: {} } };

  it.each([
    ['a bare CR inside a header value', () => get('X-Note: a\rSet-Cookie: session=stolen\r\n')],
    ['a bare LF inside a header value', () => get('X-Note: a\nSet-Cookie: session=stolen\r\n')],
    ['a NUL byte inside a header value', () => get('X-Note: a\u0000b\r\n')],
    ['a space before the colon', () => get('X-Note : a\r\n')],
    ['a header name with a bracket', () => get('X(Note): a\r\n')],
    ['both Content-Length and chunked framing', () => `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['two different Content-Length values', () => `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`],
    ['a garbled request line', () => 'GET /healthz HTTP/1.1 extra\r\n\r\n'],
  ])('answers %s with 400 INVALID_REQUEST and closes the connection', async (_what, request) => {
    const answer = parseRawResponse(await sendOnSocket(gw.url, request()));
    expect(answer.status).toBe(400);
    expect(answer.body).toEqual(badRequest);
    expect(answer.headers).not.toMatch(/set-cookie/i);
  });

  it('leaves an HTTP/1.1 request without Host to Node, which answers 400 as RFC 9112 requires', async () => {
    const raw = await sendOnSocket(gw.url, 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n');
    expect(parseRawResponse(raw).status).toBe(400);
    expect(raw).toMatch(/\r\nConnection: close\r\n/i);
  });

  it('answers a malformed request after an answered one on the same connection, as on a fresh one (no response is being written)', async () => {
    const { connect } = await import('node:net');
    const socket = connect(Number(port()), '127.0.0.1');
    socket.on('error', () => undefined);
    let raw = '';
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    const firstAnswer = new Promise<void>((resolve) => socket.on('data', (d: Buffer) => ((raw += d.toString('latin1')), raw.includes('"status":"ok"') && resolve())));
    socket.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\n\r\n`);
    await firstAnswer;
    socket.write(get('X-Note: a\rb\r\n'));
    await closed;
    expect(raw.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400']);
  });

  it('answers headers over the size limit with 431', async () => {
    const answer = parseRawResponse(await sendOnSocket(gw.url, get(`X-Big: ${'a'.repeat(64 * 1024)}\r\n`)));
    expect(answer.status).toBe(431);
    expect(answer.body).toEqual({ error: { code: 'INVALID_REQUEST', message: 'The request headers are too large.', details: {} } });
  });

  it('keeps serving other callers while a client holds a request open without sending its body', async () => {
    const { connect } = await import('node:net');
    const stalled = connect(Number(port()), '127.0.0.1');
    stalled.on('error', () => undefined);
    stalled.write(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\nAuthorization: Bearer ${KEYS.alice}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":`);
    try {
      await expectStillServing();
    } finally {
      stalled.destroy();
    }
  });

  it('answers a bearer token with bytes outside ASCII as 401, not a crash', async () => {
    const body = JSON.stringify(INIT);
    const request = Buffer.concat([
      Buffer.from(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer key-`),
      Buffer.from([0xff, 0xfe, 0x80]),
      Buffer.from(`\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`),
    ]);
    const answer = parseRawResponse(await sendOnSocket(gw.url, request));
    expect(answer.status).toBe(401);
    expect(answer.body).toMatchObject({ error: 'invalid_token' });
    await expectStillServing();
  });
});

describe('DNS rebinding: Host and Origin', () => {
  it.each([
    ['evil.example', 'evil.example'],
    ['localhost.evil.example', 'localhost.evil.example'],
    ['127.0.0.1@evil.example', 'evil.example'],
    ['evil.example:80', 'evil.example'],
  ])('refuses Host %s with 403 -32000 naming the host, on /mcp and /healthz', async (host, named) => {
    for (const [method, path] of [['POST', '/mcp'], ['GET', '/healthz']] as const) {
      const res = await sendRaw(gw.url, { method, path, headers: { ...JSON_HEADERS, ...AUTH, host }, body: method === 'POST' ? JSON.stringify(INIT) : undefined });
      expect(res.status).toBe(403);
      expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32000, message: `Invalid Host: ${named}` }, id: null });
    }
  });

  it('refuses an HTTP/1.0 request without a Host header with 403', async () => {
    const answer = parseRawResponse(await sendOnSocket(gw.url, 'GET /healthz HTTP/1.0\r\n\r\n'));
    expect(answer.status).toBe(403);
    expect(answer.body).toEqual({ jsonrpc: '2.0', error: { code: -32000, message: 'Missing Host header' }, id: null });
  });

  it('accepts a loopback Host on any port', async () => {
    const res = await sendRaw(gw.url, { method: 'GET', path: '/healthz', headers: { host: 'localhost:1' } });
    expect(res.status).toBe(200);
  });

  it.each(['https://evil.example', 'null', 'http://127.0.0.1.evil.example'])('refuses Origin %s with 403 FORBIDDEN', async (origin) => {
    const res = await post(INIT, { origin });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toEqual({ error: { code: 'FORBIDDEN', message: `Origin ${origin} is not allowed to call this gateway.`, details: {} } });
  });

  describe('with TOLLGATE_ALLOWED_ORIGINS and TOLLGATE_ALLOWED_HOSTS set', () => {
    let allowed: TestGateway;
    beforeAll(async () => {
      allowed = await startTestGateway(basicPolicy(), { env: { TOLLGATE_ALLOWED_ORIGINS: 'https://app.example.com', TOLLGATE_ALLOWED_HOSTS: 'ai.example.com' } });
    });
    afterAll(() => allowed.close());
    const init = (headers: Record<string, string>) => sendRaw(allowed.mcpUrl, { headers: { ...JSON_HEADERS, ...AUTH, ...headers }, body: JSON.stringify(INIT) });

    it('serves the allowed Origin and the allowed Host', async () => {
      const res = await init({ origin: 'https://app.example.com', host: 'ai.example.com' });
      expect(res.status).toBe(200);
      expect(res.headers['mcp-session-id']).toBeTruthy();
    });

    it('refuses an Origin that only looks like the allowed one', async () => {
      for (const origin of ['https://app.example.com.evil.example', 'http://app.example.com', 'https://app.example.com:8443']) {
        const res = await init({ origin });
        expect(res.status).toBe(403);
        expect(errorOf(res).code).toBe('FORBIDDEN');
      }
    });

    it('refuses a Host outside the list', async () => {
      const res = await init({ host: 'evil.example' });
      expect(res.status).toBe(403);
      expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32000, message: 'Invalid Host: evil.example' }, id: null });
    });
  });
});

describe('a burst of hostile requests at once', () => {
  it('answers 200 mixed hostile requests in parallel with 4xx codes, never a 5xx, and keeps serving', async () => {
    const session = await openSession();
    const kinds: (() => Promise<RawResponse>)[] = [
      () => post('{"jsonrpc":'),
      () => post([1, 2, 3], session),
      () => post(JSON.stringify(INIT), { 'content-type': 'text/plain' }),
      () => post(Buffer.from([0x7b, 0xff, 0x7d]), session),
      () => post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"complete","arguments":{"prompt":${'['.repeat(50_000)}${']'.repeat(50_000)}}}}`, session),
      () => post(callTool(1, { prompt: 'hi', max_tokens: '9' }), session),
      () => post({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': 'nope', 'mcp-protocol-version': PROTOCOL }),
      () => post(INIT, { origin: 'https://evil.example' }),
      () => post(INIT, { authorization: 'Bearer nope' }),
      () => sendRaw(gw.url, { method: 'GET', path: '/healthz', headers: { host: 'evil.example' } }),
    ];
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => kinds[i % kinds.length]!()));
    for (const a of answers) {
      expect(a.status).toBeLessThan(500);
      expect(a.text.length).toBeGreaterThan(0);
    }
    await expectStillServing();
  });
});

describe('a tollgate serve process under hostile input', () => {
  let dir: string;
  let child: GatewayProcess;
  const CHILD_LIMIT = 64 * 1024;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-hostile-'));
    writeFileSync(join(dir, 'policy.yaml'), basicPolicy());
    child = await spawnGateway({ policyFile: join(dir, 'policy.yaml'), eventsFile: join(dir, 'events.jsonl'), env: { TOLLGATE_MAX_BODY_BYTES: String(CHILD_LIMIT) } });
  }, 60_000);
  afterAll(async () => {
    await child?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers every kind of hostile request with a code and is still running afterwards', async () => {
    const base = child.mcpUrl.replace(/\/mcp$/, '');
    const send = (headers: Record<string, string>, extra: Partial<RawRequest>) => sendRaw(child.mcpUrl, { headers: { ...JSON_HEADERS, ...AUTH, ...headers }, ...extra });

    const garbage = await send({}, { body: '{"jsonrpc":' });
    expect([garbage.status, errorOf(garbage).code]).toEqual([400, -32700]);

    const chunked = await send({}, { chunks: ['{"pad":"', ...Array.from({ length: 8 }, () => 'x'.repeat(16 * 1024)), '"}'] });
    expect([chunked.status, errorOf(chunked).code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);

    const init = await send({}, { body: JSON.stringify(INIT) });
    const session = { 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': PROTOCOL };
    const deep = await send(session, { body: `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"complete","arguments":{"prompt":${'['.repeat(20_000)}${']'.repeat(20_000)}}}}` });
    expect((rpcMessages(deep)[0] as { result: { _meta: Record<string, { code: string }> } }).result._meta['io.tollgate/error']!.code).toBe('INVALID_REQUEST');

    const utf8 = await send(session, { body: Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":3,"method":"ping","params":{"_meta":{"x":"'), Buffer.from([0xff]), Buffer.from('"}}}')]) });
    expect([utf8.status, errorOf(utf8).code]).toEqual([400, 'INVALID_REQUEST']);

    const host = `127.0.0.1:${new URL(base).port}`;
    expect(parseRawResponse(await sendOnSocket(base, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nX-Note: a\rInjected: b\r\n\r\n`)).status).toBe(400);
    expect(parseRawResponse(await sendOnSocket(base, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`)).status).toBe(431);

    const rebinding = await sendRaw(base, { method: 'GET', path: '/healthz', headers: { host: 'evil.example' } });
    expect(rebinding.status).toBe(403);
    const origin = await send({ origin: 'https://evil.example' }, { body: JSON.stringify(INIT) });
    expect([origin.status, errorOf(origin).code]).toEqual([403, 'FORBIDDEN']);

    expect(child.child.exitCode).toBeNull();
    expect(child.child.signalCode).toBeNull();
    const health = await sendRaw(base, { method: 'GET', path: '/healthz' });
    expect(health.status).toBe(200);

    // The events file holds one event per refused request above, in order, with its code; the
    // initialize that opened the session and the health checks are not refusals and leave none.
    const events = await child.eventsWhen(8);
    expect(events.map((e) => [e.outcome, e['error.code'], e.transport])).toEqual([
      ['failed', 'INVALID_REQUEST', 'http'], // body is not JSON
      ['failed', 'PAYLOAD_TOO_LARGE', 'http'], // chunked body past the limit
      ['failed', 'INVALID_REQUEST', 'http'], // nested arrays as tool arguments
      ['failed', 'INVALID_REQUEST', 'http'], // invalid UTF-8
      ['failed', 'INVALID_REQUEST', 'http'], // CR inside a header
      ['failed', 'INVALID_REQUEST', 'http'], // headers over the size limit
      ['refused', 'FORBIDDEN', 'http'], // Host not allowed
      ['refused', 'FORBIDDEN', 'http'], // Origin not allowed
    ]);
    // Who sent them is recorded wherever the key was presented (the Origin refusal too, though no
    // route authenticated it; not the Host one, sent without it), never the key itself.
    expect(events.filter((e) => e['user.id'] === 'alice').length).toBe(5);
    expect(JSON.stringify(events)).not.toContain(KEYS.alice);
  });

  it('refuses to start with a size limit that is not a whole number of bytes', async () => {
    const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--policy', join(dir, 'policy.yaml')], {
      env: { PATH: process.env.PATH ?? '', TOLLGATE_MAX_BODY_BYTES: '1mb' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toBe('tollgate: TOLLGATE_MAX_BODY_BYTES=1mb: expected a whole number of bytes ≥ 1\n');
  }, 60_000);
});

describe('the stdio transport under hostile input', () => {
  it('answers lines that are not JSON-RPC with a JSON-RPC error, refuses bad arguments with a code, writes only JSON-RPC to stdout, and keeps running', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-hostile-stdio-'));
    writeFileSync(join(dir, 'policy.yaml'), basicPolicy());
    const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', join(dir, 'policy.yaml')], {
      env: { PATH: process.env.PATH ?? '', TOLLGATE_API_KEY: KEYS.alice, TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl') },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const answered = (id: number) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to id ${id}; stdout so far:\n${out}`)), 30_000);
        const look = () => {
          // Only whole lines: the last piece may still be arriving.
          const msg = out.split('\n').slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>).find((m) => m.id === id);
          if (!msg) return;
          clearTimeout(timer);
          proc.stdout!.off('data', look);
          resolve(msg);
        };
        proc.stdout!.on('data', look);
        look();
      });
    try {
      const write = (line: string | Buffer) => proc.stdin!.write(Buffer.concat([Buffer.from(line), Buffer.from('\n')]));
      for (const garbage of ['not json', '{"jsonrpc":', '42', '[1,2,3]', '{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}', '['.repeat(100_000) + ']'.repeat(100_000)]) write(garbage);
      write(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]));
      write(JSON.stringify({ ...INIT, id: 100 }));
      expect(await answered(100)).toMatchObject({ result: { serverInfo: { name: 'tollgate' } } });
      write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
      write(JSON.stringify(callTool(101, { prompt: ['not', 'a', 'string'] })));
      const refused = (await answered(101)) as { result: { isError: boolean; _meta: Record<string, { code: string; message: string }> } };
      expect(refused.result.isError).toBe(true);
      expect(refused.result._meta['io.tollgate/error']!.code).toBe('INVALID_REQUEST');
      expect(refused.result._meta['io.tollgate/error']!.message).toContain('prompt: ');
      write(JSON.stringify(callTool(102, { prompt: 'still there?', max_tokens: 10 })));
      expect(((await answered(102)) as { result: { isError?: boolean } }).result.isError).toBeUndefined();
      expect(proc.exitCode).toBeNull();
      expect(out.endsWith('\n')).toBe(true);
      for (const line of out.split('\n').slice(0, -1)) expect(JSON.parse(line)).toHaveProperty('jsonrpc', '2.0');
    } finally {
      proc.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
