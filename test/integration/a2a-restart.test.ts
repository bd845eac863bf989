/**
 * A2A tasks survive a restart on the embedded store: a gateway serving from a data directory keeps
 * them in tasks.jsonl there, and a new gateway on the same directory answers GetTask for a task
 * the first one created, to the same caller only.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Role, TaskState, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, type Client } from '@a2a-js/sdk/client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

async function a2aClient(url: string, key: string): Promise<Client> {
  const fetchImpl: typeof fetch = (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set('authorization', `Bearer ${key}`);
    return fetch(input, { ...init, headers });
  };
  const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] }));
  return factory.createFromUrl(url);
}

const send = (client: Client, text: string) =>
  client.sendMessage({
    tenant: '',
    message: {
      messageId: crypto.randomUUID(),
      contextId: '',
      taskId: '',
      role: Role.ROLE_USER,
      parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
      metadata: undefined,
      extensions: [],
      referenceTaskIds: [],
    },
    configuration: undefined,
    metadata: undefined,
  });

describe('A2A tasks in the data directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-a2a-'));
  let gw: TestGateway | undefined;
  const start = async (env: Record<string, string> = { TOLLGATE_DATA_DIR: dir }) => (gw = await startTestGateway(basicPolicy(), { env }));
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('answers GetTask after a restart with the task created before it, for its caller only', async () => {
    await start();
    const created = (await send(await a2aClient(gw!.url, KEYS.alice), 'Hello')) as Task;
    expect(created.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(existsSync(join(dir, 'tasks.jsonl'))).toBe(true);
    await gw!.close();
    gw = undefined;

    await start();
    const alice = await a2aClient(gw!.url, KEYS.alice);
    const fetched = await alice.getTask({ tenant: '', id: created.id });
    expect(fetched.id).toBe(created.id);
    expect(fetched.contextId).toBe(created.contextId);
    expect(fetched.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(fetched.artifacts.map((a) => a.parts.map((p) => p.content))).toEqual([[{ $case: 'text', value: '[medium] You said: Hello' }]]);
    expect(fetched.metadata?.['io.tollgate/result']).toEqual(created.metadata?.['io.tollgate/result']);
    // Another caller does not see it.
    await expect((await a2aClient(gw!.url, KEYS.carol)).getTask({ tenant: '', id: created.id })).rejects.toThrow(/not found/i);
  });

  it('starts after a damaged tasks.jsonl and answers GetTask for every task it could read', async () => {
    await start();
    const alice = await a2aClient(gw!.url, KEYS.alice);
    const created = [] as Task[];
    for (const text of ['one', 'two', 'three']) created.push((await send(alice, text)) as Task);
    await gw!.close();
    gw = undefined;
    // As a write cut short used to leave it: a half line in the middle, with the next line glued onto it, and a torn last line.
    const file = join(dir, 'tasks.jsonl');
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    const last = lines.pop()!;
    writeFileSync(file, `${lines.join('\n')}\n${last.slice(0, 40)}${last}\n${last.slice(0, 25)}`);

    await start();
    const after = await a2aClient(gw!.url, KEYS.alice);
    for (const task of created) expect((await after.getTask({ tenant: '', id: task.id })).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(readFileSync(file, 'utf8').endsWith('\n')).toBe(true);
    // And it goes on writing: a task created now is there after another restart.
    const later = (await send(after, 'four')) as Task;
    await gw!.close();
    gw = undefined;
    await start();
    expect((await (await a2aClient(gw!.url, KEYS.alice)).getTask({ tenant: '', id: later.id })).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  });

  it('keeps tasks in memory only without a data directory', async () => {
    await start({ TOLLGATE_DATA_DIR: 'none' });
    const created = (await send(await a2aClient(gw!.url, KEYS.alice), 'Hello')) as Task;
    await gw!.close();
    await start({ TOLLGATE_DATA_DIR: 'none' });
    await expect((await a2aClient(gw!.url, KEYS.alice)).getTask({ tenant: '', id: created.id })).rejects.toThrow(/not found/i);
  });
});
