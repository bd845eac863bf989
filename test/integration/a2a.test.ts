import { Role, TaskState, type Message, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, type Client } from '@a2a-js/sdk/client';
import { afterEach, describe, expect, it } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const NOW = Date.parse('2026-11-25T10:00:00Z'); // a Wednesday; the weekly budget resets Monday 00:00 Paris

async function precharge(gw: TestGateway, key: string, amount: number): Promise<void> {
  const g = gw.runtime.gateway;
  const lines = applicableLines(g.policy.budgets, keyPrincipal(g, key), NOW, 'tollgate:');
  await g.store.settle(`seed-${key}-${amount}`, lines.map((l) => ({ ...l.line, amount })));
}

/** The A2A SDK client, found from the gateway's Agent Card, sending `key` as a bearer token. */
async function a2aClient(url: string, key?: string): Promise<Client> {
  const fetchImpl: typeof fetch = (input, init) => {
    const headers = new Headers(init?.headers);
    if (key) headers.set('authorization', `Bearer ${key}`);
    return fetch(input, { ...init, headers });
  };
  const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] }));
  return factory.createFromUrl(url);
}

function userMessage(text: string, metadata?: Record<string, unknown>): Message {
  return {
    messageId: crypto.randomUUID(),
    contextId: '',
    taskId: '',
    role: Role.ROLE_USER,
    parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
    metadata,
    extensions: [],
    referenceTaskIds: [],
  };
}

const send = (client: Client, text: string, metadata?: Record<string, unknown>) =>
  client.sendMessage({ tenant: '', message: userMessage(text, metadata), configuration: undefined, metadata: undefined });

const textOf = (m: Message | undefined) => m?.parts.map((p) => (p.content?.$case === 'text' ? p.content.value : '')).join('');

describe('A2A agent with the A2A SDK client', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  const start = async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW, env: { TOLLGATE_LOG_LEVEL: 'silent' } });
    return gw;
  };

  it('publishes an Agent Card with the completion skill, the JSON-RPC URL, protocol 1.0 and a bearer scheme', async () => {
    await start();
    const res = await fetch(`${gw!.url}/.well-known/agent-card.json`, { headers: { 'a2a-version': '1.0' } });
    expect(res.status).toBe(200);
    const card = await res.json();
    expect(card.name).toBe('tollgate');
    expect(card.supportedInterfaces).toEqual([
      { url: `${gw!.url}/a2a`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: `${gw!.url}/a2a`, protocolBinding: 'JSONRPC', protocolVersion: '0.3' },
    ]);
    expect(card.capabilities).toEqual({ streaming: true, pushNotifications: false, extendedAgentCard: false });
    expect(card.securitySchemes).toEqual({
      bearer: { httpAuthSecurityScheme: { scheme: 'Bearer', description: 'A tollgate API key, or an access token from an issuer the gateway trusts.' } },
    });
    expect(card.securityRequirements).toEqual([{ schemes: { bearer: {} } }]);
    expect(card.defaultInputModes).toEqual(['text/plain']);
    expect(card.skills.map((s: { id: string }) => s.id)).toEqual(['complete']);
    expect(card.skills[0].description).toContain('premium, standard, economy');
  });

  it('answers SendMessage with a completed task holding the text and the call result', async () => {
    await start();
    const client = await a2aClient(gw!.url, KEYS.alice);
    const task = (await send(client, 'Hello')) as Task;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(task.artifacts).toHaveLength(1);
    expect(task.artifacts[0]!.parts.map((p) => p.content)).toEqual([{ $case: 'text', value: '[medium] You said: Hello' }]);
    expect(task.metadata?.['io.tollgate/result']).toMatchObject({
      model: 'demo/medium',
      tier: 'standard',
      usage: { inputTokens: 2, outputTokens: 4 },
      decision: { effect: 'allow' },
      budgets: [{ id: 'user-weekly', subject: 'alice', remaining: 9994 }],
    });
    expect(gw!.events.at(-1)).toMatchObject({ effect: 'allow', outcome: 'success', transport: 'a2a', 'user.id': 'alice' });
  });

  it('takes model, tier and max_tokens from the message metadata', async () => {
    await start();
    const client = await a2aClient(gw!.url, KEYS.alice);
    const task = (await send(client, 'Hello', { model: 'economy', max_tokens: 2 })) as Task;
    expect(task.metadata?.['io.tollgate/result']).toMatchObject({ model: 'demo/small', usage: { outputTokens: 2 } });
    expect(task.artifacts[0]!.parts.map((p) => p.content)).toEqual([{ $case: 'text', value: '[small] You ' }]);
  });

  it('streams SendStreamingMessage as task, working, text artifact pieces, the whole text, completed', async () => {
    await start();
    const client = await a2aClient(gw!.url, KEYS.alice);
    const events = [];
    for await (const e of client.sendMessageStream({ tenant: '', message: userMessage('Hello there'), configuration: undefined, metadata: undefined })) events.push(e.payload);
    expect(events.map((e) => e?.$case)).toEqual(['task', 'statusUpdate', 'artifactUpdate', 'artifactUpdate', 'artifactUpdate', 'artifactUpdate', 'artifactUpdate', 'artifactUpdate', 'statusUpdate']);
    const pieces = events.flatMap((e) => (e?.$case === 'artifactUpdate' ? [e.value] : []));
    expect(pieces.map((a) => [textOf(a.artifact as unknown as Message), a.append, a.lastChunk])).toEqual([
      ['[medium] ', false, false],
      ['You ', true, false],
      ['said: ', true, false],
      ['Hello ', true, false],
      ['there', true, false],
      ['[medium] You said: Hello there', false, true],
    ]);
    const last = events.at(-1);
    expect(last?.$case === 'statusUpdate' && last.value.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  });

  it('fails the task on an exhausted budget, with the code and reason in the status message', async () => {
    await start();
    await precharge(gw!, KEYS.alice, 10000);
    const client = await a2aClient(gw!.url, KEYS.alice);
    const task = (await send(client, 'Hello')) as Task;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(textOf(task.status?.message)).toBe('BUDGET_EXHAUSTED: Budget user-weekly (user alice) is exhausted; it resets at 2026-11-29T23:00:00.000Z.');
    expect(task.metadata?.['io.tollgate/error']).toEqual({
      code: 'BUDGET_EXHAUSTED',
      message: 'Budget user-weekly (user alice) is exhausted; it resets at 2026-11-29T23:00:00.000Z.',
      details: { budgetId: 'user-weekly', resetsAt: '2026-11-29T23:00:00.000Z' },
    });
    expect(task.artifacts).toEqual([]);
  });

  it('fails the task when a policy rule denies, naming the rule message', async () => {
    await start();
    const client = await a2aClient(gw!.url, KEYS.bob);
    const task = (await send(client, 'Hello', { tier: 'premium' })) as Task;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(textOf(task.status?.message)).toBe('POLICY_DENIED: Contractors may use standard and economy models only.');
  });

  it('cancels the call and releases its reservation when a streaming client disconnects', async () => {
    gw = await startTestGateway(basicPolicy().replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 10000 }'), { now: () => NOW });
    const g = gw.runtime.gateway;
    const budget = async () => (await g.myBudget(keyPrincipal(g, KEYS.alice)))[0]!;
    const client = await a2aClient(gw.url, KEYS.alice);
    const ac = new AbortController();
    const consumed = (async () => {
      for await (const _ of client.sendMessageStream({ tenant: '', message: userMessage('Hello'), configuration: undefined, metadata: undefined }, { signal: ac.signal }));
    })().catch((e: unknown) => e);
    while ((await budget()).reserved === 0) await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    expect(await consumed).toBeInstanceOf(Error);
    while (gw.events.length === 0) await new Promise((r) => setTimeout(r, 20));
    expect(gw.events[0]).toMatchObject({ transport: 'a2a', outcome: 'failed', 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  });

  it('cancels a running task on CancelTask and releases its reservation', async () => {
    gw = await startTestGateway(basicPolicy().replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 10000 }'), { now: () => NOW });
    const g = gw.runtime.gateway;
    const budget = async () => (await g.myBudget(keyPrincipal(g, KEYS.alice)))[0]!;
    const client = await a2aClient(gw.url, KEYS.alice);
    const configuration = { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true };
    const started = (await client.sendMessage({ tenant: '', message: userMessage('Hello'), configuration, metadata: undefined })) as Task;
    while ((await budget()).reserved === 0) await new Promise((r) => setTimeout(r, 20));
    const cancelled = await client.cancelTask({ tenant: '', id: started.id, metadata: undefined });
    expect(cancelled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect(textOf(cancelled.status?.message)).toBe('CANCELLED: The call was cancelled by the caller.');
    while (gw.events.length === 0) await new Promise((r) => setTimeout(r, 20));
    expect(gw.events[0]).toMatchObject({ transport: 'a2a', 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  });

  it("answers every /a2a request with an x-request-id, which a call's decision event and a refusal's event carry", async () => {
    await start();
    const message = { messageId: 'm-id', role: 'ROLE_USER', parts: [{ text: 'Hello' }] };
    const post = (body: unknown, key?: string) =>
      fetch(`${gw!.url}/a2a`, {
        method: 'POST',
        headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), 'content-type': 'application/json', 'a2a-version': '1.0' },
        body: JSON.stringify(body),
      });
    // A served call (blocking SendMessage), a streamed one, no credential, an unknown key and a JSON-RPC refusal.
    const served = await post({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } }, KEYS.alice);
    expect(((await served.json()) as { result?: unknown }).result).toBeDefined();
    const streamed = await post({ jsonrpc: '2.0', id: 2, method: 'SendStreamingMessage', params: { message: { ...message, messageId: 'm-id-2' } } }, KEYS.alice);
    expect(await streamed.text()).toContain('TASK_STATE_COMPLETED');
    const anonymous = await post({ jsonrpc: '2.0', id: 3, method: 'SendMessage', params: { message } });
    expect(anonymous.status).toBe(401);
    const stranger = await post({ jsonrpc: '2.0', id: 4, method: 'SendMessage', params: { message } }, 'not-a-key');
    expect(stranger.status).toBe(401);
    const unknown = await post({ jsonrpc: '2.0', id: 5, method: 'DropTables', params: {} }, KEYS.alice);
    expect(((await unknown.json()) as { error: { code: number } }).error.code).toBe(-32601);
    await gw!.idle();
    const ids = [served, streamed, anonymous, stranger, unknown].map((r) => r.headers.get('x-request-id'));
    for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(ids).size).toBe(5);
    expect(gw!.events.map((e) => [e['request.id'], e.effect, e['error.code']])).toEqual([
      [ids[0], 'allow', undefined],
      [ids[1], 'allow', undefined],
      [ids[2], 'error', 'AUTH_REQUIRED'],
      [ids[3], 'error', 'AUTH_INVALID'],
      [ids[4], 'error', 'INVALID_REQUEST'],
    ]);
  });

  it('refuses a call without a token and with an unknown one (HTTP 401), recording each refusal once with its code', async () => {
    await start();
    const anonymous = await a2aClient(gw!.url);
    await expect(send(anonymous, 'Hello')).rejects.toThrow(/Status: 401.*Missing Authorization header/);
    const stranger = await a2aClient(gw!.url, 'not-a-key');
    await expect(send(stranger, 'Hello')).rejects.toThrow(/Status: 401.*The API key is not recognised/);
    await gw!.idle();
    expect(gw!.events.map((e) => [e.transport, e.effect, e.outcome, e['error.code'], e['user.id'], e['auth.credential.kind']])).toEqual([
      ['a2a', 'error', 'refused', 'AUTH_REQUIRED', undefined, 'none'],
      ['a2a', 'error', 'refused', 'AUTH_INVALID', undefined, 'api_key'],
    ]);
    expect(gw!.events[1]!['auth.credential.fingerprint']).toMatch(/^[0-9a-f]{12}$/);
    expect(JSON.stringify(gw!.events)).not.toContain('not-a-key');
  });

  it('records each request the JSON-RPC layer refuses as one event with its code, as the caller\'s', async () => {
    await start();
    const message = { messageId: 'm-1', role: 'ROLE_USER', parts: [{ text: 'Hello' }] };
    const v1 = { 'a2a-version': '1.0' };
    const refused: [string, Record<string, string>, unknown, number, string][] = [
      ['no A2A-Version header', {}, { jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } }, -32009, 'INVALID_REQUEST'],
      ['a message without messageId', v1, { jsonrpc: '2.0', id: 2, method: 'SendMessage', params: { message: { role: 'ROLE_USER', parts: [{ text: 'Hello' }] } } }, -32602, 'INVALID_REQUEST'],
      ['params that are not an object', v1, { jsonrpc: '2.0', id: 3, method: 'SendMessage', params: 'Hello' }, -32602, 'INVALID_REQUEST'],
      ['jsonrpc 1.0', v1, { jsonrpc: '1.0', id: 4, method: 'SendMessage', params: { message } }, -32600, 'INVALID_REQUEST'],
      ['an unknown method', v1, { jsonrpc: '2.0', id: 5, method: 'DropTables', params: {} }, -32601, 'INVALID_REQUEST'],
      ['a text/plain body', { ...v1, 'content-type': 'text/plain' }, { jsonrpc: '2.0', id: 6, method: 'SendMessage', params: { message } }, -32005, 'INVALID_REQUEST'],
      ['an unknown task', v1, { jsonrpc: '2.0', id: 7, method: 'GetTask', params: { id: 'no-such-task' } }, -32001, 'NOT_FOUND'],
    ];
    for (const [what, headers, body, rpcCode, code] of refused) {
      const before = gw!.events.length;
      const res = await fetch(`${gw!.url}/a2a`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
      expect(res.status, what).toBe(200);
      expect(((await res.json()) as { error: { code: number } }).error.code, what).toBe(rpcCode);
      await gw!.idle();
      expect(gw!.events.slice(before).map((e) => [e.transport, e['error.code'], e['user.id']]), what).toEqual([['a2a', code, 'alice']]);
      expect(gw!.events.at(-1)!.reason, what).toContain(`JSON-RPC ${rpcCode}`);
    }
  });
});
