/**
 * MCP streamable HTTP against the transport spec (2025-06-18 and 2025-11-25, "Protocol Version
 * Header"): every request after initialize carries MCP-Protocol-Version, and "if the server
 * receives a request with an invalid or unsupported MCP-Protocol-Version, it MUST respond with 400
 * Bad Request". Raw HTTP, as a protocol test suite sends it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };
const PING = { jsonrpc: '2.0', id: 2, method: 'ping' };

describe('MCP-Protocol-Version on every request of a session', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  const post = (body: unknown, headers: Record<string, string>) =>
    fetch(gw!.mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers }, body: JSON.stringify(body) });
  const open = async () => {
    gw ??= await startTestGateway(basicPolicy());
    const init = await post(INIT, { authorization: `Bearer ${KEYS.alice}` });
    expect(init.status).toBe(200);
    await init.text();
    return { authorization: `Bearer ${KEYS.alice}`, 'mcp-session-id': init.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-11-25' };
  };

  it('refuses a DELETE with an unsupported protocol version with 400 and leaves the session open', async () => {
    const headers = await open();
    const del = await fetch(gw!.mcpUrl, { method: 'DELETE', headers: { ...headers, 'mcp-protocol-version': '1999-01-01' } });
    expect(del.status).toBe(400);
    expect(((await del.json()) as { error: { code: number; message: string } }).error).toEqual({
      code: -32000,
      message: 'Bad Request: Unsupported protocol version: 1999-01-01 (supported versions: 2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05, 2024-10-07)',
    });
    expect((await post(PING, headers)).status).toBe(200);
  });

  it('ends a session on a DELETE with a supported protocol version, or with none', async () => {
    const headers = await open();
    expect((await fetch(gw!.mcpUrl, { method: 'DELETE', headers })).status).toBe(200);
    expect((await post(PING, headers)).status).toBe(404);
    const { 'mcp-protocol-version': _version, ...bare } = await open();
    expect((await fetch(gw!.mcpUrl, { method: 'DELETE', headers: bare })).status).toBe(200);
  });

  it('refuses a POST with an unsupported protocol version with 400, streamed or not', async () => {
    const headers = await open();
    const bad = { ...headers, 'mcp-protocol-version': '1999-01-01' };
    const plain = await post(PING, bad);
    const streamed = await post({ ...PING, id: 3, params: { _meta: { progressToken: 'p' } } }, bad);
    expect([plain.status, streamed.status]).toEqual([400, 400]);
    expect((await post(PING, headers)).status).toBe(200);
  });
});
