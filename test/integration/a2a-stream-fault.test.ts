/**
 * A streamed A2A request whose stream faults after it began, through the real A2A route, the real
 * SDK and a real gateway. Once the SDK has sent the stream's headers and first event, it can no
 * longer answer a fault with a JSON-RPC error body: it writes an SSE `event: error` whose data is
 * the JSON-RPC error envelope, and ends the stream. Seen before this test: the SDK logged the fault
 * (sdkLog.ts), but no decision event recorded it, so the audit trail had no refusal for a request
 * whose caller was answered with an error.
 *
 * The fault is a task store that fails to save the task once it reaches a given state (the SDK
 * saves each event before it sends it), passed through the route's `taskStore` option. The
 * executor's call is not stopped by the fault: it goes on and is charged and recorded as usual, so
 * the request leaves the call's event and the fault's, both under its `x-request-id`, and only the
 * call's carries a charge.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { TaskState, type Task } from '@a2a-js/sdk';
import type { ServerCallContext } from '@a2a-js/sdk/server';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { a2aRouter } from '../../src/a2a/agent.js';
import { BoundedTaskStore } from '../../src/a2a/taskStore.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { authEdge, credentialOf } from '../../src/http/authMetadata.js';
import { recordRpcErrors, recordUnread } from '../../src/http/edgeRefusals.js';
import type { Principal } from '../../src/identity/principal.js';
import type { DecisionEvent } from '../../src/metering/events.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { captureLog } from '../helpers/log.js';

/** The gateway's task store, except that saving a task in state `failAt` fails. */
class FailingTaskStore extends BoundedTaskStore {
  failAt: TaskState | undefined;

  override async save(task: Task, context: ServerCallContext): Promise<void> {
    if (this.failAt !== undefined && task.status?.state === this.failAt) throw new Error('The task store is unavailable.');
    return super.save(task, context);
  }
}

/** One SSE event as the client reads it: its name (`message` when none) and its data, parsed. */
interface SseEvent {
  event: string;
  data: { jsonrpc: string; id: unknown; result?: Record<string, unknown>; error?: { code: number; message: string } };
}

function sseEvents(text: string): SseEvent[] {
  return text
    .split('\n\n')
    .filter((frame) => frame.trim())
    .map((frame) => {
      const lines = frame.split('\n');
      const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? 'message';
      const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
      return { event, data: JSON.parse(data) as SseEvent['data'] };
    });
}

/** What a test reads of an event: its outcome and code, whether it charged, and its reason. */
function summary(e: DecisionEvent) {
  return { outcome: e.outcome, code: e['error.code'], user: e['user.id'], charged: (e['tollgate.charged'] ?? []).length > 0, cost: e['tollgate.cost_usd'], reason: e.reason };
}

describe('an A2A stream that faults after it began', () => {
  const log = captureLog('debug');
  const sink = memorySink();
  const gateway = new Gateway({ policy: parsePolicy(basicPolicy(), 'test-policy.yaml'), store: new MemoryQuotaStore(), logger: log.logger, sink });
  const tasks = new FailingTaskStore();
  let server: Server;
  let url: string;

  beforeAll(async () => {
    // Wired as the app wires it (app.ts), with the task store in place of the default one.
    const app = express();
    const callerOf = (req: express.Request) => {
      const credential = credentialOf(req);
      const principal = req.auth?.extra?.principal as Principal | undefined;
      return credential && principal ? { credential, principal } : undefined;
    };
    const a2a = { requireAuth: authEdge(gateway).requireAuth('a2a'), json: express.json(), unread: recordUnread(gateway), rpcErrors: recordRpcErrors(gateway), version: 'test', callerOf };
    app.use(a2aRouter(gateway, { ...a2a, taskStore: tasks }));
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/a2a`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });
  beforeEach(() => {
    tasks.failAt = undefined;
  });

  /** Sends one SendStreamingMessage and reads the whole stream. */
  const stream = async (text: string) => {
    const message = { messageId: crypto.randomUUID(), role: 'ROLE_USER', parts: [{ text }] };
    const res = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SendStreamingMessage', params: { message } }),
    });
    return { status: res.status, type: res.headers.get('content-type'), requestId: res.headers.get('x-request-id')!, events: sseEvents(await res.text()) };
  };

  /** The events recorded under `requestId`, once there are `count` of them and a moment has passed for any more. */
  const eventsOf = async (requestId: string, count: number) => {
    const mine = () => sink.events.filter((e) => e['request.id'] === requestId);
    for (const deadline = Date.now() + 5000; mine().length < count && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100));
    return mine();
  };

  /** Records at error level or above logged for `requestId`. */
  const errorsOf = (requestId: string) => log.entries.filter((e) => (e.level as number) >= 50 && e.requestId === requestId);

  const callEvent = { outcome: 'success', code: undefined, user: 'alice', charged: true, cost: expect.any(Number), reason: expect.any(String) };
  const faultEvent = {
    outcome: 'failed',
    code: 'INTERNAL',
    user: 'alice',
    charged: false,
    cost: 0,
    reason: 'The A2A stream failed after it began: JSON-RPC -32603: The task store is unavailable.',
  };

  it('records a normal streamed call as its one event, and nothing else', async () => {
    const answer = await stream('Hello');
    expect([answer.status, answer.type]).toEqual([200, 'text/event-stream']);
    expect(answer.events.map((e) => e.event)).not.toContain('error');
    const events = await eventsOf(answer.requestId, 1);
    expect(events.map(summary)).toEqual([callEvent]);
    expect(errorsOf(answer.requestId)).toEqual([]);
  });

  it('records a fault once the task is working as one INTERNAL event, without a charge, beside the call\'s', async () => {
    tasks.failAt = TaskState.TASK_STATE_WORKING;
    const answer = await stream('Hello');
    // The stream had begun (the task was sent) when the SDK met the fault and sent it as an SSE error event.
    expect([answer.status, answer.type]).toEqual([200, 'text/event-stream']);
    expect(answer.events.map((e) => e.event)).toEqual(['message', 'error']);
    expect(answer.events[0]!.data.result).toHaveProperty('task');
    expect(answer.events[1]!.data).toEqual({ jsonrpc: '2.0', id: 1, error: { code: -32603, message: 'The task store is unavailable.' } });
    const events = await eventsOf(answer.requestId, 2);
    expect(events.filter((e) => e['error.code'] === 'INTERNAL').map(summary)).toEqual([faultEvent]);
    // The executor's call was not stopped by the fault: it was served, charged and recorded.
    expect(events.filter((e) => e['error.code'] !== 'INTERNAL').map(summary)).toEqual([callEvent]);
    // The SDK's log record of the fault, with its stack, is the only one: the gateway does not log the refusal again.
    const errors = errorsOf(answer.requestId);
    expect(errors).toEqual([expect.objectContaining({ level: 50, event: 'a2a_sdk', msg: 'Error during SSE streaming (request 1):', transport: 'a2a' })]);
    expect((errors[0]!.err as { message: string; stack: string }).message).toBe('The task store is unavailable.');
  });

  it('records a fault after the call was charged and recorded as a second event, the fault\'s, without a charge', async () => {
    tasks.failAt = TaskState.TASK_STATE_COMPLETED;
    const answer = await stream('Hello');
    expect([answer.status, answer.type]).toEqual([200, 'text/event-stream']);
    // The text reached the caller; the completed status did not, the error event took its place.
    expect(answer.events.at(-1)).toEqual({ event: 'error', data: { jsonrpc: '2.0', id: 1, error: { code: -32603, message: 'The task store is unavailable.' } } });
    expect(answer.events.slice(0, -1).map((e) => e.event)).toEqual(answer.events.slice(0, -1).map(() => 'message'));
    const events = await eventsOf(answer.requestId, 2);
    // The call's event comes first (its charge was written before the status that failed to save).
    expect(events.map(summary)).toEqual([callEvent, faultEvent]);
    expect(errorsOf(answer.requestId)).toEqual([expect.objectContaining({ level: 50, event: 'a2a_sdk', msg: 'Error during SSE streaming (request 1):' })]);
  });
});
