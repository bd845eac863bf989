/**
 * An A2A SendStreamingMessage whose client leaves once the text has begun, in front of the fake
 * Anthropic server answering one word every 300 ms: the call is recorded once, as CANCELLED, and
 * charged what Anthropic reported (its input) and the text that arrived, with nothing left reserved.
 * (A client gone before the provider answered is a2a.test.ts's and compat-cancel.test.ts's.)
 */
import { Role, TaskState, type Message } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { promptTokens, replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const KEY = 'key-streamer';
const PROMPT = 'Summarise the incident report for the board';

function policyText(anthropic: FakeProviderServer): string {
  return `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${anthropic.url}", timeoutMs: 30000 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
tiers:
  claude: [anthropic/claude-sonnet-4-5]
defaultTier: claude
apiKeys:
  - { id: k-streamer, sha256: ${sha(KEY)}, user: erin, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
`;
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('an A2A stream its client leaves once the text has begun', () => {
  let anthropic: FakeProviderServer;
  let gw: TestGateway;
  beforeAll(async () => {
    anthropic = await startFakeAnthropic();
    anthropic.setWordDelay(300);
    gw = await startTestGateway(policyText(anthropic));
  });
  afterAll(async () => {
    await gw.close();
    await anthropic.close();
  });

  it('is recorded once as CANCELLED and charged the input Anthropic reported and the text that arrived', async () => {
    const fetchImpl: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers);
      headers.set('authorization', `Bearer ${KEY}`);
      return fetch(input, { ...init, headers });
    };
    const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] }));
    const client = await factory.createFromUrl(gw.url);
    const message: Message = {
      messageId: crypto.randomUUID(),
      contextId: '',
      taskId: '',
      role: Role.ROLE_USER,
      parts: [{ content: { $case: 'text', value: PROMPT }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
      metadata: { max_tokens: 40 },
      extensions: [],
      referenceTaskIds: [],
    };
    const ac = new AbortController();
    const seen: string[] = [];
    let taskId = '';
    const left = (async () => {
      for await (const e of client.sendMessageStream({ tenant: '', message, configuration: undefined, metadata: undefined }, { signal: ac.signal })) {
        seen.push(e.payload?.$case ?? '');
        if (e.payload?.$case === 'task') taskId = e.payload.value.id;
        if (e.payload?.$case === 'artifactUpdate') ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(await left).toBeInstanceOf(Error);
    expect(seen).toEqual(['task', 'statusUpdate', 'artifactUpdate']);
    await until(() => anthropic.requests[0]?.aborted === true);
    await until(() => gw.events.length > 0);
    await gw.idle();
    expect(gw.events).toHaveLength(1);
    const input = promptTokens(undefined, [{ content: PROMPT }]);
    const e = gw.events[0]!;
    // The output's bound before message_delta: one token per UTF-8 byte of the word that arrived.
    const output = Buffer.byteLength(replyWords('anthropic', PROMPT, 40)[0]!);
    expect(e).toMatchObject({ transport: 'a2a', outcome: 'failed', 'error.code': 'CANCELLED', 'gen_ai.usage.input_tokens': input, 'gen_ai.usage.output_tokens': output });
    expect((e['tollgate.charged'] ?? []).reduce((n, c) => n + c.amount, 0)).toBe(input + output);
    const g = gw.runtime.gateway;
    expect((await g.myBudget(keyPrincipal(g, KEY)))[0]).toMatchObject({ used: input + output, reserved: 0 });
    // The task says so too, for a caller who comes back for it.
    const task = await client.getTask({ tenant: '', id: taskId, historyLength: undefined });
    expect(task.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
  });
});
