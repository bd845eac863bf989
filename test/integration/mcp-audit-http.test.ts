/**
 * MCP streamable HTTP as an external protocol suite checks it, where the other MCP tests leave off:
 * JSON-RPC 2.0 batches (section 6: a batch is answered with an array, an empty one with a single
 * -32600), pagination ("invalid cursors SHOULD result in an error with code -32602") and
 * cancellation ("servers receiving cancellation notifications SHOULD stop processing the cancelled
 * request, free associated resources, not send a response for the cancelled request"). Raw HTTP
 * where the official client never sends what is checked, the official client elsewhere.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { heldProvider } from '../helpers/heldProvider.js';
import { rpcMessages, sendRaw, type RawResponse } from '../helpers/raw.js';

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'audit', version: '1' } } };
const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${KEYS.alice}` };
const ping = (id: number | string) => ({ jsonrpc: '2.0', id, method: 'ping' });
const complete = (id: number, meta: object = {}) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'complete', arguments: { prompt: 'held', max_tokens: 5 }, ...meta } });
const cancelled = (requestId: number) => ({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason: 'the user pressed stop' } });

let gw: TestGateway;

/** POSTs to /mcp with the JSON defaults; fails when no answer ends within five seconds. */
const post = (body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
  sendRaw(gw.mcpUrl, { headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) }, 5000);

/** A session of a 2025-03-26 client (batches allowed), which sends no MCP-Protocol-Version header. */
async function openSession(): Promise<Record<string, string>> {
  const init = await post(INIT);
  expect(init.status).toBe(200);
  const session = { 'mcp-session-id': String(init.headers['mcp-session-id']) };
  expect((await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, session)).status).toBe(202);
  return session;
}

beforeAll(async () => {
  gw = await startTestGateway(basicPolicy({ userTokens: 10_000_000 }));
});
afterAll(() => gw.close());

describe('JSON-RPC batches', () => {
  it('answers a batch of one request with an array of one response', async () => {
    const session = await openSession();
    const res = await post([ping('only')], session);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual([{ jsonrpc: '2.0', id: 'only', result: {} }]);
  });

  it('answers an empty batch with 400 and one -32600, as JSON-RPC answers an empty array', async () => {
    const session = await openSession();
    const res = await post([], session);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request: the batch is empty.' }, id: null });
  });
});

describe('pagination', () => {
  let client: Client;
  beforeAll(async () => {
    client = await connectHttp(gw.mcpUrl, KEYS.alice);
  });
  afterAll(() => client.close());

  it('refuses a tools/list cursor it never gave out with -32602, and lists every tool without one', async () => {
    const err = await client.listTools({ cursor: 'page-2' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).code).toBe(ErrorCode.InvalidParams);
    // The SDK server puts its McpError prefix into the message it sends (docs/endpoints.md).
    expect((err as McpError).message).toBe('MCP error -32602: MCP error -32602: Invalid params: unknown cursor "page-2"; tools/list has one page, asked for without a cursor.');
    const { tools, nextCursor } = await client.listTools();
    expect([tools.length, nextCursor]).toEqual([4, undefined]);
  });
});

describe('a request the client cancels with notifications/cancelled', () => {
  /** Holds every call in the provider until released; returns the release. */
  function holdCalls(): { arrived: Promise<void>; release: () => void } {
    const held = heldProvider();
    gw.runtime.gateway.replacePolicy(gw.runtime.gateway.policy, new Map([['demo', held.provider]]));
    return { arrived: held.arrived, release: () => held.release() };
  }

  it('ends its POST with 202 and no body when it was the only request, rather than holding it open', async () => {
    const session = await openSession();
    const held = holdCalls();
    const answer = post(complete(5), session);
    await held.arrived;
    expect((await post(cancelled(5), session)).status).toBe(202);
    held.release();
    const res = await answer;
    expect([res.status, res.text]).toEqual([202, '']);
  });

  it('answers the other requests of its batch, without one for the cancelled request', async () => {
    const session = await openSession();
    const held = holdCalls();
    const answer = post([complete(6), ping(7)], session);
    await held.arrived;
    expect((await post(cancelled(6), session)).status).toBe(202);
    held.release();
    const res = await answer;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual([{ jsonrpc: '2.0', id: 7, result: {} }]);
  });

  // The cancellation in the same batch as its request: the POST hung, with a call of the batch
  // charged and its answer never sent.
  it('answers a batch that cancels one of its own requests, without a response for it', async () => {
    const session = await openSession();
    const res = await post([complete(11), ping(12), cancelled(11)], session);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual([{ jsonrpc: '2.0', id: 12, result: {} }]);
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ 'error.code': 'CANCELLED' });
  });

  it('ends with 202 a batch of a request and its cancellation', async () => {
    const session = await openSession();
    const before = gw.events.length;
    const res = await post([complete(13), cancelled(13)], session);
    expect([res.status, res.text]).toEqual([202, '']);
    await gw.idle();
    expect(gw.events.slice(before).map((e) => e['error.code'])).toEqual(['CANCELLED']);
  });

  it('ends a streamed batch that cancels one of its own requests, with the other answered', async () => {
    const session = await openSession();
    const res = await post([complete(14, { _meta: { progressToken: 'p14' } }), ping(15), cancelled(14)], session);
    expect([res.status, res.headers['content-type']]).toEqual([200, 'text/event-stream']);
    const answers = rpcMessages(res).filter((m) => (m as { id?: unknown }).id !== undefined);
    expect(answers).toEqual([{ jsonrpc: '2.0', id: 15, result: {} }]);
  });

  // A DELETE of the session is not the client cancelling the request: its client still waits for
  // an answer, and got a 202 with none (the official client then waited for its own timeout).
  it('answers a request whose session is ended by DELETE with a JSON-RPC error, the call recorded CANCELLED', async () => {
    const session = await openSession();
    const held = holdCalls();
    const before = gw.events.length;
    const answer = post(complete(16), session);
    await held.arrived;
    const ended = await sendRaw(gw.mcpUrl, { method: 'DELETE', headers: { authorization: `Bearer ${KEYS.alice}`, ...session } }, 5000);
    expect(ended.status).toBe(200);
    held.release();
    const res = await answer;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ jsonrpc: '2.0', id: 16, error: { code: -32000, message: 'The session was ended (DELETE) before this request was answered; its call was cancelled.' } });
    await gw.idle();
    expect(gw.events.slice(before).map((e) => e['error.code'])).toEqual(['CANCELLED']);
  });

  it('rejects the official client\'s pending callTool at once when it ends its session', async () => {
    const client = await connectHttp(gw.mcpUrl, KEYS.alice);
    const held = holdCalls();
    const pending = client.callTool({ name: 'complete', arguments: { prompt: 'held', max_tokens: 5 } }).catch((e: unknown) => e);
    await held.arrived;
    const started = Date.now();
    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    held.release();
    const err = await pending;
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).message).toContain('The session was ended (DELETE) before this request was answered');
    expect(Date.now() - started).toBeLessThan(5000);
    await client.close();
  });

  it('ends a progress stream whose session is ended by DELETE with that error', async () => {
    const session = await openSession();
    const held = holdCalls();
    const answer = post(complete(17, { _meta: { progressToken: 'p17' } }), session);
    await held.arrived;
    expect((await sendRaw(gw.mcpUrl, { method: 'DELETE', headers: { authorization: `Bearer ${KEYS.alice}`, ...session } }, 5000)).status).toBe(200);
    held.release();
    const res = await answer;
    expect([res.status, res.headers['content-type']]).toEqual([200, 'text/event-stream']);
    expect(rpcMessages(res).filter((m) => (m as { id?: unknown }).id === 17)).toEqual([
      { jsonrpc: '2.0', id: 17, error: { code: -32000, message: 'The session was ended (DELETE) before this request was answered; its call was cancelled.' } },
    ]);
  });

  it('ends its SSE stream, with no response for it, when the call was streaming progress', async () => {
    const session = await openSession();
    const held = holdCalls();
    const answer = post(complete(8, { _meta: { progressToken: 'p8' } }), session);
    await held.arrived;
    expect((await post(cancelled(8), session)).status).toBe(202);
    held.release();
    const res = await answer;
    expect([res.status, res.headers['content-type']]).toEqual([200, 'text/event-stream']);
    expect(rpcMessages(res).filter((m) => (m as { id?: unknown }).id === 8)).toEqual([]);
  });
});
