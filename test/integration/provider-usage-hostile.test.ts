/**
 * Usage a provider reports is a claim, not a number to charge as it comes: an OpenAI-compatible
 * server (vLLM, Ollama, a proxy) may report negative, fractional, non-numeric or absurd figures.
 * A negative figure credited the budget on the embedded store (a probe: -957 tokens charged, "1635
 * of 1000 left", 80 calls admitted past a 500-token-a-minute limit) and, on Redis, the settle
 * threw and the call's decision event was lost. Each figure must be charged as a whole number of
 * tokens no smaller than nothing was: a figure that is not one is taken as not reported (the
 * call's bound), a fraction rounds up, and every call keeps its one event.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { QuotaStore } from '../../src/quota/store.js';
import { KEYS, sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

/** A provider answering each call with `answer(the next usage of usages)`, as JSON. */
async function startLyingProvider(usages: unknown[], answer: (usage: unknown) => object): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer(usages.shift()))));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const chatCompletion = (usage: unknown) => ({
  id: 'chatcmpl-lying',
  object: 'chat.completion',
  created: Math.floor(Date.now() / 1000),
  model: 'lying-model',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage,
});

const anthropicMessage = (usage: unknown) => ({ id: 'msg_lying', type: 'message', role: 'assistant', model: 'lying-claude', content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', stop_sequence: null, usage });

const policy = (url: string) => `
version: 1
providers:
  lying: { kind: openai, apiKey: sk-test, baseUrl: "${url}/v1", maxRetries: 0 }
egress: { allow: ["127.0.0.1"] }
models:
  lying/m: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  standard: [lying/m]
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice }
budgets:
  - { id: user-daily, scope: user, window: { calendar: day }, limit: { tokens: 100000 } }
`;

type Charged = { budget: string; amount: number }[];

describe.each(['memory', 'redis'] as const)('usage a provider reports that is not a token count, %s store', (kind) => {
  let redis: TestRedis | undefined;
  const prefix = uniquePrefix('lying-usage');
  let gw: TestGateway;
  let provider: { url: string; server: Server };
  const usages: unknown[] = [];
  beforeAll(async () => {
    provider = await startLyingProvider(usages, chatCompletion);
    let store: QuotaStore | undefined;
    if (kind === 'redis') {
      redis = await startRedis();
      store = new RedisQuotaStore({ url: redis.url, prefix, sweepIntervalMs: 0 });
    }
    gw = await startTestGateway(policy(provider.url), { store, env: { TOLLGATE_KEY_PREFIX: prefix } });
  });
  afterAll(async () => {
    await gw.close();
    provider.server.close();
    if (redis) {
      await deleteKeys(redis.url, prefix);
      await redis.stop();
    }
  });

  const call = async (usage: unknown) => {
    usages.push(usage);
    const before = gw.events.length;
    const client = new OpenAI({ apiKey: KEYS.alice, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'hello' }], max_tokens: 50 });
    await gw.idle();
    const events = gw.events.slice(before);
    expect(events).toHaveLength(1);
    return { answer: r, event: events[0]!, charged: (events[0]!['tollgate.charged'] as Charged)[0]!.amount };
  };

  it('charges a negative figure as not reported (the bound), never a credit', async () => {
    const { event, charged } = await call({ prompt_tokens: -997, completion_tokens: 5, total_tokens: -992 });
    const bound = (event['tollgate.reserved_tokens'] as { input: number }).input;
    expect(charged).toBe(bound + 5);
    expect(event['gen_ai.usage.input_tokens']).toBe(bound);
  });

  it('rounds a fraction up', async () => {
    const { charged, event } = await call({ prompt_tokens: 3.5, completion_tokens: 2.1, total_tokens: 5.6 });
    expect(charged).toBe(4 + 3);
    expect(event['gen_ai.usage.output_tokens']).toBe(3);
  });

  it('charges a figure that is not a number, or none, as not reported', async () => {
    const { charged, event } = await call({ prompt_tokens: '12', completion_tokens: null, total_tokens: 12 });
    // The input reserved, and the output's bound: a token per UTF-8 byte of the answer ("ok").
    const bound = (event['tollgate.reserved_tokens'] as { input: number }).input;
    expect(charged).toBe(bound + 2);
  });

  it('charges an absurd figure in full as an overrun, and records the call', async () => {
    const { charged, event } = await call({ prompt_tokens: 1e300, completion_tokens: 1, total_tokens: 1e300 });
    expect(Number.isSafeInteger(charged)).toBe(true);
    expect(charged).toBeGreaterThan(100000);
    expect(event['tollgate.overrun']).toBeDefined();
  });

  it('charged every call a whole number of tokens, none below nothing', () => {
    const charges = gw.events.flatMap((e) => (e['tollgate.charged'] as Charged | undefined) ?? []).map((c) => c.amount);
    expect(charges).toHaveLength(4);
    expect(charges.every((a) => Number.isSafeInteger(a) && a >= 0)).toBe(true);
  });
});

describe('usage an Anthropic-compatible provider reports that is not a token count', () => {
  let gw: TestGateway;
  let provider: { url: string; server: Server };
  const usages: unknown[] = [];
  beforeAll(async () => {
    provider = await startLyingProvider(usages, anthropicMessage);
    gw = await startTestGateway(policy(provider.url).replace(`kind: openai, apiKey: sk-test, baseUrl: "${provider.url}/v1"`, `kind: anthropic, apiKey: sk-ant-test, baseUrl: "${provider.url}"`));
  });
  afterAll(async () => {
    await gw.close();
    provider.server.close();
  });

  const call = async (usage: unknown) => {
    usages.push(usage);
    const before = gw.events.length;
    const client = new OpenAI({ apiKey: KEYS.alice, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    await client.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'hello' }], max_tokens: 50 });
    await gw.idle();
    const events = gw.events.slice(before);
    expect(events).toHaveLength(1);
    const event = events[0]!;
    return { event, bound: (event['tollgate.reserved_tokens'] as { input: number }).input, input: event['gen_ai.usage.input_tokens'] as number };
  };

  it.each([
    ['a negative cache-creation count', { input_tokens: 1000, output_tokens: 5, cache_creation_input_tokens: -1000 }],
    ['a negative cache-read count', { input_tokens: 1000, output_tokens: 5, cache_read_input_tokens: -900 }],
    ['counts that cancel out', { input_tokens: -1e308, output_tokens: 5, cache_read_input_tokens: 1e308 }],
    ['counts that are strings', { input_tokens: '10', output_tokens: '10' }],
  ])('charges the input of %s as not reported (its bound), and serves the call', async (_what, usage) => {
    const { bound, input } = await call(usage);
    expect(input).toBe(bound);
    expect(bound).toBeGreaterThan(0);
  });

  it('charges an input past 2^31-1 tokens in full as an overrun, as on the OpenAI wire', async () => {
    const { event, input } = await call({ input_tokens: 3e9, output_tokens: 5 });
    expect(input).toBe(2 ** 31 - 1);
    expect(event['tollgate.overrun']).toBeDefined();
  });
});
