/**
 * jsonTransport.ts answers MCP POSTs without the SDK's transport; these tests hold it to the SDK's
 * own WebStandardStreamableHTTPServerTransport (stateless, JSON answers): the same request goes to
 * both, each with a fresh server of the same tools, and the HTTP status and body must be equal.
 * An SDK upgrade that changes a check, a status or an error message fails here.
 */
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { CallToolRequestSchema, LATEST_PROTOCOL_VERSION, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { JsonResponseTransport, acceptPost } from '../../src/http/jsonTransport.js';

function newServer(): Server {
  const server = new Server({ name: 'differential', version: '1' }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [{ name: 'echo', inputSchema: { type: 'object' } }] }));
  server.setRequestHandler(CallToolRequestSchema, async (req) => {
    if (req.params.name === 'fail') throw new Error('the tool failed');
    return { content: [{ type: 'text', text: JSON.stringify(req.params.arguments ?? {}) }] };
  });
  return server;
}

interface Answer {
  status: number;
  body: unknown;
}

/** The SDK's transport on a web Request, as its documentation serves it. */
async function viaSdk(headers: Record<string, string>, body: unknown): Promise<Answer> {
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  await newServer().connect(transport);
  const res = await transport.handleRequest(new Request('http://127.0.0.1/mcp', { method: 'POST', headers, body: JSON.stringify(body) }), { parsedBody: body });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** tollgate's path: acceptPost's checks, then a JsonResponseTransport on a fresh server. */
async function viaTollgate(headers: Record<string, string>, body: unknown): Promise<Answer> {
  const req = { headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) } as unknown as IncomingMessage;
  const checked = acceptPost(req, body);
  if ('answer' in checked) return { status: checked.answer.status, body: checked.answer.body };
  const transport = new JsonResponseTransport();
  await newServer().connect(transport);
  transport.deliver(checked.messages, req, undefined);
  const answer = await transport.answer;
  // What writeAnswer puts on the wire, read back.
  return { status: answer.status, body: answer.body === undefined ? undefined : JSON.parse(JSON.stringify(answer.body)) };
}

const JSON_HEADERS = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' };
const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 't', version: '1' } } };
const call = (id: number, name = 'echo') => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: { n: id } } });

const CASES: { name: string; headers?: Record<string, string>; body: unknown }[] = [
  { name: 'an initialize', body: INIT },
  { name: 'an initialize with an old protocol version header', headers: { ...JSON_HEADERS, 'mcp-protocol-version': '1999-01-01' }, body: INIT },
  { name: 'an initialize batched with a notification', body: [INIT, { jsonrpc: '2.0', method: 'notifications/initialized' }] },
  { name: 'a notification alone', body: { jsonrpc: '2.0', method: 'notifications/initialized' } },
  { name: 'a client response alone', body: { jsonrpc: '2.0', id: 9, result: {} } },
  { name: 'a tool call', headers: { ...JSON_HEADERS, 'mcp-protocol-version': '2025-06-18' }, body: call(2) },
  { name: 'a tool call with no protocol version header', body: call(3) },
  { name: 'a tool that throws', body: call(4, 'fail') },
  { name: 'an unknown method', body: { jsonrpc: '2.0', id: 5, method: 'tools/unknown' } },
  { name: 'a batch of requests and a notification', body: [call(6), { jsonrpc: '2.0', id: 7, method: 'tools/list' }, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 99 } }] },
  { name: 'a batch at the size limit', body: Array.from({ length: 100 }, (_, i) => ({ jsonrpc: '2.0', id: 100 + i, method: 'tools/list' })) },
  { name: 'a batch over the size limit', body: Array.from({ length: 101 }, (_, i) => ({ jsonrpc: '2.0', id: 100 + i, method: 'tools/list' })) },
  { name: 'an unsupported protocol version', headers: { ...JSON_HEADERS, 'mcp-protocol-version': '1999-01-01' }, body: call(8) },
  { name: 'a message that is not JSON-RPC', body: { id: 10, method: 'tools/list' } },
  { name: 'a batch with one message that is not JSON-RPC', body: [call(11), { jsonrpc: '1.0', id: 12, method: 'tools/list' }] },
  { name: 'an Accept without text/event-stream', headers: { ...JSON_HEADERS, accept: 'application/json' }, body: call(13) },
  { name: 'an Accept without application/json', headers: { ...JSON_HEADERS, accept: 'text/event-stream' }, body: call(14) },
  { name: 'no Accept', headers: { 'content-type': 'application/json' }, body: call(15) },
  { name: 'a text/plain content type', headers: { ...JSON_HEADERS, 'content-type': 'text/plain' }, body: call(16) },
  { name: 'a JSON content type with a charset', headers: { ...JSON_HEADERS, 'content-type': 'application/json; charset=utf-8' }, body: call(17) },
  { name: 'a content type that only starts like JSON', headers: { ...JSON_HEADERS, 'content-type': 'application/jsonx' }, body: call(18) },
];

describe('the JSON transport answers as the SDK transport does', () => {
  for (const c of CASES) {
    it(`for ${c.name}`, async () => {
      const headers = c.headers ?? JSON_HEADERS;
      const [sdk, ours] = await Promise.all([viaSdk(headers, c.body), viaTollgate(headers, c.body)]);
      expect(ours).toEqual(sdk);
    });
  }

  it('covers every status the SDK transport gives these POSTs', async () => {
    const statuses = new Set<number>();
    for (const c of CASES) statuses.add((await viaSdk(c.headers ?? JSON_HEADERS, c.body)).status);
    expect([...statuses].sort()).toEqual([200, 202, 400, 406, 415]);
  });
});
