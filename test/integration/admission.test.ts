/**
 * Admission with a provable bound (issue 17 item 1), through the whole gateway and the real SDKs
 * against fakes that bill with a real BPE tokenizer: a prompt whose tokens outnumber bytes ÷ 3 is
 * refused before it can overshoot its budget; a prose prompt whose bound does not fit is counted
 * exactly (locally for OpenAI, through count_tokens / CountTokens for Anthropic and Bedrock) and
 * admitted at what it really costs; a provider that bills more than was reserved is charged, and
 * the overrun is in the event, the metrics and my_budget, and the next call is refused.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Provider } from '../../src/providers/provider.js';
import { parsePolicy } from '../../src/policy/load.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-admission';
const MODELS = ['openai/gpt-5-mini', 'anthropic/claude-sonnet-5-5', 'bedrock/anthropic.claude-sonnet-4-5-v1:0'] as const;

/** `counting`: the providers' countTokens setting; OpenAI keeps its default ('always') unless `openai` says otherwise. */
const policyText = (a: FakeProviderServer, o: FakeProviderServer, b: FakeProviderServer, limit: number, counting: { claude: string; openai?: string } = { claude: 'true' }) => `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${a.url}", countTokens: ${counting.claude}, timeoutMs: 10000 }
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${o.url}", ${counting.openai ? `countTokens: ${counting.openai}, ` : ''}timeoutMs: 10000 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${b.url}", countTokens: ${counting.claude}, timeoutMs: 10000 }
  demo: { kind: demo }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
  anthropic/claude-sonnet-5-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  bedrock/anthropic.claude-sonnet-4-5-v1:0: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  demo/liar: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
# One tier per provider: a reservation covers failover to every model of its tier, so a tier with
# a model that cannot be counted reserves the bound for it.
# The liar's tier first, so it is no call's fallback.
tiers:
  liar: [demo/liar]
  openai: [openai/gpt-5-mini]
  anthropic: [anthropic/claude-sonnet-5-5]
  bedrock: [bedrock/anthropic.claude-sonnet-4-5-v1:0]
apiKeys:
  - { id: adm, sha256: ${sha(KEY)}, user: ada, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: ${limit} }
`;

type Budget = { id: string; used: number; reserved: number; remaining: number; limit: number; overrun?: number };
type Meta = { code: string; details: Record<string, unknown> };

describe('admission with a provable bound', () => {
  let anthropic: FakeProviderServer;
  let openai: FakeProviderServer;
  let bedrock: FakeProviderServer;
  let gw: TestGateway;
  let client: Client;

  const start = async (limit: number, counting?: { claude: string; openai?: string }) => {
    gw = await startTestGateway(policyText(anthropic, openai, bedrock, limit, counting), { maxBodyBytes: 4 * 1024 * 1024 });
    client = await connectHttp(gw.mcpUrl, KEY);
  };
  const budget = async (): Promise<Budget> => ((await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: Budget[] }).budgets[0]!;
  const call = (model: string, prompt: string, maxTokens: number) => client.callTool({ name: 'complete', arguments: { model, prompt, max_tokens: maxTokens } });

  beforeAll(async () => {
    [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic({ billing: 'bpe' }), startFakeOpenAI({ billing: 'bpe' }), startFakeBedrock({ billing: 'bpe' })]);
  });
  afterAll(() => Promise.all([anthropic.close(), openai.close(), bedrock.close()]));
  afterEach(async () => {
    await client.close();
    await gw.close();
  });

  it('refuses the measured overshoot (200 KB of one-letter words, max_tokens 16, 70,000 tokens) on every provider, charging nothing', async () => {
    await start(70_000);
    const prompt = 'a '.repeat(100_000);
    for (const model of MODELS.slice(0, 3)) {
      const r = await call(model, prompt, 16);
      expect(r.isError).toBe(true);
      expect((r._meta as { 'io.tollgate/error': Meta })['io.tollgate/error'].code).toBe('BUDGET_EXHAUSTED');
    }
    await gw.idle();
    expect(await budget()).toMatchObject({ used: 0, reserved: 0 });
    // Each refusal counted the input first: about 100,000 tokens, more than the 70,000.
    for (const e of gw.events) expect(e['tollgate.input_counted']?.[0]?.tokens).toBeGreaterThan(99_000);
  });

  it('admits prose whose bound does not fit at its exact count, on each provider, and never leaves used above the limit', async () => {
    const prose = 'The committee reviewed the quarterly figures and agreed to postpone the decision until the audit is complete. '.repeat(150);
    for (const model of MODELS.slice(0, 3)) {
      // 16,650 bytes: the bound (~16,700) cannot fit 6,000 tokens; the real count (~3,000) does.
      await start(6_000);
      const r = await call(model, prose, 100);
      expect(r.isError).toBeFalsy();
      await gw.idle();
      const e = gw.events.at(-1)!;
      const billed = e['gen_ai.usage.input_tokens'];
      expect(e['tollgate.estimated_input_tokens']).toBeGreaterThan(16_000);
      expect(e['tollgate.input_counted']?.find((c) => c.model === model)?.tokens).toBe(billed);
      expect(e['tollgate.reserved_tokens']!.input).toBeLessThanOrEqual(Math.ceil(billed * 1.3));
      expect(e['tollgate.overrun']).toBeUndefined();
      const b = await budget();
      expect(b.used).toBeLessThanOrEqual(b.limit);
      expect(b.overrun).toBeUndefined();
      await client.close();
      await gw.close();
    }
    await start(6_000); // for afterEach
  });

  const PROSE = 'The committee reviewed the quarterly figures and agreed to postpone the decision until the audit is complete. '.repeat(150);

  it("reserves prose within 1.3x of its billed input on a roomy budget: OpenAI by its vocabulary's bound, Anthropic and Bedrock by counting every call", async () => {
    await start(1_000_000, { claude: "'always'" });
    for (const model of MODELS.slice(0, 3)) {
      const r = await call(model, PROSE, 100);
      expect(r.isError).toBeFalsy();
      await gw.idle();
      const e = gw.events.at(-1)!;
      const billed = e['gen_ai.usage.input_tokens'];
      const reserved = e['tollgate.reserved_tokens']!.input;
      expect(e['tollgate.estimated_input_tokens']).toBeGreaterThan(16_000);
      expect(reserved).toBeGreaterThanOrEqual(billed);
      expect(reserved).toBeLessThanOrEqual(Math.ceil(billed * 1.3));
      // OpenAI's figure is a bound from its vocabulary; the others' an exact count from their API.
      expect(e['tollgate.input_counted']).toEqual([{ model, tokens: reserved, exact: model !== 'openai/gpt-5-mini' }]);
    }
  });

  it('reserves the byte bound on a roomy budget where counting is only when needed (true) or off (false), and counts nothing', async () => {
    await start(1_000_000, { claude: 'true', openai: 'true' });
    for (const model of MODELS.slice(0, 3)) {
      const r = await call(model, PROSE, 100);
      expect(r.isError).toBeFalsy();
      await gw.idle();
      const e = gw.events.at(-1)!;
      expect(e['tollgate.reserved_tokens']!.input).toBe(e['tollgate.estimated_input_tokens']);
      expect(e['tollgate.input_counted']).toBeUndefined();
    }
    await client.close();
    await gw.close();
    // Off: even a bound that does not fit is not counted, and the call is refused on it.
    await start(6_000, { claude: 'false', openai: 'false' });
    for (const model of MODELS.slice(0, 3)) {
      const r = await call(model, PROSE, 100);
      expect((r._meta as { 'io.tollgate/error': Meta })['io.tollgate/error'].code).toBe('BUDGET_EXHAUSTED');
    }
    await gw.idle();
    for (const e of gw.events) expect(e['tollgate.input_counted']).toBeUndefined();
  });

  it('charges a provider that bills more than was reserved, and says so: event, metric, my_budget, and the next call is refused', async () => {
    await start(1_000);
    // A provider reporting 3,000 input tokens for a 2-byte prompt: more than any bound.
    const liar: Provider = {
      name: 'demo',
      kind: 'demo',
      complete: async (req) => ({ text: 'ok', model: req.model, usage: { inputTokens: 3_000, outputTokens: 1 }, stopReason: 'end_turn' }),
      stream: async (req) => ({ text: 'ok', model: req.model, usage: { inputTokens: 3_000, outputTokens: 1 }, stopReason: 'end_turn' }),
    };
    const gateway = gw.runtime.gateway;
    const policy = parsePolicy(policyText(anthropic, openai, bedrock, 1_000), 'liar.yaml');
    const built = new Map<string, Provider>([['demo', liar]]);
    gateway.replacePolicy(policy, built);

    const r = await call('demo/liar', 'hi', 10);
    expect(r.isError).toBeFalsy();
    await gw.idle();
    const e = gw.events.at(-1)!;
    const reserved = e['tollgate.reserved']![0]!.amount;
    expect(e['tollgate.charged']).toEqual([{ budget: 'user-weekly', subject: 'ada', amount: 3_001, unit: 'tokens' }]);
    expect(e['tollgate.overrun']).toEqual([{ budget: 'user-weekly', subject: 'ada', amount: 3_001 - reserved, unit: 'tokens' }]);

    const metrics = await gw.runtime.metrics.text();
    expect(metrics).toContain('tollgate_budget_overruns_total{budget_id="user-weekly"} 1');
    expect(metrics).toContain(`tollgate_budget_overrun_amount_total{budget_id="user-weekly",unit="tokens"} ${3_001 - reserved}`);

    expect(await budget()).toMatchObject({ used: 3_001, limit: 1_000, remaining: 0, overrun: 2_001 });
    const next = await call('demo/liar', 'hi', 10);
    expect(next.isError).toBe(true);
    expect((next._meta as { 'io.tollgate/error': Meta })['io.tollgate/error'].code).toBe('BUDGET_EXHAUSTED');
  });
});
