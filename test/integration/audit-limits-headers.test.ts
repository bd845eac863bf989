/**
 * The rate-limit headers of a refusal against the window's real reset, on a gateway whose clock
 * the test holds: a client that waits exactly what the refusal says is served, one that comes a
 * millisecond early is not, and Anthropic's reset instant is never before the real one.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../../tools/bench/clients.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-audit-rps';

function policyText(openai: FakeProviderServer): string {
  return `
version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${openai.url}", timeoutMs: 30000 }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  gpt: [openai/gpt-5-mini]
apiKeys:
  - { id: k-rps, sha256: ${sha(KEY)}, user: hana, teams: [research] }
rateLimits:
  - id: user-rps
    scope: user
    requestsPerSecond: 2
`;
}

describe('rate-limit headers against the window', () => {
  let openai: FakeProviderServer;
  let gw: TestGateway | undefined;
  let clock = Date.parse('2026-11-25T10:00:00.130Z');
  beforeAll(async () => {
    openai = await startFakeOpenAI();
  });
  afterAll(async () => {
    await openai.close();
  });
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
    openai.reset();
  });
  const call = (kind: 'openai' | 'anthropic') => send(kind, { base: gw!.url, token: KEY, tier: 'gpt', prompt: 'hello', maxTokens: 16 });

  it('says to come back when the first call leaves the window, to the millisecond, on both compatible endpoints', async () => {
    gw = await startTestGateway(policyText(openai), { now: () => clock });
    expect((await call('openai')).status).toBe(200);
    clock = Date.parse('2026-11-25T10:00:00.450Z');
    expect((await call('openai')).status).toBe(200);
    clock = Date.parse('2026-11-25T10:00:00.520Z');
    const refused = await call('openai');
    expect(refused.status).toBe(429);
    // The first call was charged in the bucket 10:00:00.100: it leaves the window at 10:00:01.100.
    expect(refused.headers.get('retry-after-ms')).toBe('580');
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('x-ratelimit-limit-requests')).toBe('2');
    expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(refused.headers.get('x-ratelimit-reset-requests')).toBe('580ms');
    const anthropic = await call('anthropic');
    expect(anthropic.status).toBe(429);
    expect(anthropic.headers.get('retry-after-ms')).toBe('580');
    // Whole seconds, as Anthropic writes them: the second the window has moved on by, not the one before.
    expect(anthropic.headers.get('anthropic-ratelimit-requests-reset')).toBe('2026-11-25T10:00:02Z');
    await gw.idle();
    clock += 579;
    expect((await call('openai')).status).toBe(429);
    clock += 1;
    expect((await call('openai')).status).toBe(200);
  });
});
