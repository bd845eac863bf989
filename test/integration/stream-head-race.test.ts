/**
 * A caller who leaves while the provider's stream head is on the wire but not yet read (an event
 * loop busy with other calls: a burst, a cold start) leaves a call the provider bills: it is charged
 * its input bound and what had arrived, as one that left after the head was read, not recorded
 * CANCELLED at nothing. The test makes the race exact: the fake (in this process) writes its head
 * and first chunk, and in the next turn of the loop, before the poll that would read them, the
 * caller's signal aborts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

type Upstream = 'openai' | 'anthropic' | 'bedrock';
const fakes: Record<Upstream, Pick<FakeProviderServer, 'requests' | 'setWordDelay' | 'close' | 'url'>> = {} as never;
let gw: TestGateway;

beforeAll(async () => {
  [fakes.openai, fakes.anthropic, fakes.bedrock] = await Promise.all([startFakeOpenAI(), startFakeAnthropic(), startFakeBedrock()]);
  gw = await startTestGateway(`
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${fakes.anthropic.url}", timeoutMs: 30000 }
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${fakes.openai.url}", timeoutMs: 30000 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDTEST, secretAccessKey: secret, baseUrl: "${fakes.bedrock.url}", timeoutMs: 30000 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
  bedrock/anthropic.claude-sonnet-4-5-v1:0: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
tiers:
  claude: [anthropic/claude-sonnet-4-5]
  gpt: [openai/gpt-5-mini]
  bedrock: [bedrock/anthropic.claude-sonnet-4-5-v1:0]
defaultTier: gpt
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 1000000 } }
`);
});
afterAll(async () => {
  await gw?.close();
  await Promise.all(Object.values(fakes).map((f) => f?.close()));
});

describe('a caller who leaves with the stream head unread', () => {
  const tierOf: Record<Upstream, string> = { openai: 'gpt', anthropic: 'claude', bedrock: 'bedrock' };
  for (const upstream of ['openai', 'anthropic', 'bedrock'] as const) {
    it(`is charged for the ${upstream} stream the provider had begun`, async () => {
      const fake = fakes[upstream];
      // The head and first chunk go out at once; the words would take minutes.
      fake.setWordDelay(60_000);
      const before = gw.events.length;
      const seen = fake.requests.length;
      const ac = new AbortController();
      const call = gw.runtime.gateway
        .complete({
          principal: { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key' },
          transport: 'openai',
          request: { messages: [{ role: 'user', content: 'Summarise the incident report' }], tier: tierOf[upstream], maxTokens: 40 },
          signal: ac.signal,
          onText: () => undefined,
        })
        .catch((e: unknown) => e);
      // Checked once a turn, in the timers phase: the turn the fake wrote its head in has ended, and
      // the poll that would read it in the gateway comes after this callback.
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (fake.requests.length > seen) {
            ac.abort();
            resolve();
          } else setTimeout(check, 0);
        };
        setTimeout(check, 0);
      });
      expect(await call).toBeInstanceOf(Error);
      await gw.idle();
      const [event] = gw.events.slice(before);
      expect(event).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED' });
      expect(event!['tollgate.charged']).toEqual([expect.objectContaining({ budget: 'user-weekly', subject: 'alice' })]);
      expect((event!['tollgate.charged'] as { amount: number }[])[0]!.amount).toBeGreaterThan(0);
      fake.setWordDelay(0);
    });
  }
});
