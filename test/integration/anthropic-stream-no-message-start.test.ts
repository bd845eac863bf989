/**
 * An Anthropic stream that never sends `message_start` (a look-alike server): its text reached the
 * caller and the call was charged nothing, and the error said "the stream ended before
 * message_stop" though message_stop came. Without the input count the call is charged at the
 * bound of what arrived, as a cut stream is: the input reserved for it and one output token per
 * UTF-8 byte of the text, and the error names the missing message_start.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inputTokenBound } from '../../src/providers/estimate.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-no-message-start';
const PROMPT = 'What did the quarterly report say';
const MAX_TOKENS = 100;
/** What admission reserves for the input: the byte bound (no counting). */
const BOUND = inputTokenBound({ messages: [{ content: PROMPT }] });

const policy = (fake: FakeProviderServer) => `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${fake.url}", maxRetries: 0 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  claude: [anthropic/claude-sonnet-4-5]
apiKeys:
  - { id: nm, sha256: ${sha(KEY)}, user: nia, teams: [research] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: UTC }, limit: { tokens: 100000 } }
`;

describe('an Anthropic stream without message_start', () => {
  let fake: FakeProviderServer;
  let gw: TestGateway;
  beforeAll(async () => {
    fake = await startFakeAnthropic();
    gw = await startTestGateway(policy(fake));
  });
  afterAll(async () => {
    await gw.close();
    await fake.close();
  });

  it('is charged the input reserved and a token per UTF-8 byte of the text that reached the caller, and fails naming message_start', async () => {
    fake.failNext({ kind: 'noMessageStart' });
    const an = new Anthropic({ apiKey: KEY, baseURL: gw.url, maxRetries: 0 });
    const stream = an.messages.stream({ model: 'claude', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: PROMPT }] });
    const text: string[] = [];
    stream.on('text', (t) => void text.push(t));
    const err = (await stream.finalMessage().then(
      () => undefined,
      (e: unknown) => e,
    )) as Error | undefined;
    await gw.idle();

    const reply = replyWords('anthropic', PROMPT, MAX_TOKENS).join('');
    expect(text.join('')).toBe(reply);
    expect(err?.message).toContain('the stream had no message_start');
    const event = gw.events.at(-1)!;
    expect(event['error.code']).toBe('PROVIDER_UNAVAILABLE');
    expect(event['tollgate.reserved_tokens']).toEqual({ input: BOUND, output: MAX_TOKENS });
    expect([event['gen_ai.usage.input_tokens'], event['gen_ai.usage.output_tokens']]).toEqual([BOUND, Buffer.byteLength(reply)]);
    expect(event['tollgate.charged']).toEqual([{ budget: 'user-weekly', subject: 'nia', amount: BOUND + Buffer.byteLength(reply), unit: 'tokens' }]);
  });
});
