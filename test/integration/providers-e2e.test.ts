/**
 * The whole pipeline in front of the real adapters: the MCP client calls tollgate, tollgate calls
 * the Anthropic, OpenAI and Bedrock fakes through the official SDKs. Failover, streaming,
 * cancellation and cut streams are checked against what the ledger charged.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import { promptTokens, replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

type ErrorMeta = { code: string; message: string; details: Record<string, unknown> };
type Budget = { id: string; used: number; reserved: number };

const KEY = 'key-e2e';
const policy = (a: FakeProviderServer, o: FakeProviderServer, b: FakeProviderServer) => `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${a.url}", timeoutMs: 1500 }
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${o.url}", timeoutMs: 1500 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${b.url}", timeoutMs: 1500 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  bedrock/anthropic.claude-sonnet-4-5-v1:0: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  standard: [anthropic/claude-sonnet-4-5, bedrock/anthropic.claude-sonnet-4-5-v1:0]
  economy: [openai/gpt-5-mini]
apiKeys:
  - { id: e2e, sha256: ${sha(KEY)}, user: erin, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
`;

async function until(check: () => boolean): Promise<void> {
  const end = Date.now() + 3000;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((res) => setTimeout(res, 10));
  }
}

describe('tollgate in front of the real SDKs and their fakes', () => {
  let anthropic: FakeProviderServer;
  let openai: FakeProviderServer;
  let bedrock: FakeProviderServer;
  let gw: TestGateway;
  let client: Client;
  const prompt = 'What did the quarterly report say';
  const input = promptTokens(undefined, [{ content: prompt }]);

  const budget = async (): Promise<Budget> =>
    ((await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: Budget[] }).budgets[0]!;

  beforeAll(async () => {
    [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeBedrock()]);
  });
  afterAll(async () => {
    await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  });
  beforeEach(async () => {
    for (const f of [anthropic, openai, bedrock]) f.reset();
    gw = await startTestGateway(policy(anthropic, openai, bedrock));
    client = await connectHttp(gw.mcpUrl, KEY);
  });
  afterEach(async () => {
    await client.close();
    await gw.close();
  });

  it('serves a call on the first model of the tier and charges exactly the usage Anthropic reported', async () => {
    const r = await client.callTool({ name: 'complete', arguments: { prompt, max_tokens: 50 } });
    const s = r.structuredContent as { model: string; provider: string; usage: { inputTokens: number; outputTokens: number } };
    const words = replyWords('anthropic', prompt, 50);
    expect(s).toMatchObject({ model: 'anthropic/claude-sonnet-4-5', provider: 'anthropic', usage: { inputTokens: input, outputTokens: words.length } });
    expect((r.content as { text: string }[])[0]!.text).toBe(words.join(''));
    expect(await budget()).toMatchObject({ used: input + words.length, reserved: 0 });
  });

  it('fails over to Bedrock when Anthropic answers 429, and records both attempts', async () => {
    anthropic.failNext({ kind: 'status', status: 429 });
    const r = await client.callTool({ name: 'complete', arguments: { prompt, max_tokens: 50 } });
    const s = r.structuredContent as { model: string; usage: { outputTokens: number } };
    expect(s.model).toBe('bedrock/anthropic.claude-sonnet-4-5-v1:0');
    expect(s.usage.outputTokens).toBe(replyWords('bedrock', prompt, 50).length);
    const attempts = gw.events.at(-1)!['tollgate.attempts'] as { provider: string; ok: boolean; status?: number }[];
    expect(attempts.map(({ provider, ok, status }) => ({ provider, ok, status }))).toEqual([
      { provider: 'anthropic', ok: false, status: 429 },
      { provider: 'bedrock', ok: true, status: undefined },
    ]);
    expect(bedrock.requests).toHaveLength(1);
  });

  it('returns PROVIDER_UNAVAILABLE with every attempt when the whole tier fails, and keeps nothing reserved', async () => {
    anthropic.failNext({ kind: 'status', status: 529 });
    bedrock.failNext({ kind: 'status', status: 503 });
    const r = await client.callTool({ name: 'complete', arguments: { prompt, max_tokens: 50 } });
    expect(r.isError).toBe(true);
    const e = (r._meta as Record<string, ErrorMeta>)['io.tollgate/error']!;
    expect(e.code).toBe('PROVIDER_UNAVAILABLE');
    expect((e.details.attempts as { provider: string; status: number }[]).map((a) => [a.provider, a.status])).toEqual([
      ['anthropic', 529],
      ['bedrock', 503],
    ]);
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
    expect(gw.events.at(-1)).toMatchObject({ effect: 'allow', outcome: 'failed', 'error.code': 'PROVIDER_UNAVAILABLE' });
  });

  it('streams progress notifications from the provider and charges the usage from the stream', async () => {
    const deltas: string[] = [];
    const r = await client.callTool({ name: 'complete', arguments: { prompt, max_tokens: 50, tier: 'economy' } }, undefined, {
      onprogress: (p) => {
        if (p.message) deltas.push(p.message);
      },
    });
    const words = replyWords('openai', prompt, 50);
    expect(deltas.join('')).toBe(words.join(''));
    expect(deltas.length).toBe(words.length);
    expect((r.structuredContent as { usage: unknown }).usage).toEqual({ inputTokens: input, outputTokens: words.length });
    expect(openai.requests[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect(await budget()).toMatchObject({ used: input + words.length, reserved: 0 });
  });

  it('charges what was streamed before a cut and does not splice in a second provider', async () => {
    anthropic.failNext({ kind: 'cut', afterWords: 3 });
    const r = await client.callTool({ name: 'complete', arguments: { prompt, max_tokens: 50 } }, undefined, { onprogress: () => {} });
    const e = (r._meta as Record<string, ErrorMeta>)['io.tollgate/error']!;
    expect(e.code).toBe('PROVIDER_UNAVAILABLE');
    expect(bedrock.requests).toHaveLength(0);
    // message_start reported the input; three words arrived before the socket was cut, charged at
    // their bound (one token per UTF-8 byte) since message_delta never came.
    const output = Buffer.byteLength(replyWords('anthropic', prompt, 50).slice(0, 3).join(''));
    expect(await budget()).toMatchObject({ used: input + output, reserved: 0 });
    expect(gw.events.at(-1)).toMatchObject({ 'gen_ai.usage.input_tokens': input, 'gen_ai.usage.output_tokens': output });
  });

  it('aborts the upstream request when the MCP client cancels, and releases the reservation', async () => {
    anthropic.setLatency(5000);
    const controller = new AbortController();
    const pending = client.callTool({ name: 'complete', arguments: { prompt, max_tokens: 50 } }, undefined, { signal: controller.signal });
    await until(() => anthropic.requests.length === 1);
    controller.abort();
    await expect(pending).rejects.toThrow();
    await until(() => anthropic.requests[0]!.aborted);
    await until(() => gw.events.length > 0);
    expect(gw.events.at(-1)).toMatchObject({ 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
    expect(bedrock.requests).toHaveLength(0);
  });

  it('aborts the upstream request when the HTTP client disconnects mid-call, and releases the reservation', async () => {
    anthropic.setLatency(5000);
    // A raw request on the client's session, so the test can drop the connection itself.
    const sessionId = (client.transport as { sessionId?: string }).sessionId!;
    const controller = new AbortController();
    const pending = fetch(gw.mcpUrl, {
      method: 'POST',
      signal: controller.signal,
      headers: {
        authorization: `Bearer ${KEY}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-session-id': sessionId,
        'mcp-protocol-version': '2025-06-18',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'tools/call', params: { name: 'complete', arguments: { prompt, max_tokens: 50 } } }),
    }).then(async (r) => r.text());
    await until(() => anthropic.requests.length === 1);
    controller.abort();
    await expect(pending).rejects.toThrow();
    await until(() => anthropic.requests[0]!.aborted);
    await until(() => gw.events.length > 0);
    expect(gw.events.at(-1)).toMatchObject({ 'error.code': 'CANCELLED', outcome: 'failed' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
  });
});
