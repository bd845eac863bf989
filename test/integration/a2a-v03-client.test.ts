/**
 * tollgate's A2A agent with an A2A v0.3 client (the SDK's v0.3 JSON-RPC transport, which speaks
 * what the @a2a-js/sdk 0.3.x client speaks), found from the v0.3 Agent Card a v0.3 client reads:
 * the card served to a request without an A2A-Version header. The v1.0 client sends
 * `A2A-Version: 1.0` for the card and keeps getting the v1.0 one; even without it, it finds the
 * v1.0 interface.
 */
import { Role, TaskState, type Message, type Task } from '@a2a-js/sdk';
import { Client, ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { LegacyJsonRpcTransport, parseLegacyAgentCard } from '@a2a-js/sdk/compat/v0_3/client';
import { afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');

/** `fetch` sending `key` as a bearer token. */
const withKey =
  (key: string): typeof fetch =>
  (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set('authorization', `Bearer ${key}`);
    return fetch(input, { ...init, headers });
  };

/** A v0.3 client: reads the card without A2A-Version, as a v0.3 client does, and talks v0.3 JSON-RPC to its `url`. */
async function v03Client(baseUrl: string, key: string): Promise<Client> {
  const card = (await (await fetch(`${baseUrl}/.well-known/agent-card.json`)).json()) as { url: string };
  return new Client(new LegacyJsonRpcTransport({ endpoint: card.url, fetchImpl: withKey(key) }), parseLegacyAgentCard(card));
}

function userMessage(text: string): Message {
  return {
    messageId: crypto.randomUUID(),
    contextId: '',
    taskId: '',
    role: Role.ROLE_USER,
    parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
}

const textOf = (m: Message | undefined) => m?.parts.map((p) => (p.content?.$case === 'text' ? p.content.value : '')).join('');

describe('A2A v0.3 clients and the Agent Card', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  const start = async (policy = basicPolicy()) => {
    gw = await startTestGateway(policy, { now: () => NOW });
    return gw;
  };

  it('serves the v0.3 card to a request without A2A-Version: url, preferredTransport and protocolVersion 0.3', async () => {
    await start();
    const res = await fetch(`${gw!.url}/.well-known/agent-card.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('vary')).toMatch(/A2A-Version/i);
    const card = await res.json();
    expect([card.name, card.url, card.preferredTransport, card.protocolVersion]).toEqual(['tollgate', `${gw!.url}/a2a`, 'JSONRPC', '0.3']);
    expect(card.capabilities).toEqual({ streaming: true, pushNotifications: false });
    expect(card.securitySchemes).toEqual({
      bearer: { type: 'http', scheme: 'Bearer', description: 'A tollgate API key, or an access token from an issuer the gateway trusts.' },
    });
    expect(card.security).toEqual([{ bearer: [] }]);
    expect(card.defaultInputModes).toEqual(['text/plain']);
    expect(card.skills.map((s: { id: string }) => s.id)).toEqual(['complete']);
  });

  it('serves the v1.0 card to A2A-Version 1.0, listing the v0.3 interface after the v1.0 one', async () => {
    await start();
    const res = await fetch(`${gw!.url}/.well-known/agent-card.json`, { headers: { 'a2a-version': '1.0' } });
    expect(res.headers.get('vary')).toMatch(/A2A-Version/i);
    const card = await res.json();
    expect(card.url).toBeUndefined();
    expect(card.supportedInterfaces).toEqual([
      { url: `${gw!.url}/a2a`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: `${gw!.url}/a2a`, protocolBinding: 'JSONRPC', protocolVersion: '0.3' },
    ]);
  });

  it('lets the v1.0 client that reads the card without A2A-Version still pick the v1.0 interface', async () => {
    await start();
    let cardVersion: string | null | undefined;
    const noVersion: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers);
      headers.delete('a2a-version');
      cardVersion = headers.get('a2a-version');
      return fetch(input, { ...init, headers });
    };
    const factory = new ClientFactory(
      ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
        transports: [new JsonRpcTransportFactory({ fetchImpl: withKey(KEYS.alice) })],
        cardResolver: new DefaultAgentCardResolver({ fetchImpl: noVersion }),
      }),
    );
    const client = await factory.createFromUrl(gw!.url);
    expect(cardVersion).toBeNull();
    expect(client.protocolVersion).toBe('1.0');
    const task = (await client.sendMessage({ tenant: '', message: userMessage('Hello'), configuration: undefined, metadata: undefined })) as Task;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  });

  it('answers a v0.3 client\'s message/send with a completed task holding the text, recorded as one event', async () => {
    await start();
    const client = await v03Client(gw!.url, KEYS.alice);
    expect(client.protocolVersion).toBe('0.3');
    const task = (await client.sendMessage({ tenant: '', message: userMessage('Hello'), configuration: undefined, metadata: undefined })) as Task;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(task.artifacts[0]!.parts.map((p) => p.content)).toEqual([{ $case: 'text', value: '[medium] You said: Hello' }]);
    await gw!.idle();
    expect(gw!.events.map((e) => [e.transport, e.effect, e.outcome, e['user.id']])).toEqual([['a2a', 'allow', 'success', 'alice']]);
  });

  it("streams a v0.3 client's message/stream to a completed status with the whole text", async () => {
    await start();
    const client = await v03Client(gw!.url, KEYS.alice);
    const events = [];
    for await (const e of client.sendMessageStream({ tenant: '', message: userMessage('Hello there'), configuration: undefined, metadata: undefined })) events.push(e.payload);
    expect(events.map((e) => e?.$case)).toEqual(['task', 'statusUpdate', ...Array(6).fill('artifactUpdate'), 'statusUpdate']);
    const last = events.at(-1);
    expect(last?.$case === 'statusUpdate' && last.value.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    const whole = events.at(-2);
    expect(whole?.$case === 'artifactUpdate' && textOf(whole.value.artifact as unknown as Message)).toBe('[medium] You said: Hello there');
  });

  it("reads a v0.3 client's task back with tasks/get, and not another caller's", async () => {
    await start();
    const client = await v03Client(gw!.url, KEYS.alice);
    const sent = (await client.sendMessage({ tenant: '', message: userMessage('Hello'), configuration: undefined, metadata: undefined })) as Task;
    const task = await client.getTask({ tenant: '', id: sent.id, historyLength: undefined });
    expect([task.id, task.status?.state]).toEqual([sent.id, TaskState.TASK_STATE_COMPLETED]);
    const bob = await v03Client(gw!.url, KEYS.bob);
    await expect(bob.getTask({ tenant: '', id: sent.id, historyLength: undefined })).rejects.toThrow(/not found/i);
  });

  it("cancels a v0.3 client's running task on tasks/cancel and releases its reservation", async () => {
    await start(basicPolicy().replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 10000 }'));
    const g = gw!.runtime.gateway;
    const budget = async () => (await g.myBudget(keyPrincipal(g, KEYS.alice)))[0]!;
    const client = await v03Client(gw!.url, KEYS.alice);
    const configuration = { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true };
    const started = (await client.sendMessage({ tenant: '', message: userMessage('Hello'), configuration, metadata: undefined })) as Task;
    while ((await budget()).reserved === 0) await new Promise((r) => setTimeout(r, 20));
    const cancelled = await client.cancelTask({ tenant: '', id: started.id, metadata: undefined });
    expect(cancelled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect(textOf(cancelled.status?.message)).toBe('CANCELLED: The call was cancelled by the caller.');
    while (gw!.events.length === 0) await new Promise((r) => setTimeout(r, 20));
    expect(gw!.events[0]).toMatchObject({ transport: 'a2a', 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  });
});
