import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { acceptPost, isInitialize } from '../../src/http/jsonTransport.js';

const headers = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' };
const request = (h: Record<string, string>) => ({ headers: h }) as unknown as IncomingMessage;
const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '1' } } };

describe('acceptPost (the checks of the SDK stateless transport)', () => {
  it('accepts an initialize alone, whatever protocol version header it carries', () => {
    expect(acceptPost(request({ ...headers, 'mcp-protocol-version': '1999-01-01' }), INIT)).toEqual({ messages: [INIT] });
  });

  it('refuses an initialize batched with anything else with -32600', () => {
    const r = acceptPost(request(headers), [INIT, { jsonrpc: '2.0', method: 'notifications/initialized' }]);
    expect(r).toEqual({ answer: { status: 400, body: { jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request: Only one initialization request is allowed' }, id: null } } });
  });

  it('refuses an unsupported protocol version after initialize, a wrong Accept and a non-JSON content type', () => {
    const call = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    expect(acceptPost(request({ ...headers, 'mcp-protocol-version': '1999-01-01' }), call)).toMatchObject({ answer: { status: 400 } });
    expect(acceptPost(request({ ...headers, accept: 'application/json' }), call)).toMatchObject({ answer: { status: 406 } });
    expect(acceptPost(request({ ...headers, 'content-type': 'text/plain' }), call)).toMatchObject({ answer: { status: 415 } });
    expect(acceptPost(request({ ...headers, 'mcp-protocol-version': '2025-06-18' }), call)).toEqual({ messages: [call] });
  });
});

describe('isInitialize', () => {
  it('answers as the SDK isInitializeRequest does', () => {
    for (const m of [INIT, { ...INIT, params: { protocolVersion: 5 } }, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, { ...INIT, method: 'Initialize' }, null, [INIT], 'initialize']) {
      expect(isInitialize(m)).toBe(isInitializeRequest(m));
    }
    expect(isInitialize(INIT)).toBe(true);
  });
});
