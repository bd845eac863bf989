/**
 * tollgate's A2A agent as an A2A v0.3 caller sees it over raw HTTP, the way the v0.3 protocol test
 * suite (a2a-tck) sends it: `message/send`, `message/stream`, `tasks/get` and `tasks/cancel`
 * without an A2A-Version header, answered in v0.3 shapes (`kind`, lower-case states, `kind: "text"`
 * parts) on the same endpoint as v1.0, with the same charging, decision events, refusals,
 * cancellation and per-caller tasks.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');

interface RpcReply {
  jsonrpc: string;
  id: unknown;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
}

interface TaskJson {
  kind: string;
  id: string;
  contextId: string;
  status: { state: string; message?: { kind: string; role: string; parts: { kind: string; text?: string }[] } };
  artifacts?: { artifactId: string; name?: string; parts: { kind: string; text?: string }[] }[];
  history?: { kind: string; messageId: string; role: string }[];
  metadata?: Record<string, Record<string, unknown>>;
}

/** A v0.3 user message, as the TCK writes one. */
const message = (text: string, extra: Record<string, unknown> = {}) => ({ kind: 'message', messageId: crypto.randomUUID(), role: 'user', parts: [{ kind: 'text', text }], ...extra });

/** The `data:` payloads of an SSE body, parsed. */
const sseData = (body: string) =>
  body
    .split(/\n\n/)
    .flatMap((event) => event.split('\n').filter((line) => line.startsWith('data:')).map((line) => JSON.parse(line.slice(5)) as RpcReply));

describe('A2A v0.3 over raw JSON-RPC', () => {
  let gw: TestGateway | undefined;
  let id = 0;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  const start = async (policy = basicPolicy()) => {
    gw = await startTestGateway(policy, { now: () => NOW });
    return gw;
  };
  const slow = () => start(basicPolicy().replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 10000 }'));

  const post = (method: string, params: unknown, opts: { key?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}) =>
    fetch(`${gw!.url}/a2a`, {
      method: 'POST',
      headers: { ...(opts.key === '' ? {} : { authorization: `Bearer ${opts.key ?? KEYS.alice}` }), 'content-type': 'application/json', ...opts.headers },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
      signal: opts.signal,
    });
  const rpc = async (method: string, params: unknown, opts: { key?: string; headers?: Record<string, string> } = {}): Promise<RpcReply> =>
    (await (await post(method, params, opts)).json()) as RpcReply;
  const budget = async () => {
    const g = gw!.runtime.gateway;
    return (await g.myBudget(keyPrincipal(g, KEYS.alice)))[0]!;
  };
  const until = async (done: () => boolean | Promise<boolean>) => {
    while (!(await done())) await new Promise((r) => setTimeout(r, 20));
  };

  it('answers message/send with a v0.3 task: kind "task", state "completed", a text artifact and the call result', async () => {
    await start();
    const res = await post('message/send', { message: message('Hello') });
    expect(res.status).toBe(200);
    const reply = (await res.json()) as RpcReply;
    expect(reply.error).toBeUndefined();
    const task = reply.result as unknown as TaskJson;
    expect(task.kind).toBe('task');
    expect(task.status.state).toBe('completed');
    expect(task.artifacts).toHaveLength(1);
    expect(task.artifacts![0]!.parts).toEqual([{ kind: 'text', text: '[medium] You said: Hello' }]);
    expect(task.history!.map((m) => [m.kind, m.role])).toEqual([['message', 'user']]);
    expect(task.metadata?.['io.tollgate/result']).toMatchObject({ model: 'demo/medium', usage: { inputTokens: 2, outputTokens: 4 }, decision: { effect: 'allow' } });
    await gw!.idle();
    expect(gw!.events.map((e) => [e['request.id'], e.transport, e.effect, e.outcome, e['user.id']])).toEqual([[res.headers.get('x-request-id'), 'a2a', 'allow', 'success', 'alice']]);
  });

  it('takes model and max_tokens from the v0.3 message metadata', async () => {
    await start();
    const task = (await rpc('message/send', { message: message('Hello', { metadata: { model: 'economy', max_tokens: 2 } }) })).result as unknown as TaskJson;
    expect(task.metadata?.['io.tollgate/result']).toMatchObject({ model: 'demo/small', usage: { outputTokens: 2 } });
    expect(task.artifacts![0]!.parts).toEqual([{ kind: 'text', text: '[small] You ' }]);
  });

  it('streams message/stream as v0.3 events: task, status-update, artifact-update pieces, final status-update completed', async () => {
    await start();
    const res = await post('message/stream', { message: message('Hello there') }, { headers: { accept: 'text/event-stream' } });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const replies = sseData(await res.text());
    expect(replies.every((r) => r.id === id && r.error === undefined)).toBe(true);
    const events = replies.map((r) => r.result as Record<string, unknown>);
    expect(events.map((e) => e.kind)).toEqual(['task', 'status-update', ...Array(6).fill('artifact-update'), 'status-update']);
    const pieces = events.filter((e) => e.kind === 'artifact-update') as unknown as { artifact: { parts: unknown[] }; append: boolean; lastChunk: boolean }[];
    expect(pieces.at(-1)).toMatchObject({ artifact: { parts: [{ kind: 'text', text: '[medium] You said: Hello there' }] }, append: false, lastChunk: true });
    expect(events.at(-1)).toMatchObject({ kind: 'status-update', final: true, status: { state: 'completed' } });
    await gw!.idle();
    expect(gw!.events.map((e) => [e.transport, e.effect, e.outcome])).toEqual([['a2a', 'allow', 'success']]);
  });

  it('answers tasks/get with the stored task in the v0.3 shape (and v1.0 GetTask with it in v1.0\'s), recording no call', async () => {
    await start();
    const sent = (await rpc('message/send', { message: message('Hello') })).result as unknown as TaskJson;
    await gw!.idle();
    const before = gw!.events.length;
    const task = (await rpc('tasks/get', { id: sent.id })).result as unknown as TaskJson;
    expect([task.kind, task.id, task.status.state]).toEqual(['task', sent.id, 'completed']);
    expect(task.artifacts![0]!.parts).toEqual([{ kind: 'text', text: '[medium] You said: Hello' }]);
    const v1 = (await rpc('GetTask', { id: sent.id }, { headers: { 'a2a-version': '1.0' } })).result as unknown as TaskJson;
    expect(v1.status.state).toBe('TASK_STATE_COMPLETED');
    await gw!.idle();
    expect(gw!.events.length).toBe(before);
  });

  it("never shows one caller another caller's task: tasks/get and tasks/cancel answer -32001, recorded as NOT_FOUND", async () => {
    await start();
    const sent = (await rpc('message/send', { message: message('Hello') })).result as unknown as TaskJson;
    await gw!.idle();
    const before = gw!.events.length;
    expect((await rpc('tasks/get', { id: sent.id }, { key: KEYS.bob })).error?.code).toBe(-32001);
    expect((await rpc('tasks/cancel', { id: sent.id }, { key: KEYS.bob })).error?.code).toBe(-32001);
    await gw!.idle();
    expect(gw!.events.slice(before).map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([
      ['a2a', 'NOT_FOUND', 'bob'],
      ['a2a', 'NOT_FOUND', 'bob'],
    ]);
  });

  it("refuses tasks/resubscribe to another caller's task with an SSE error event -32001, recorded as NOT_FOUND", async () => {
    await start();
    const sent = (await rpc('message/send', { message: message('Hello') })).result as unknown as TaskJson;
    await gw!.idle();
    const before = gw!.events.length;
    const res = await post('tasks/resubscribe', { id: sent.id }, { key: KEYS.bob, headers: { accept: 'text/event-stream' } });
    const body = await res.text();
    expect(body).not.toContain('You said');
    expect(sseData(body).map((r) => r.error?.code)).toEqual([-32001]);
    await gw!.idle();
    expect(gw!.events.slice(before).map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([['a2a', 'NOT_FOUND', 'bob']]);
  });

  it('fails the task on a v0.3 file part, naming it, rather than completing the text without it', async () => {
    await start();
    const parts = [{ kind: 'text', text: 'Summarise this' }, { kind: 'file', file: { uri: 'https://example.com/report.pdf', mimeType: 'application/pdf' } }];
    const task = (await rpc('message/send', { message: { ...message(''), parts } })).result as unknown as TaskJson;
    expect([task.kind, task.status.state]).toEqual(['task', 'failed']);
    expect(task.status.message?.parts).toEqual([{ kind: 'text', text: 'INVALID_REQUEST: message.parts.1: url parts are not supported by tollgate; only text parts go through.' }]);
    await gw!.idle();
    expect(gw!.events.map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([['a2a', 'INVALID_REQUEST', 'alice']]);
  });

  it('fails the task on a policy denial, in the v0.3 shape, with the code in the status message', async () => {
    await start();
    const task = (await rpc('message/send', { message: message('Hello', { metadata: { tier: 'premium' } }) }, { key: KEYS.bob })).result as unknown as TaskJson;
    expect([task.kind, task.status.state]).toEqual(['task', 'failed']);
    expect(task.status.message?.parts).toEqual([{ kind: 'text', text: 'POLICY_DENIED: Contractors may use standard and economy models only.' }]);
    await gw!.idle();
    expect(gw!.events.map((e) => [e.transport, e.effect, e['error.code'], e['user.id']])).toEqual([['a2a', 'deny', 'POLICY_DENIED', 'bob']]);
  });

  it('cancels a running task on tasks/cancel, aborting the call and releasing its reservation', async () => {
    await slow();
    const started = (await rpc('message/send', { message: message('Hello'), configuration: { blocking: false } })).result as unknown as TaskJson;
    expect(started.kind).toBe('task');
    await until(async () => (await budget()).reserved > 0);
    const cancelled = (await rpc('tasks/cancel', { id: started.id })).result as unknown as TaskJson;
    expect([cancelled.kind, cancelled.status.state]).toEqual(['task', 'canceled']);
    expect(cancelled.status.message?.parts).toEqual([{ kind: 'text', text: 'CANCELLED: The call was cancelled by the caller.' }]);
    await until(() => gw!.events.length > 0);
    expect(gw!.events[0]).toMatchObject({ transport: 'a2a', outcome: 'failed', 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  });

  it('cancels the call and releases its reservation when a message/stream client leaves', async () => {
    await slow();
    const ac = new AbortController();
    const res = await post('message/stream', { message: message('Hello') }, { headers: { accept: 'text/event-stream' }, signal: ac.signal });
    expect(res.status).toBe(200);
    await until(async () => (await budget()).reserved > 0);
    ac.abort();
    await until(() => gw!.events.length > 0);
    expect(gw!.events[0]).toMatchObject({ transport: 'a2a', outcome: 'failed', 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  });

  it('refuses message/send without a token and with an unknown one (HTTP 401), recording each with its code', async () => {
    await start();
    expect((await post('message/send', { message: message('Hello') }, { key: '' })).status).toBe(401);
    expect((await post('message/send', { message: message('Hello') }, { key: 'not-a-key' })).status).toBe(401);
    await gw!.idle();
    expect(gw!.events.map((e) => [e.transport, e.effect, e['error.code']])).toEqual([
      ['a2a', 'error', 'AUTH_REQUIRED'],
      ['a2a', 'error', 'AUTH_INVALID'],
    ]);
  });

  it('records each request the v0.3 JSON-RPC layer refuses as one event with its code, as the caller\'s', async () => {
    await start();
    const v03 = { 'a2a-version': '0.3' };
    const refused: [string, Record<string, string>, unknown, number, string][] = [
      ['a message without parts', {}, { jsonrpc: '2.0', id: 1, method: 'message/send', params: { message: { kind: 'message', messageId: 'm', role: 'user' } } }, -32602, 'INVALID_REQUEST'],
      ['params that are not an object', {}, { jsonrpc: '2.0', id: 2, method: 'message/send', params: 'Hello' }, -32602, 'INVALID_REQUEST'],
      ['tasks/get without params', {}, { jsonrpc: '2.0', id: 3, method: 'tasks/get' }, -32602, 'INVALID_REQUEST'],
      ['jsonrpc 1.0', {}, { jsonrpc: '1.0', id: 4, method: 'message/send', params: { message: message('Hello') } }, -32600, 'INVALID_REQUEST'],
      ['an unknown method', {}, { jsonrpc: '2.0', id: 5, method: 'tasks/drop' }, -32601, 'INVALID_REQUEST'],
      ['a v1.0 method with A2A-Version 0.3', v03, { jsonrpc: '2.0', id: 6, method: 'SendMessage', params: { message: message('Hello') } }, -32601, 'INVALID_REQUEST'],
      ['an unknown task', v03, { jsonrpc: '2.0', id: 7, method: 'tasks/get', params: { id: 'no-such-task' } }, -32001, 'NOT_FOUND'],
    ];
    for (const [what, headers, body, rpcCode, code] of refused) {
      const before = gw!.events.length;
      const res = await fetch(`${gw!.url}/a2a`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
      expect(res.status, what).toBe(200);
      expect(((await res.json()) as RpcReply).error?.code, what).toBe(rpcCode);
      await gw!.idle();
      expect(gw!.events.slice(before).map((e) => [e.transport, e['error.code'], e['user.id']]), what).toEqual([['a2a', code, 'alice']]);
      expect(gw!.events.at(-1)!.reason, what).toContain(`JSON-RPC ${rpcCode}`);
    }
  });

  it('still answers v1.0 methods with A2A-Version 1.0 on the same endpoint, and v0.3 names there with -32601', async () => {
    await start();
    const v1 = { 'a2a-version': '1.0' };
    const reply = await rpc('SendMessage', { message: { messageId: 'm-1', role: 'ROLE_USER', parts: [{ text: 'Hello' }] } }, { headers: v1 });
    expect((reply.result?.task as { status: { state: string } }).status.state).toBe('TASK_STATE_COMPLETED');
    expect((await rpc('message/send', { message: message('Hello') }, { headers: v1 })).error?.code).toBe(-32601);
  });
});
