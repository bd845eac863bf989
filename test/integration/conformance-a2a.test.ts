/**
 * A2A over JSON-RPC against JSON-RPC 2.0 (section 5.1) and the A2A error codes: -32600 for JSON
 * that is not a Request object (its id when it has a valid one, else null), -32601 for a method the
 * agent does not have, -32602 only for a known method's bad params. Raw HTTP, as a protocol test
 * suite sends it; the A2A SDK client never sends these.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

interface RpcReply {
  jsonrpc: string;
  id: unknown;
  error?: { code: number; message: string };
}

const INVALID_REQUEST = { code: -32600, message: 'Invalid Request: not a JSON-RPC 2.0 request object.' };

describe('A2A JSON-RPC errors', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  const rpc = async (body: unknown): Promise<RpcReply> => {
    const res = await fetch(`${gw.url}/a2a`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
    return (await res.json()) as RpcReply;
  };

  it('answers a request without jsonrpc "2.0" with -32600 under its id', async () => {
    expect(await rpc({ jsonrpc: '1.0', id: 4, method: 'GetTask', params: { id: 't' } })).toEqual({ jsonrpc: '2.0', id: 4, error: INVALID_REQUEST });
    expect(await rpc({ id: 'a', method: 'GetTask', params: { id: 't' } })).toEqual({ jsonrpc: '2.0', id: 'a', error: INVALID_REQUEST });
  });

  it('answers a request whose id is not a string, a whole number or null with -32600 and id null', async () => {
    expect(await rpc({ jsonrpc: '2.0', id: { x: 1 }, method: 'GetTask', params: { id: 't' } })).toEqual({ jsonrpc: '2.0', id: null, error: INVALID_REQUEST });
    expect(await rpc({ jsonrpc: '2.0', id: 1.5, method: 'GetTask', params: { id: 't' } })).toEqual({ jsonrpc: '2.0', id: null, error: INVALID_REQUEST });
  });

  it('answers a request without a method, and a batch, with -32600', async () => {
    expect(await rpc({ jsonrpc: '2.0', id: 5, params: {} })).toEqual({ jsonrpc: '2.0', id: 5, error: INVALID_REQUEST });
    expect(await rpc([{ jsonrpc: '2.0', id: 6, method: 'GetTask', params: { id: 't' } }])).toEqual({ jsonrpc: '2.0', id: null, error: INVALID_REQUEST });
  });

  // A2A requests carry an id; one without (a JSON-RPC notification) could get no answer, so it
  // was run and charged with its result thrown away (the SDK answered it, id null, all the same).
  it('refuses a SendMessage without an id (a notification) with -32600, runs nothing and records the refusal', async () => {
    const before = gw.events.length;
    const message = { messageId: 'n1', role: 'ROLE_USER', parts: [{ text: 'a notification' }] };
    const reply = await rpc({ jsonrpc: '2.0', method: 'SendMessage', params: { message } });
    expect(reply).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: an A2A request needs an id (A2A has no notifications); nothing was run.' } });
    await gw.idle();
    const events = gw.events.slice(before);
    expect(events.map((e) => [e['error.code'], e.outcome, e['tollgate.charged']])).toEqual([['INVALID_REQUEST', 'failed', undefined]]);
  });

  it('answers an unknown method with -32601 whether or not it has params', async () => {
    expect((await rpc({ jsonrpc: '2.0', id: 7, method: 'DropTables' })).error?.code).toBe(-32601);
    expect((await rpc({ jsonrpc: '2.0', id: 8, method: 'message/send', params: {} })).error?.code).toBe(-32601);
  });

  it('keeps -32602 for a known method with bad params, and -32001 for an unknown task', async () => {
    expect(await rpc({ jsonrpc: '2.0', id: 9, method: 'GetTask' })).toMatchObject({ id: 9, error: { code: -32602 } });
    expect(await rpc({ jsonrpc: '2.0', id: 10, method: 'GetTask', params: { id: 'no-such-task' } })).toMatchObject({ id: 10, error: { code: -32001, message: 'Task not found: no-such-task' } });
  });

  it('records each of these refusals once, as the caller\'s, with the JSON-RPC code in the reason', async () => {
    const before = gw.events.length;
    await rpc({ jsonrpc: '1.0', id: 11, method: 'GetTask', params: { id: 't' } });
    await rpc({ jsonrpc: '2.0', id: 12, method: 'DropTables' });
    await gw.idle();
    const events = gw.events.slice(before);
    expect(events.map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([
      ['a2a', 'INVALID_REQUEST', 'alice'],
      ['a2a', 'INVALID_REQUEST', 'alice'],
    ]);
    expect(events.map((e) => /JSON-RPC (-\d+)/.exec(String(e.reason))?.[1])).toEqual(['-32600', '-32601']);
  });
});
