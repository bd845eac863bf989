/**
 * A caller who leaves mid-call, on every way in (MCP over HTTP with a JSON or an SSE answer and
 * notifications/cancelled, MCP over stdio, the OpenAI- and Anthropic-compatible endpoints plain and
 * streamed, A2A SendMessage, SendStreamingMessage and CancelTask), in front of the real provider SDKs
 * talking to the fake providers. The positive signal is the fake's own log: the upstream request was
 * aborted, or never made. And the ledger: a call left before the provider answered is released; one
 * left once the provider had begun answering is charged what the provider reported, or the input
 * bound when it reported nothing; one the provider finished is charged in full and not CANCELLED.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { Role, TaskState, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deltasIn, openMcpSession, requestFor, send, TRANSPORTS, type Transport } from '../../tools/bench/clients.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import { promptTokens, replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';
import type { DecisionEvent } from '../../src/metering/events.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { LedgerLine, LineState } from '../../src/quota/store.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';
import { keyPrincipal } from '../helpers/principal.js';
import { spawnGateway } from '../helpers/process.js';

const KEY = 'key-leaver';
const RESOURCE = 'https://ai.example.test/mcp';
const PROMPT = 'Summarise the incident report for the board';
const MAX_TOKENS = 40;
type Upstream = 'anthropic' | 'openai';
/** The tier served by each fake. */
const TIER: Record<Upstream, string> = { anthropic: 'claude', openai: 'gpt' };

function policyText(anthropic: FakeProviderServer, openai: FakeProviderServer, idp?: TestIssuer): string {
  const identity = idp
    ? `identity:
  resource: ${RESOURCE}
  oidc:
    - issuer: ${idp.issuer}
      jwksUri: ${idp.jwksUri}
      jwksCacheSeconds: 0
      jwksCooldownSeconds: 0
      claims: { user: preferred_username }
`
    : '';
  return `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${anthropic.url}", timeoutMs: 30000 }
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${openai.url}", timeoutMs: 30000 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  claude: [anthropic/claude-sonnet-4-5]
  gpt: [openai/gpt-5-mini]
defaultTier: claude
apiKeys:
  - { id: k-leaver, sha256: ${sha(KEY)}, user: erin, teams: [research] }
${identity}budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
`;
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The memory store, with reads as slow as the test says (a store across a slow network). */
class SlowReadStore extends MemoryQuotaStore {
  delayMs = 0;
  override async read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    if (this.delayMs > 0) await sleep(this.delayMs);
    return super.read(lines);
  }
}

/** The event's transport for a client transport. */
const eventTransport = (kind: Transport) => (kind.startsWith('mcp') ? 'http' : kind.startsWith('a2a') ? 'a2a' : kind.replace('-stream', ''));

describe('a caller who leaves mid-call', () => {
  let fakes: Record<Upstream, FakeProviderServer>;
  let gw: TestGateway | undefined;
  const cleanup: (() => Promise<void> | void)[] = [];

  beforeAll(async () => {
    const [anthropic, openai] = await Promise.all([startFakeAnthropic(), startFakeOpenAI()]);
    fakes = { anthropic, openai };
  });
  afterAll(async () => {
    await Promise.all([fakes.anthropic.close(), fakes.openai.close()]);
  });
  beforeEach(() => {
    fakes.anthropic.reset();
    fakes.openai.reset();
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
    await gw?.close();
    gw = undefined;
  });

  const start = async (idp?: TestIssuer) => {
    gw = await startTestGateway(policyText(fakes.anthropic, fakes.openai, idp));
    return gw;
  };
  const budget = async () => {
    const g = gw!.runtime.gateway;
    return (await g.myBudget(keyPrincipal(g, KEY)))[0]!;
  };
  /** The one decision event of the call, once it is recorded. */
  const theEvent = async (): Promise<DecisionEvent> => {
    await until(() => gw!.events.length > 0);
    await gw!.idle();
    expect(gw!.events).toHaveLength(1);
    return gw!.events[0]!;
  };
  const chargedOf = (e: DecisionEvent) => (e['tollgate.charged'] ?? []).reduce((n, c) => n + c.amount, 0);

  /** Checks the call was cancelled, released and charged nothing, with the upstream request aborted. */
  async function expectAbortedAndReleased(fake: FakeProviderServer, transport: string): Promise<void> {
    await until(() => fake.requests[0]?.aborted === true);
    expect(fake.counts).toEqual({ received: 1, completed: 0, aborted: 1 });
    const e = await theEvent();
    expect(e).toMatchObject({ transport, outcome: 'failed', 'error.code': 'CANCELLED' });
    expect(e['tollgate.charged']).toBeUndefined();
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  }

  describe('before the provider answers: the upstream request is aborted and nothing is charged', () => {
    for (const upstream of ['anthropic', 'openai'] as const) {
      for (const kind of TRANSPORTS) {
        it(`${kind} client disconnects, ${upstream} upstream`, async () => {
          await start();
          const fake = fakes[upstream];
          fake.setLatency(30_000);
          const session = kind.startsWith('mcp') ? await openMcpSession(gw!.url, KEY) : undefined;
          const ac = new AbortController();
          const pending = send(kind, { base: gw!.url, token: KEY, tier: TIER[upstream], prompt: PROMPT, maxTokens: MAX_TOKENS, session, signal: ac.signal }).catch((e: unknown) => e);
          await until(() => fake.counts.received === 1);
          ac.abort();
          expect(await pending).toBeInstanceOf(Error);
          await expectAbortedAndReleased(fake, eventTransport(kind));
        });
      }

      it(`MCP client sends notifications/cancelled (on its session, in another POST), ${upstream} upstream`, async () => {
        await start();
        const fake = fakes[upstream];
        fake.setLatency(30_000);
        const client = await connectHttp(gw!.mcpUrl, KEY);
        cleanup.push(() => client.close());
        const ac = new AbortController();
        const pending = client.callTool({ name: 'complete', arguments: { prompt: PROMPT, tier: TIER[upstream] } }, undefined, { signal: ac.signal }).catch((e: unknown) => e);
        await until(() => fake.counts.received === 1);
        ac.abort();
        expect(await pending).toBeInstanceOf(Error);
        await expectAbortedAndReleased(fake, 'http');
      });

      it(`A2A client sends CancelTask for a task it started, ${upstream} upstream`, async () => {
        await start();
        const fake = fakes[upstream];
        fake.setLatency(30_000);
        const fetchImpl: typeof fetch = (input, init) => fetch(input, { ...init, headers: { ...Object.fromEntries(new Headers(init?.headers)), authorization: `Bearer ${KEY}` } });
        const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] }));
        const client = await factory.createFromUrl(gw!.url);
        const message = { messageId: crypto.randomUUID(), contextId: '', taskId: '', role: Role.ROLE_USER, parts: [{ content: { $case: 'text' as const, value: PROMPT }, metadata: undefined, filename: '', mediaType: 'text/plain' }], metadata: { tier: TIER[upstream] }, extensions: [], referenceTaskIds: [] };
        const configuration = { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true };
        const task = (await client.sendMessage({ tenant: '', message, configuration, metadata: undefined })) as Task;
        await until(() => fake.counts.received === 1);
        const cancelled = await client.cancelTask({ tenant: '', id: task.id, metadata: undefined });
        expect(cancelled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
        await expectAbortedAndReleased(fake, 'a2a');
      });

      it(`stdio client sends notifications/cancelled, ${upstream} upstream`, async () => {
        const fake = fakes[upstream];
        fake.setLatency(30_000);
        const dir = mkdtempSync(join(tmpdir(), 'tollgate-cancel-'));
        cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
        const policy = join(dir, 'policy.yaml');
        const events = join(dir, 'events.jsonl');
        writeFileSync(policy, policyText(fakes.anthropic, fakes.openai));
        const client = new Client({ name: 'tollgate-test', version: '1.0.0' });
        await client.connect(
          new StdioClientTransport({
            command: process.execPath,
            args: ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policy],
            env: { PATH: process.env.PATH ?? '', TOLLGATE_API_KEY: KEY, TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: events },
            stderr: 'ignore',
          }),
        );
        cleanup.push(() => client.close());
        const ac = new AbortController();
        const pending = client.callTool({ name: 'complete', arguments: { prompt: PROMPT, tier: TIER[upstream] } }, undefined, { signal: ac.signal }).catch((e: unknown) => e);
        await until(() => fake.counts.received === 1, 15_000);
        ac.abort();
        expect(await pending).toBeInstanceOf(Error);
        await until(() => fake.requests[0]?.aborted === true);
        expect(fake.counts).toEqual({ received: 1, completed: 0, aborted: 1 });
        const readEvents = () => readFileSync(events, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as DecisionEvent);
        await until(() => readEvents().length > 0);
        expect(readEvents()).toMatchObject([{ transport: 'stdio', outcome: 'failed', 'error.code': 'CANCELLED' }]);
        const mine = (await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: { used: number; reserved: number }[] };
        expect(mine.budgets[0]).toMatchObject({ used: 0, reserved: 0 });
      }, 30_000);
    }

    it('OpenAI SDK client aborts a plain call, anthropic upstream', async () => {
      await start();
      fakes.anthropic.setLatency(30_000);
      const ac = new AbortController();
      const pending = new OpenAI({ baseURL: `${gw!.url}/v1`, apiKey: KEY, maxRetries: 0 }).chat.completions
        .create({ model: 'claude', messages: [{ role: 'user', content: PROMPT }] }, { signal: ac.signal })
        .catch((e: unknown) => e);
      await until(() => fakes.anthropic.counts.received === 1);
      ac.abort();
      expect(await pending).toBeInstanceOf(Error);
      await expectAbortedAndReleased(fakes.anthropic, 'openai');
    });

    it('Anthropic SDK client aborts a streamed call, openai upstream', async () => {
      await start();
      fakes.openai.setLatency(30_000);
      const ac = new AbortController();
      const stream = new Anthropic({ baseURL: gw!.url, apiKey: KEY, maxRetries: 0 }).messages.stream({ model: 'gpt', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: PROMPT }] }, { signal: ac.signal });
      const pending = stream.finalMessage().catch((e: unknown) => e);
      await until(() => fakes.openai.counts.received === 1);
      ac.abort();
      expect(await pending).toBeInstanceOf(Error);
      await expectAbortedAndReleased(fakes.openai, 'anthropic');
    });
  });

  describe('a client gone before its call reaches the provider: the call never goes upstream', () => {
    let idp: TestIssuer;
    beforeAll(async () => {
      idp = await startTestIssuer();
    });
    afterAll(() => idp.close());
    afterEach(() => idp.setJwksDelay(0));

    /** Whatever was recorded is a cancellation without a charge; nothing reached the provider and nothing is held. */
    async function expectNothingUpstream(fake: FakeProviderServer): Promise<void> {
      await gw!.idle();
      for (const e of gw!.events) {
        expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED' });
        expect(e['tollgate.charged']).toBeUndefined();
      }
      expect(fake.counts).toEqual({ received: 0, completed: 0, aborted: 0 });
      expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
    }

    for (const kind of TRANSPORTS) {
      it(`${kind} client leaves 50 ms into a 400 ms key fetch`, async () => {
        await start(idp);
        const fake = fakes.anthropic;
        // A call that does reach the provider is answered soon, so the test would see it complete there.
        fake.setLatency(100);
        const token = () => idp.sign({ sub: 'id-erin', aud: RESOURCE, preferred_username: 'erin' });
        const session = kind.startsWith('mcp') ? await openMcpSession(gw!.url, await token()) : undefined;
        idp.setJwksDelay(400);
        const ac = new AbortController();
        const fetches = idp.jwksFetches;
        const pending = send(kind, { base: gw!.url, token: await token(), tier: 'claude', prompt: PROMPT, maxTokens: MAX_TOKENS, session, signal: ac.signal }).catch((e: unknown) => e);
        // Left once the gateway is fetching the keys (jwksCacheSeconds: 0), not after a fixed time: on
        // a loaded machine the request may not have reached the gateway 50 ms after it was sent.
        await until(() => idp.jwksFetches > fetches, 10_000);
        await sleep(50);
        ac.abort();
        expect(await pending).toBeInstanceOf(Error);
        // The key fetch ends at 400 ms; had the call gone on, the provider would have answered by 500 ms.
        await sleep(800);
        await expectNothingUpstream(fake);
        // Every way in records the call it did not serve: one CANCELLED event.
        expect(gw!.events).toHaveLength(1);
      });
    }

    it('mcp-sse client leaves while its budget headers are read (a slow store)', async () => {
      const store = new SlowReadStore();
      gw = await startTestGateway(policyText(fakes.anthropic, fakes.openai), { store });
      const fake = fakes.anthropic;
      fake.setLatency(100);
      const session = await openMcpSession(gw.url, KEY);
      store.delayMs = 300;
      const ac = new AbortController();
      const pending = send('mcp-sse', { base: gw.url, token: KEY, tier: 'claude', prompt: PROMPT, maxTokens: MAX_TOKENS, session, signal: ac.signal }).catch((e: unknown) => e);
      await sleep(50);
      ac.abort();
      expect(await pending).toBeInstanceOf(Error);
      // Headers give up on the store at 250 ms, the call's own read takes 300 ms, the provider 100 ms.
      await sleep(1000);
      store.delayMs = 0;
      await expectNothingUpstream(fake);
      // Not delivered, yet recorded: one CANCELLED event, as the compat endpoints leave.
      expect(gw.events).toHaveLength(1);
    });

    it('MCP notifications/cancelled that arrives while its request is still being set up (budget headers read from a slow store) is held and applied', async () => {
      const store = new SlowReadStore();
      gw = await startTestGateway(policyText(fakes.anthropic, fakes.openai), { store });
      const fake = fakes.anthropic;
      fake.setLatency(100);
      const session = await openMcpSession(gw.url, KEY);
      store.delayMs = 300;
      const call = requestFor('mcp-sse', { base: gw.url, token: KEY, tier: 'claude', prompt: PROMPT, maxTokens: MAX_TOKENS, session });
      const requestId = (call.body as { id: string }).id;
      // The client stays; only its cancellation says it no longer wants the answer.
      const stay = new AbortController();
      cleanup.push(() => stay.abort());
      void fetch(call.url, { method: 'POST', headers: call.headers, body: JSON.stringify(call.body), signal: stay.signal }).then((r) => r.text()).catch(() => undefined);
      await sleep(50);
      const cancel = await fetch(call.url, { method: 'POST', headers: call.headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason: 'changed my mind' } }) });
      expect(cancel.status).toBe(202);
      await until(() => gw!.events.length > 0, 5000);
      store.delayMs = 0;
      await sleep(300);
      expect(gw.events).toMatchObject([{ transport: 'http', outcome: 'failed', 'error.code': 'CANCELLED' }]);
      await expectNothingUpstream(fake);
    });

    it('the first A2A call of a new gateway process, left while its A2A server code still loads', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tollgate-cancel-'));
      cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
      const policyFile = join(dir, 'policy.yaml');
      writeFileSync(policyFile, policyText(fakes.anthropic, fakes.openai));
      const proc = await spawnGateway({ policyFile, eventsFile: join(dir, 'events.jsonl'), args: ['--data-dir', 'none', '--no-watch'] });
      cleanup.push(() => proc.stop());
      const base = proc.mcpUrl.replace(/\/mcp$/, '');
      const fake = fakes.anthropic;
      // Long enough that a call which did reach the provider cannot be answered before its client leaves.
      fake.setLatency(2000);
      const ac = new AbortController();
      const pending = send('a2a', { base, token: KEY, tier: 'claude', prompt: PROMPT, maxTokens: MAX_TOKENS, signal: ac.signal }).catch((e: unknown) => e);
      // Its credential checked and its body read by now; the server code takes about a second more.
      await sleep(200);
      ac.abort();
      expect(await pending).toBeInstanceOf(Error);
      // The server code takes about a second to load; then the call is recorded, or reaches the provider.
      await until(() => proc.events().length > 0 || fake.counts.received > 0, 10_000);
      await sleep(300);
      // On a quiet machine the code can finish loading within the 200 ms: the call then reached the
      // provider before its client left, and must have been aborted there (the case the tests above
      // cover); either way nothing completes upstream and nothing is charged.
      const loadedFirst = fake.counts.received > 0;
      expect(fake.counts).toEqual(loadedFirst ? { received: 1, completed: 0, aborted: 1 } : { received: 0, completed: 0, aborted: 0 });
      await proc.stop();
      expect(proc.events()).toMatchObject([{ transport: 'a2a', outcome: 'failed', 'error.code': 'CANCELLED' }]);
      expect(proc.events()[0]!['tollgate.charged']).toBeUndefined();
    }, 30_000);
  });

  describe('once the provider began answering: charged what it reported, else at least the input bound', () => {
    it('a stream left after its first text, anthropic upstream: the input Anthropic reported and the output that arrived', async () => {
      await start();
      fakes.anthropic.setWordDelay(300);
      const ac = new AbortController();
      let seen = '';
      const pending = send('anthropic-stream', {
        base: gw!.url, token: KEY, tier: 'claude', prompt: PROMPT, maxTokens: MAX_TOKENS, signal: ac.signal,
        onData: (piece) => {
          seen += piece;
          if (deltasIn('anthropic-stream', seen) >= 1) ac.abort();
        },
      }).catch((e: unknown) => e);
      expect(await pending).toBeInstanceOf(Error);
      await until(() => fakes.anthropic.requests[0]?.aborted === true);
      const e = await theEvent();
      // The output's bound before message_delta: one token per UTF-8 byte of the word that arrived.
      const output = Buffer.byteLength(replyWords('anthropic', PROMPT, MAX_TOKENS)[0]!);
      expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED', 'gen_ai.usage.input_tokens': promptTokens(undefined, [{ content: PROMPT }]), 'gen_ai.usage.output_tokens': output });
      // Served in part, and charged for that model: reports put its cost under it, not under no model.
      expect(e['tollgate.model.served']).toBe('anthropic/claude-sonnet-4-5');
      expect(chargedOf(e)).toBe(promptTokens(undefined, [{ content: PROMPT }]) + output);
      expect(await budget()).toMatchObject({ used: chargedOf(e), reserved: 0 });
    });

    it('a stream left after its first text, openai upstream (no usage before the end): the input bound and the output that arrived', async () => {
      await start();
      fakes.openai.setWordDelay(300);
      const ac = new AbortController();
      let seen = '';
      const pending = send('openai-stream', {
        base: gw!.url, token: KEY, tier: 'gpt', prompt: PROMPT, maxTokens: MAX_TOKENS, signal: ac.signal,
        onData: (piece) => {
          seen += piece;
          if (deltasIn('openai-stream', seen) >= 1) ac.abort();
        },
      }).catch((e: unknown) => e);
      expect(await pending).toBeInstanceOf(Error);
      await until(() => fakes.openai.requests[0]?.aborted === true);
      const e = await theEvent();
      // The input reserved for the call (the bound here: it fits the budget, so nothing was counted).
      const bound = e['tollgate.reserved_tokens']!.input;
      expect(bound).toBeGreaterThan(0);
      // The output's: one token per UTF-8 byte of the word that arrived (a delta may carry many tokens).
      const output = Buffer.byteLength(replyWords('openai', PROMPT, MAX_TOKENS)[0]!);
      expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED', 'gen_ai.usage.input_tokens': bound, 'gen_ai.usage.output_tokens': output });
      expect(e['tollgate.model.served']).toBe('openai/gpt-5-mini');
      expect(chargedOf(e)).toBe(bound + output);
      expect(await budget()).toMatchObject({ used: bound + output, reserved: 0 });
    });

    it('a stream left after the provider answered its head but before any text, openai upstream: the input bound', async () => {
      await start();
      fakes.openai.setWordDelay(30_000);
      const ac = new AbortController();
      const pending = send('mcp-sse', { base: gw!.url, token: KEY, tier: 'gpt', prompt: PROMPT, maxTokens: MAX_TOKENS, session: await openMcpSession(gw!.url, KEY), signal: ac.signal }).catch((e: unknown) => e);
      await until(() => fakes.openai.requests.length === 1);
      // The head and the role chunk are out at once; the first word waits.
      await sleep(150);
      ac.abort();
      expect(await pending).toBeInstanceOf(Error);
      await until(() => fakes.openai.requests[0]?.aborted === true);
      const e = await theEvent();
      // The input reserved for the call (the bound here: it fits the budget, so nothing was counted).
      const bound = e['tollgate.reserved_tokens']!.input;
      expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED', 'gen_ai.usage.input_tokens': bound, 'gen_ai.usage.output_tokens': 0 });
      expect(await budget()).toMatchObject({ used: bound, reserved: 0 });
    });

    it('a stream left after the provider answered its head but before any text, anthropic upstream: the input Anthropic reported', async () => {
      await start();
      fakes.anthropic.setWordDelay(30_000);
      const ac = new AbortController();
      const pending = send('mcp-sse', { base: gw!.url, token: KEY, tier: 'claude', prompt: PROMPT, maxTokens: MAX_TOKENS, session: await openMcpSession(gw!.url, KEY), signal: ac.signal }).catch((e: unknown) => e);
      await until(() => fakes.anthropic.requests.length === 1);
      await sleep(150);
      ac.abort();
      expect(await pending).toBeInstanceOf(Error);
      await until(() => fakes.anthropic.requests[0]?.aborted === true);
      const e = await theEvent();
      // message_start: the prompt's tokens in, and the one output token Anthropic counts at the start.
      const input = promptTokens(undefined, [{ content: PROMPT }]);
      expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED', 'gen_ai.usage.input_tokens': input, 'gen_ai.usage.output_tokens': 1 });
      expect(await budget()).toMatchObject({ used: input + 1, reserved: 0 });
    });
  });

  describe('once the provider has finished: charged in full and never recorded as CANCELLED', () => {
    for (const upstream of ['anthropic', 'openai'] as const) {
      const input = promptTokens(undefined, [{ content: PROMPT }]);
      const output = replyWords(upstream, PROMPT, MAX_TOKENS).length;

      it(`a plain call left after the provider sent its head, its body still on the way, ${upstream} upstream`, async () => {
        await start();
        const fake = fakes[upstream];
        fake.setEndDelay(300);
        const ac = new AbortController();
        const pending = send('openai', { base: gw!.url, token: KEY, tier: TIER[upstream], prompt: PROMPT, maxTokens: MAX_TOKENS, signal: ac.signal }).catch((e: unknown) => e);
        await until(() => fake.requests.length === 1);
        await sleep(50);
        ac.abort();
        expect(await pending).toBeInstanceOf(Error);
        await until(() => fake.requests[0]!.completed || fake.requests[0]!.aborted);
        expect(fake.counts).toEqual({ received: 1, completed: 1, aborted: 0 });
        const e = await theEvent();
        expect(e).toMatchObject({ outcome: 'success', 'gen_ai.usage.input_tokens': input, 'gen_ai.usage.output_tokens': output });
        expect(e['error.code']).toBeUndefined();
        expect(await budget()).toMatchObject({ used: input + output, reserved: 0 });
      });

      it(`a stream left after its last text, the provider's end still on the way, ${upstream} upstream`, async () => {
        await start();
        const fake = fakes[upstream];
        fake.setEndDelay(300);
        const ac = new AbortController();
        let seen = '';
        // Every word has reached the client; the provider's last events follow at once, its end 300 ms later.
        const pending = send('anthropic-stream', {
          base: gw!.url, token: KEY, tier: TIER[upstream], prompt: PROMPT, maxTokens: MAX_TOKENS, signal: ac.signal,
          onData: (piece) => {
            seen += piece;
            if (deltasIn('anthropic-stream', seen) >= output) setTimeout(() => ac.abort(), 50);
          },
        }).catch((e: unknown) => e);
        expect(await pending).toBeInstanceOf(Error);
        await until(() => fake.requests[0]!.completed || fake.requests[0]!.aborted);
        const e = await theEvent();
        expect(e).toMatchObject({ outcome: 'success', 'gen_ai.usage.input_tokens': input, 'gen_ai.usage.output_tokens': output });
        expect(e['error.code']).toBeUndefined();
        expect(await budget()).toMatchObject({ used: input + output, reserved: 0 });
      });
    }
  });
});
