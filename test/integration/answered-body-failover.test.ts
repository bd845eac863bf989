/**
 * A plain (not streamed) answer whose 200 head arrived and whose body then failed: cut, stalled past
 * timeoutMs, or JSON that is not the API's answer. The provider generated the answer whole before
 * its head and bills it, so the attempt is charged what the reservation held for it (the input
 * reserved and the output cap) when no usage came, and the call fails over only while the
 * reservation covers another attempt, as for a stream cut after its head
 * (audit-bound-failover.test.ts). It was charged nothing and failed over: two provider bills, both
 * recorded as 0.
 */
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inputTokenBound } from '../../src/providers/estimate.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

type Kind = FakeProviderServer['kind'];

const KEY = 'key-answered-body';
const PROMPT = 'What did the quarterly report say';
const MAX_TOKENS = 10;
const TIMEOUT_MS = 800;
/** What admission reserves for the input: the byte bound (no provider counts). */
const BOUND = inputTokenBound({ messages: [{ content: PROMPT }] });
/** One attempt's worst case on either model, and the budget: exactly one reservation. */
const RESERVED = BOUND + MAX_TOKENS;

const START: Record<Kind, () => Promise<FakeProviderServer>> = { openai: startFakeOpenAI, anthropic: startFakeAnthropic, bedrock: startFakeBedrock };

const provider = (kind: Kind, url: string, retries = 0): string =>
  kind === 'openai'
    ? `{ kind: openai, apiKey: sk-test, baseUrl: "${url}", countTokens: false, maxRetries: ${retries}, timeoutMs: ${TIMEOUT_MS} }`
    : kind === 'anthropic'
      ? `{ kind: anthropic, apiKey: sk-ant-test, baseUrl: "${url}", maxRetries: ${retries}, timeoutMs: ${TIMEOUT_MS} }`
      : `{ kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${url}", maxRetries: ${retries}, timeoutMs: ${TIMEOUT_MS} }`;

const policy = (kind: Kind, primary: FakeProviderServer, backup: FakeProviderServer, retries = 0) => `
version: 1
providers:
  primary: ${provider(kind, primary.url, retries)}
  backup: ${provider(kind, backup.url, retries)}
egress: { allow: ["127.0.0.1"] }
models:
  primary/m: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
  backup/m: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  standard: [primary/m, backup/m]
apiKeys:
  - { id: ab, sha256: ${sha(KEY)}, user: abe, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: ${RESERVED} }
`;

describe.each(['openai', 'anthropic', 'bedrock'] as const)('a plain answer whose 200 head arrived and whose body failed, %s upstream', (kind) => {
  let primary: FakeProviderServer;
  let backup: FakeProviderServer;
  let gw: TestGateway;

  beforeAll(async () => {
    [primary, backup] = await Promise.all([START[kind](), START[kind]()]);
  });
  afterAll(() => Promise.all([primary.close(), backup.close()]));
  beforeEach(async () => {
    primary.reset();
    backup.reset();
    gw = await startTestGateway(policy(kind, primary, backup));
  });
  afterEach(() => gw.close());

  const call = async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const err = await client.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: PROMPT }], max_tokens: MAX_TOKENS }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await gw.idle();
    expect(gw.events).toHaveLength(1);
    return { err: err as InstanceType<typeof OpenAI.APIError> | undefined, event: gw.events[0]! };
  };

  it.each([
    ['cut after its head', () => primary.failNext({ kind: 'cut', afterWords: 0 })],
    ['stalled past timeoutMs after its head', () => primary.setEndDelay(TIMEOUT_MS * 3)],
    ['well-formed JSON that is not an answer', () => primary.failNext({ kind: 'misshapen' })],
  ])('is charged its input reserved and its output cap when %s, and does not fail over past the reservation', async (_what, fault) => {
    fault();
    const { err, event } = await call();
    expect(err?.status).toBe(502);
    expect(backup.counts.received).toBe(0);
    expect(event['error.code']).toBe('PROVIDER_UNAVAILABLE');
    expect(event['tollgate.reserved_tokens']).toEqual({ input: BOUND, output: MAX_TOKENS });
    expect([event['gen_ai.usage.input_tokens'], event['gen_ai.usage.output_tokens']]).toEqual([BOUND, MAX_TOKENS]);
    expect(event['tollgate.charged']).toEqual([{ budget: 'user-weekly', subject: 'abe', amount: RESERVED, unit: 'tokens' }]);
    expect(event['tollgate.overrun']).toBeUndefined();
    expect(event['tollgate.attempts'].map((a) => [a.model, a.ok])).toEqual([['primary/m', false]]);
  });

  it('is not sent again by an SDK that retries (maxRetries: 2) once its head had arrived: one request, one charge', async () => {
    await gw.close();
    gw = await startTestGateway(policy(kind, primary, backup, 2));
    primary.failNext({ kind: 'cut', afterWords: 0 });
    const { err, event } = await call();
    expect(err?.status).toBe(502);
    expect([primary.counts.received, backup.counts.received]).toEqual([1, 0]);
    expect(event['tollgate.charged']).toEqual([{ budget: 'user-weekly', subject: 'abe', amount: RESERVED, unit: 'tokens' }]);
  });

  it('still fails over when the first attempt was refused before its head (a 503)', async () => {
    primary.failNext({ kind: 'status', status: 503 });
    const { err, event } = await call();
    expect(err).toBeUndefined();
    expect(event['tollgate.attempts'].map((a) => [a.model, a.ok])).toEqual([
      ['primary/m', false],
      ['backup/m', true],
    ]);
  });
});
