/**
 * tollgate's A2A agent as a protocol test suite and a hostile caller see it: raw JSON-RPC over
 * HTTP, as they send it. The A2A error codes for a task that cannot be cancelled (-32002), push
 * notifications the card does not offer (-32003) and a task that can take no more messages or
 * subscribers (-32004); tasks kept per caller, so another caller's task id reads as unknown
 * (-32001) to every method; `historyLength` on GetTask; and content the gateway cannot complete (a
 * file or data part) refused by name rather than dropped. Each refusal is one decision event with
 * its code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDemoProvider } from '../../src/providers/demo.js';
import type { Provider } from '../../src/providers/provider.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

interface RpcReply {
  jsonrpc: string;
  id: unknown;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
}

interface TaskJson {
  id: string;
  contextId: string;
  status: { state: string; message?: { parts: { text?: string }[] } };
  artifacts?: { parts: { text?: string }[] }[];
  history?: { messageId: string; role: string }[];
  metadata?: Record<string, { code?: string; message?: string }>;
}

describe('A2A agent under a protocol test suite and hostile callers', () => {
  let gw: TestGateway;
  let id = 0;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  const post = (method: string, params: unknown, key: string = KEYS.alice) =>
    fetch(`${gw.url}/a2a`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
    });
  const rpc = async (method: string, params: unknown, key?: string): Promise<RpcReply> => (await (await post(method, params, key)).json()) as RpcReply;
  const message = (parts: unknown[], extra: Record<string, unknown> = {}) => ({ messageId: crypto.randomUUID(), role: 'ROLE_USER', parts, ...extra });
  /** A completed task of alice's. */
  const aliceTask = async (): Promise<TaskJson> => {
    const reply = await rpc('SendMessage', { message: message([{ text: 'Hello' }]) });
    const task = reply.result!.task as TaskJson;
    expect(task.status.state).toBe('TASK_STATE_COMPLETED');
    return task;
  };
  /** The events recorded while `act` ran, once the gateway is idle. */
  const eventsOf = async (act: () => Promise<unknown>) => {
    await gw.idle();
    const before = gw.events.length;
    await act();
    await gw.idle();
    return gw.events.slice(before);
  };

  describe('refusals with the A2A error codes, each recorded once with its code', () => {
    it('answers CancelTask of a completed task with -32002 TaskNotCancelable', async () => {
      const task = await aliceTask();
      const events = await eventsOf(async () => {
        expect(await rpc('CancelTask', { id: task.id })).toMatchObject({ error: { code: -32002, message: `Task not cancelable: ${task.id}` } });
      });
      expect(events.map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([['a2a', 'INVALID_REQUEST', 'alice']]);
      expect(events[0]!.reason).toContain('JSON-RPC -32002');
    });

    it('answers each push notification method with -32003, as the card says pushNotifications: false', async () => {
      const task = await aliceTask();
      const config = { taskId: task.id, id: 'c1', url: 'https://hooks.example.test/a2a', token: '', authentication: undefined };
      const calls: [string, unknown][] = [
        ['CreateTaskPushNotificationConfig', config],
        ['GetTaskPushNotificationConfig', { taskId: task.id, id: 'c1' }],
        ['ListTaskPushNotificationConfigs', { taskId: task.id }],
        ['DeleteTaskPushNotificationConfig', { taskId: task.id, id: 'c1' }],
      ];
      const events = await eventsOf(async () => {
        for (const [method, params] of calls) expect((await rpc(method, params)).error?.code, method).toBe(-32003);
      });
      expect(events.map((e) => [e['error.code'], /JSON-RPC (-\d+)/.exec(String(e.reason))?.[1]])).toEqual(calls.map(() => ['INVALID_REQUEST', '-32003']));
    });

    it('answers a message continuing a completed task with -32004, and runs no call', async () => {
      const task = await aliceTask();
      const events = await eventsOf(async () => {
        const reply = await rpc('SendMessage', { message: message([{ text: 'And again' }], { taskId: task.id }) });
        expect(reply.error).toMatchObject({ code: -32004 });
      });
      expect(events.map((e) => [e.effect, e['error.code']])).toEqual([['error', 'INVALID_REQUEST']]);
    });

    it('answers SubscribeToTask of a completed task with -32004 as a JSON-RPC error, not as a stream', async () => {
      const task = await aliceTask();
      const res = await post('SubscribeToTask', { id: task.id });
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(((await res.json()) as RpcReply).error).toMatchObject({ code: -32004 });
    });

    it('answers GetTask of an unknown task with -32001 TaskNotFound', async () => {
      expect((await rpc('GetTask', { id: crypto.randomUUID() })).error?.code).toBe(-32001);
    });

    it('answers GetExtendedAgentCard, which the card does not offer, with an A2A error rather than an internal one', async () => {
      const reply = await rpc('GetExtendedAgentCard', {});
      expect(reply.error?.code).toBe(-32004);
    });
  });

  describe('a message to a task still running', () => {
    it('is refused with -32004 without a second call, and CancelTask still cancels the running one', async () => {
      // The demo provider answering after 10 s (or when aborted), counting the calls it receives.
      const slow = createDemoProvider('demo', { latencyMs: 10_000 });
      let received = 0;
      const counted: Provider = { ...slow, complete: (req) => (received++, slow.complete(req)), stream: (req, onText) => (received++, slow.stream(req, onText)) };
      const { gateway } = gw.runtime;
      const policy = gateway.policy;
      gateway.replacePolicy(policy, new Map([['demo', counted]]));
      try {
        const configuration = { returnImmediately: true };
        const first = await rpc('SendMessage', { message: message([{ text: 'First' }]), configuration });
        const task = first.result!.task as TaskJson;
        while (received === 0) await new Promise((r) => setTimeout(r, 10));
        const events = await eventsOf(async () => {
          const again = await rpc('SendMessage', { message: message([{ text: 'Second' }], { taskId: task.id }), configuration });
          expect(again.error).toEqual({
            code: -32004,
            message: `Task ${task.id} is still running: tollgate takes one message per task. Send the message without a taskId to start a new task.`,
            data: [expect.objectContaining({ reason: 'UNSUPPORTED_OPERATION' })],
          });
          const stream = await post('SendStreamingMessage', { message: message([{ text: 'Third' }], { taskId: task.id }) });
          expect(((await stream.json()) as RpcReply).error?.code).toBe(-32004);
        });
        expect(events.map((e) => [e['error.code'], /JSON-RPC (-\d+)/.exec(String(e.reason))?.[1]])).toEqual([
          ['INVALID_REQUEST', '-32004'],
          ['INVALID_REQUEST', '-32004'],
        ]);
        expect(received).toBe(1);
        const cancelled = await rpc('CancelTask', { id: task.id });
        expect((cancelled.result as unknown as TaskJson).status.state).toBe('TASK_STATE_CANCELED');
        const history = ((await rpc('GetTask', { id: task.id })).result as unknown as TaskJson).history;
        expect(history?.filter((m) => m.role === 'ROLE_USER')).toHaveLength(1);
      } finally {
        gateway.replacePolicy(policy);
      }
    });
  });

  describe("another caller's task is unknown to every method", () => {
    it('answers GetTask, CancelTask, SubscribeToTask, a continuing message and a push config for it with -32001, and lists none of it', async () => {
      const task = await aliceTask();
      const events = await eventsOf(async () => {
        expect((await rpc('GetTask', { id: task.id }, KEYS.bob)).error?.code).toBe(-32001);
        expect((await rpc('CancelTask', { id: task.id }, KEYS.bob)).error?.code).toBe(-32001);
        const sub = await post('SubscribeToTask', { id: task.id }, KEYS.bob);
        expect(await sub.text()).toContain('-32001');
        expect((await rpc('SendMessage', { message: message([{ text: 'Hi' }], { taskId: task.id }) }, KEYS.bob)).error?.code).toBe(-32001);
        expect((await rpc('SendMessage', { message: message([{ text: 'Hi' }], { taskId: task.id, contextId: task.contextId }) }, KEYS.bob)).error?.code).toBe(-32001);
      });
      expect(events.map((e) => [e['error.code'], e['user.id']])).toEqual(Array(5).fill(['NOT_FOUND', 'bob']));
      const listed = await rpc('ListTasks', {}, KEYS.bob);
      expect(JSON.stringify(listed)).not.toContain(task.id);
      const byContext = await rpc('ListTasks', { contextId: task.contextId }, KEYS.bob);
      expect(byContext.result).toMatchObject({ totalSize: 0 });
    });

    it("starts a new task of the caller's own for a message naming another caller's context, and leaves that context's task as it was", async () => {
      const task = await aliceTask();
      const reply = await rpc('SendMessage', { message: message([{ text: 'Mine' }], { contextId: task.contextId }) }, KEYS.bob);
      const bobs = reply.result!.task as TaskJson;
      expect(bobs.id).not.toBe(task.id);
      expect(JSON.stringify(bobs)).not.toContain('You said: Hello');
      const again = (await rpc('GetTask', { id: task.id })).result as unknown as TaskJson;
      expect(again.history?.map((m) => m.role)).toEqual(['ROLE_USER']);
    });
  });

  describe('historyLength on GetTask', () => {
    it('returns no history for historyLength 0, and the whole history when it is absent', async () => {
      const task = await aliceTask();
      const none = (await rpc('GetTask', { id: task.id, historyLength: 0 })).result as unknown as TaskJson;
      expect(none.history ?? []).toEqual([]);
      const all = (await rpc('GetTask', { id: task.id })).result as unknown as TaskJson;
      expect(all.history).toHaveLength(1);
    });
  });

  describe('parts the gateway cannot complete', () => {
    const refusedFor = async (parts: unknown[]) => {
      await gw.idle();
      const before = gw.events.length;
      const reply = await rpc('SendMessage', { message: message(parts) });
      await gw.idle();
      return { task: reply.result?.task as TaskJson | undefined, error: reply.error, events: gw.events.slice(before) };
    };

    it('refuses a file part beside the text, naming the part, rather than completing the text without it', async () => {
      const { task, events } = await refusedFor([{ text: 'Summarise this file' }, { url: 'https://files.example.test/report.pdf', mediaType: 'application/pdf' }]);
      expect(task?.status.state).toBe('TASK_STATE_FAILED');
      expect(task?.metadata?.['io.tollgate/error']).toMatchObject({ code: 'INVALID_REQUEST', message: 'message.parts.1: url parts are not supported by tollgate; only text parts go through.' });
      expect(events.map((e) => [e.effect, e['error.code']])).toEqual([['error', 'INVALID_REQUEST']]);
      expect(events[0]!['tollgate.charged']).toBeUndefined();
    });

    it('refuses raw bytes and data parts by name', async () => {
      const raw = await refusedFor([{ text: 'Read this' }, { raw: Buffer.from('secret').toString('base64'), mediaType: 'text/plain', filename: 'a.txt' }]);
      expect(raw.task?.metadata?.['io.tollgate/error']).toMatchObject({ message: 'message.parts.1: raw parts are not supported by tollgate; only text parts go through.' });
      const data = await refusedFor([{ data: { rows: [1, 2] } }, { text: 'Sum the rows' }]);
      expect(data.task?.metadata?.['io.tollgate/error']).toMatchObject({ message: 'message.parts.0: data parts are not supported by tollgate; only text parts go through.' });
    });

    it('refuses a part of no kind A2A v1.0 knows (a v0.3 file part) rather than dropping it', async () => {
      const { task } = await refusedFor([{ text: 'Read this' }, { kind: 'file', file: { uri: 'https://files.example.test/a.txt' } }]);
      expect(task?.metadata?.['io.tollgate/error']).toMatchObject({ code: 'INVALID_REQUEST', message: 'message.parts.1: a part with none of text, raw, url or data is not supported by tollgate; only text parts go through.' });
    });

    it('refuses a message with no parts as a failed task with INVALID_REQUEST', async () => {
      const { task, events } = await refusedFor([]);
      expect(task?.metadata?.['io.tollgate/error']).toMatchObject({ code: 'INVALID_REQUEST', message: 'The message has no text part to complete.' });
      expect(events.map((e) => e['error.code'])).toEqual(['INVALID_REQUEST']);
    });
  });
});
