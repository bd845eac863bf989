/**
 * The A2A SDK's console output, seen through the real A2A route and the real SDK: a request it
 * refuses is at most one debug record without a stack, a fault of its own (or of ours) is one error
 * record with the error, its stack and the request id of its decision event (before, the gateway
 * logged the INTERNAL refusal it records for the 500 as a second error record, with the request id
 * but only its own stack), and console output from outside an A2A request is left alone. The fault
 * here is ours: for a request without a credential the route hands the SDK no caller (the bearer
 * middleware, which would refuse it first, is a pass-through here), so the SDK's user builder
 * throws and the SDK answers 500.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { a2aRouter } from '../../src/a2a/agent.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { recordRpcErrors, recordUnread } from '../../src/http/edgeRefusals.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { captureLog } from '../helpers/log.js';
import { keyPrincipal } from '../helpers/principal.js';

const message = { messageId: 'm-1', role: 'ROLE_USER', parts: [{ text: 'Hello' }] };

describe('the A2A SDK\'s console output', () => {
  const log = captureLog('debug');
  const sink = memorySink();
  const gateway = new Gateway({ policy: parsePolicy(basicPolicy(), 'test-policy.yaml'), store: new MemoryQuotaStore(), logger: log.logger, sink });
  /** What reached console.error itself (the SDK's route takes it over on its first request). */
  const printed: unknown[][] = [];
  const vitestError = console.error;
  let server: Server;
  let url: string;

  beforeAll(async () => {
    console.error = (...args: unknown[]) => void printed.push(args);
    const app = express();
    const pass: express.RequestHandler = (_req, _res, next) => next();
    const callerOf = (req: express.Request) => (req.headers.authorization ? { principal: keyPrincipal(gateway, KEYS.alice), credential: { secret: KEYS.alice } } : undefined);
    app.use(a2aRouter(gateway, { requireAuth: pass, json: express.json(), unread: recordUnread(gateway), rpcErrors: recordRpcErrors(gateway), version: 'test', callerOf }));
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/a2a`;
  });
  afterAll(async () => {
    console.error = vitestError;
    await new Promise((r) => server.close(r));
  });

  const post = async (headers: Record<string, string>, body: unknown) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    return { status: res.status, error: ((await res.json()) as { error: { code: number } }).error };
  };

  it('logs a refusal as one debug record without a stack, and prints nothing', async () => {
    const before = log.entries.length;
    expect((await post({ authorization: `Bearer ${KEYS.alice}`, 'a2a-version': '2.0' }, { jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } })).error.code).toBe(-32009);
    expect(log.entries.slice(before)).toEqual([
      expect.objectContaining({ level: 20, event: 'a2a_refused', rpcCode: -32009, error: 'VersionNotSupportedError', sdk: 'Unhandled error in JSON-RPC POST handler:' }),
    ]);
    expect(JSON.stringify(log.entries.slice(before))).not.toContain('stack');
    expect(printed).toEqual([]);
  });

  it('logs a fault as one error record, with the error, its stack and its event\'s request id, and prints nothing', async () => {
    const before = log.entries.length;
    const eventsBefore = sink.events.length;
    const answer = await post({ 'a2a-version': '1.0' }, { jsonrpc: '2.0', id: 2, method: 'SendMessage', params: { message } });
    expect([answer.status, answer.error.code]).toEqual([500, -32603]);
    // The 500 is recorded as one INTERNAL event; it is written after the answer.
    for (const deadline = Date.now() + 5000; sink.events.length === eventsBefore && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
    const events = sink.events.slice(eventsBefore);
    expect(events.map((e) => [e.transport, e['error.code']])).toEqual([['a2a', 'INTERNAL']]);
    // Every record at error level or above that the fault left: the SDK's, with the cause.
    const errors = log.entries.slice(before).filter((e) => (e.level as number) >= 50);
    expect(errors).toEqual([expect.objectContaining({ level: 50, event: 'a2a_sdk', msg: 'Unhandled error in JSON-RPC POST handler:', requestId: events[0]!['request.id'], transport: 'a2a' })]);
    const err = errors[0]!.err as { type: string; message: string; stack: string };
    expect(err.type).toBe('GatewayError');
    expect(err.message).toBe('No credential was presented; send an API key or token.');
    expect(err.stack).toMatch(/\n\s+at /);
    expect(printed).toEqual([]);
  });

  it('leaves console output from outside an A2A request as it was', () => {
    console.error('not from the SDK', 42);
    expect(printed).toEqual([['not from the SDK', 42]]);
  });
});
