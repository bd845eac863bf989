/**
 * Hostile input on the HTTP transport: whatever bytes arrive, the gateway answers with a status
 * and a code, never a 500, a hang or a crash, and keeps serving the next caller.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
    expect((rpcMessages(list)[0] as { result: { tools: { name: string }[] } }).result.tools.map((t) => t.name)).toEqual(['complete', 'list_models', 'my_budget']);
  });

  it('refuses a batch larger than the transport allows with -32600', async () => {
    const session = await openSession();
    const batch = Array.from({ length: 1001 }, (_, i) => ({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: i, progress: 1 } }));
    const res = await post(batch, session);
    expect(res.status).toBe(400);
    expect(errorOf(res).code).toBe(-32600);
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
    expect((rpcMessages(res)[0] as { result: { tools: unknown[] } }).result.tools).toHaveLength(3);
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
