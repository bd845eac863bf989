/**
 * Usage that leaves out the input figure (Anthropic `input_tokens`, OpenAI `prompt_tokens`) or is
 * left out altogether, plain and streamed. An absent input figure is not reported, so the input is
 * charged at what admission reserved for it, on both wires alike (docs/providers.md "Usage"); the
 * Anthropic wire charged it 0 (absent figures were summed as 0 with the cache figures, which may
 * be absent for 0).
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inputTokenBound } from '../../src/providers/estimate.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import { replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-usage-left-out';
const PROMPT = 'What did the quarterly report say';
const MAX_TOKENS = 100;
/** What admission reserves for the input: the byte bound (no counting). */
const BOUND = inputTokenBound({ messages: [{ content: PROMPT }] });

const UP = {
  anthropic: (url: string) => `{ kind: anthropic, apiKey: sk-ant-test, baseUrl: "${url}", maxRetries: 0 }`,
  openai: (url: string) => `{ kind: openai, apiKey: sk-test, baseUrl: "${url}", countTokens: false, maxRetries: 0 }`,
  bedrock: (url: string) => `{ kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${url}", maxRetries: 0 }`,
};

const policy = (kind: keyof typeof UP, fake: FakeProviderServer) => `
version: 1
providers:
  up: ${UP[kind](fake.url)}
egress: { allow: ["127.0.0.1"] }
models:
  up/m: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  standard: [up/m]
apiKeys:
  - { id: lo, sha256: ${sha(KEY)}, user: lou, teams: [research] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: UTC }, limit: { tokens: 100000 } }
`;

describe.each(['anthropic', 'openai', 'bedrock'] as const)('usage without its input figure, %s wire', (kind) => {
  let fake: FakeProviderServer;
  let gw: TestGateway;
  beforeAll(async () => {
    fake = await { anthropic: startFakeAnthropic, openai: startFakeOpenAI, bedrock: startFakeBedrock }[kind]();
    gw = await startTestGateway(policy(kind, fake));
  });
  afterAll(async () => {
    await gw.close();
    await fake.close();
  });

  const reply = replyWords(kind, PROMPT, MAX_TOKENS);

  const call = async (stream: boolean) => {
    const before = gw.events.length;
    const client = new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const params = { model: 'standard', messages: [{ role: 'user' as const, content: PROMPT }], max_tokens: MAX_TOKENS };
    let text = '';
    if (stream) for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) text += chunk.choices[0]?.delta.content ?? '';
    else text = (await client.chat.completions.create(params)).choices[0]!.message.content ?? '';
    await gw.idle();
    expect(text).toBe(reply.join(''));
    const events = gw.events.slice(before);
    expect(events).toHaveLength(1);
    return events[0]!;
  };

  it.each([false, true])('charges the input reserved when the input figure is left out, and the output reported (streamed: %s)', async (stream) => {
    fake.failNext({ kind: 'leaveOutUsage', what: 'input' });
    const event = await call(stream);
    expect(event['tollgate.reserved_tokens']).toEqual({ input: BOUND, output: MAX_TOKENS });
    expect([event['gen_ai.usage.input_tokens'], event['gen_ai.usage.output_tokens']]).toEqual([BOUND, reply.length]);
  });

  it.each([false, true])('charges the input reserved and the bound of the text when usage is left out (streamed: %s)', async (stream) => {
    fake.failNext({ kind: 'leaveOutUsage', what: 'all' });
    const event = await call(stream);
    expect([event['gen_ai.usage.input_tokens'], event['gen_ai.usage.output_tokens']]).toEqual([BOUND, Buffer.byteLength(reply.join(''))]);
  });
});
