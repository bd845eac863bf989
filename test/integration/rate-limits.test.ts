/**
 * Rate limits and concurrency caps at every way in, in front of the fake OpenAI and Anthropic
 * servers: a refusal is RATE_LIMITED with the limit, its scope and a retry time in each API's own
 * terms, it is journaled like every refusal, and the official SDKs' retry logic waits as long as
 * the gateway says before trying again.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openMcpSession, send, TRANSPORTS } from '../../tools/bench/clients.js';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const CAPPED = 'key-capped';
const COUNTED = 'key-counted';
const TOKENS = 'key-tokens';
const RETRY_MS = 900;

function policyText(anthropic: FakeProviderServer, openai: FakeProviderServer): string {
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
apiKeys:
  - { id: k-capped, sha256: ${sha(CAPPED)}, user: erin, teams: [research] }
  - { id: k-counted, sha256: ${sha(COUNTED)}, user: finn, teams: [research] }
  - { id: k-tokens, sha256: ${sha(TOKENS)}, user: gail, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
rateLimits:
  - id: one-in-flight
    scope: user
    when: "principal.user == 'erin'"
    concurrent: 1
    retryAfterMs: ${RETRY_MS}
  - id: key-rpm
    scope: key
    when: "principal.user == 'finn'"
    requestsPerMinute: 1
  - id: user-tpm
    scope: user
    when: "principal.user == 'gail'"
    tokensPerMinute: 500
`;
}

describe('rate limits on every way in', () => {
  let anthropic: FakeProviderServer;
  let openai: FakeProviderServer;
  let gw: TestGateway | undefined;
  beforeAll(async () => {
    [anthropic, openai] = await Promise.all([startFakeAnthropic(), startFakeOpenAI()]);
  });
  afterAll(async () => {
    await Promise.all([anthropic.close(), openai.close()]);
  });
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
    anthropic.reset();
    openai.reset();
  });
  const start = async () => (gw = await startTestGateway(policyText(anthropic, openai)));

  it('refuses with RATE_LIMITED, the limit, its scope and a retry time on each transport, and journals every refusal', async () => {
    await start();
    const base = gw!.url;
    const first = await send('openai', { base, token: COUNTED, tier: 'gpt', prompt: 'first call', maxTokens: 20 });
    expect(first.status).toBe(200);
    const session = await openMcpSession(base, COUNTED);
    const answers = new Map<string, Awaited<ReturnType<typeof send>>>();
    for (const kind of TRANSPORTS) answers.set(kind, await send(kind, { base, token: COUNTED, tier: 'gpt', prompt: 'again', maxTokens: 20, session }));

    for (const kind of ['openai', 'openai-stream'] as const) {
      const a = answers.get(kind)!;
      expect(a.status).toBe(429);
      const ms = Number(a.headers.get('retry-after-ms'));
      expect(ms).toBeGreaterThan(0);
      expect(ms).toBeLessThanOrEqual(60_000);
      expect(a.headers.get('retry-after')).toBe(String(Math.ceil(ms / 1000)));
      expect(a.headers.get('x-ratelimit-limit-requests')).toBe('1');
      expect(a.headers.get('x-ratelimit-remaining-requests')).toBe('0');
      expect(a.headers.get('x-ratelimit-reset-requests')).toMatch(/^(\d+m)?\d+(\.\d+)?s$|^\d+ms$/);
      expect(a.headers.get('x-tollgate-ratelimit-id')).toBe('key-rpm');
      expect(a.headers.get('x-should-retry')).toBeNull();
      const body = JSON.parse(a.text) as { error: { code: string; type: string; details: Record<string, unknown> } };
      expect(body.error).toMatchObject({ code: 'RATE_LIMITED', type: 'rate_limit_exceeded', details: { limitId: 'key-rpm', scope: 'key', subject: 'key:k-counted', kind: 'requests', retryAfterMs: ms } });
    }
    for (const kind of ['anthropic', 'anthropic-stream'] as const) {
      const a = answers.get(kind)!;
      expect(a.status).toBe(429);
      expect(Number(a.headers.get('retry-after-ms'))).toBeGreaterThan(0);
      expect(a.headers.get('anthropic-ratelimit-requests-limit')).toBe('1');
      expect(a.headers.get('anthropic-ratelimit-requests-remaining')).toBe('0');
      expect(Date.parse(a.headers.get('anthropic-ratelimit-requests-reset')!)).toBeGreaterThan(Date.now() - 1000);
      expect(JSON.parse(a.text)).toMatchObject({ type: 'error', error: { type: 'rate_limit_error', details: { error_code: 'RATE_LIMITED', limitId: 'key-rpm' } } });
    }
    for (const kind of ['mcp-json', 'mcp-sse'] as const) {
      const text = answers.get(kind)!.text;
      const json = JSON.parse(text.includes('data: ') ? text.slice(text.lastIndexOf('data: ') + 6) : text) as { result: { isError: boolean; _meta: Record<string, unknown> } };
      expect(json.result.isError).toBe(true);
      expect(json.result._meta.retryAfterMs).toBeGreaterThan(0);
      expect(json.result._meta['io.tollgate/error']).toMatchObject({ code: 'RATE_LIMITED', details: { limitId: 'key-rpm', scope: 'key' } });
    }
    for (const kind of ['a2a', 'a2a-stream'] as const) {
      const text = answers.get(kind)!.text;
      expect(text).toContain('TASK_STATE_FAILED');
      expect(text).toContain('RATE_LIMITED: Rate limit key-rpm');
      expect(text).toMatch(/"retryAfterMs":\d+/);
    }

    // Only the first call reached a provider; every refusal is a journaled decision event.
    expect(openai.counts.received).toBe(1);
    await gw!.idle();
    const refusals = gw!.events.filter((e) => e['error.code'] === 'RATE_LIMITED');
    expect(refusals).toHaveLength(TRANSPORTS.length);
    for (const e of refusals) {
      expect(e).toMatchObject({ outcome: 'refused', effect: 'deny', 'user.id': 'finn', 'tollgate.rate_limit': { id: 'key-rpm', scope: 'key', subject: 'key:k-counted', kind: 'requests', limit: 1 } });
    }
  });

  it('reports a tokens-per-minute refusal in the -tokens headers of each compatible endpoint', async () => {
    await start();
    const base = gw!.url;
    // The first call fits (its input bound plus 20) and uses a few tokens of the 500 a minute.
    const first = await send('openai', { base, token: TOKENS, tier: 'gpt', prompt: 'a short answer please', maxTokens: 20 });
    expect(first.status).toBe(200);
    const used = (JSON.parse(first.text) as { usage: { total_tokens: number } }).usage.total_tokens;
    expect(used).toBeGreaterThan(0);
    // The next one's worst case (its input bound plus 480) fits the limit, not what is left of it: refused until the first leaves the window.
    const openaiAnswer = await send('openai', { base, token: TOKENS, tier: 'gpt', prompt: 'a long answer please', maxTokens: 480 });
    expect(openaiAnswer.status).toBe(429);
    expect(openaiAnswer.headers.get('x-ratelimit-limit-tokens')).toBe('500');
    expect(openaiAnswer.headers.get('x-ratelimit-remaining-tokens')).toBe(String(500 - used));
    expect(openaiAnswer.headers.get('x-ratelimit-reset-tokens')).toMatch(/^(\d+m)?\d+(\.\d+)?s$|^\d+ms$/);
    expect(openaiAnswer.headers.get('x-ratelimit-limit-requests')).toBeNull();
    expect(JSON.parse(openaiAnswer.text)).toMatchObject({ error: { code: 'RATE_LIMITED', details: { limitId: 'user-tpm', scope: 'user', subject: 'gail', kind: 'tokens', limit: 500 } } });
    const anthropicAnswer = await send('anthropic', { base, token: TOKENS, tier: 'gpt', prompt: 'a long answer please', maxTokens: 480 });
    expect(anthropicAnswer.status).toBe(429);
    expect(anthropicAnswer.headers.get('anthropic-ratelimit-tokens-limit')).toBe('500');
    expect(anthropicAnswer.headers.get('anthropic-ratelimit-tokens-remaining')).toBe(String(500 - used));
    expect(Date.parse(anthropicAnswer.headers.get('anthropic-ratelimit-tokens-reset')!)).toBeGreaterThan(Date.now() - 1000);
    expect(anthropicAnswer.headers.get('anthropic-ratelimit-requests-limit')).toBeNull();
    expect(openai.counts.received).toBe(1);
  });

  it('refuses a call no wait can admit (its worst case exceeds the tokens-per-minute limit itself) as INVALID_REQUEST, with no retry time', async () => {
    await start();
    const base = gw!.url;
    // Its input bound plus 600 output tokens is more than the 500 a minute the limit ever allows.
    let largest = 0;
    for (const kind of ['openai', 'anthropic'] as const) {
      const a = await send(kind, { base, token: TOKENS, tier: 'gpt', prompt: 'a long answer please', maxTokens: 600 });
      expect(a.status).toBe(400);
      expect(a.headers.get('x-should-retry')).toBe('false');
      expect(a.headers.get('retry-after')).toBeNull();
      expect(a.headers.get('retry-after-ms')).toBeNull();
      const body = JSON.parse(a.text) as { error: { message: string } };
      const [, upTo, atMost] = /Invalid arguments: max_tokens 600 lets this call use up to (\d+) tokens, more than rate limit user-tpm \(user gail\) allows in a minute \(500\); lower max_tokens to at most (\d+)\.$/.exec(body.error.message) ?? [];
      // At most that many, the call's worst case is the limit exactly.
      expect(Number(atMost)).toBe(600 - (Number(upTo) - 500));
      largest = Number(atMost);
    }
    expect(openai.counts.received).toBe(0);
    // As large as the message says is admitted.
    expect((await send('openai', { base, token: TOKENS, tier: 'gpt', prompt: 'a long answer please', maxTokens: largest })).status).toBe(200);
    await gw!.idle();
    const events = gw!.events.filter((e) => e['user.id'] === 'gail');
    expect(events.map((e) => e['error.code'] ?? e.outcome)).toEqual(['INVALID_REQUEST', 'INVALID_REQUEST', 'success']);
    for (const e of events.slice(0, 2)) expect(e).toMatchObject({ outcome: 'failed', 'error.code': 'INVALID_REQUEST' });
  });

  it('gives a cap slot back when the caller leaves mid-call', async () => {
    await start();
    openai.setLatency(1500);
    const leaving = new AbortController();
    const left = fetch(`${gw!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CAPPED}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: 'leave early' }], max_tokens: 10 }),
      signal: leaving.signal,
    }).catch((err: Error) => err.name);
    await until(() => openai.counts.received === 1);
    leaving.abort();
    expect(await left).toBe('AbortError');
    // The left call's event is written once its slot is given back; the next call then fits.
    await until(() => gw!.events.some((e) => e['user.id'] === 'erin'), 10_000);
    openai.setLatency(0);
    const next = await new OpenAI({ baseURL: `${gw!.url}/v1`, apiKey: CAPPED, maxRetries: 0 }).chat.completions.create({ model: 'gpt', messages: [{ role: 'user', content: 'my turn' }], max_tokens: 10 });
    expect(next.choices[0]!.message.content).toBe('fake openai reply to: my turn');
  });

  it('the openai SDK waits the retry-after-ms a concurrency refusal gives, then is served', async () => {
    await start();
    openai.setLatency(300);
    const sdk = (retries: number) => new OpenAI({ baseURL: `${gw!.url}/v1`, apiKey: CAPPED, maxRetries: retries });
    const holding = sdk(0).chat.completions.create({ model: 'gpt', messages: [{ role: 'user', content: 'hold the slot' }], max_tokens: 10 });
    await until(() => openai.counts.received === 1);
    const retried = await sdk(2).chat.completions.create({ model: 'gpt', messages: [{ role: 'user', content: 'wait your turn' }], max_tokens: 10 });
    await holding;
    expect(retried.choices[0]!.message.content).toBe('fake openai reply to: wait your turn');
    await gw!.idle();
    expectWaited(gw!, 'openai');
  });

  it('the anthropic SDK waits the retry-after-ms a concurrency refusal gives, then is served', async () => {
    await start();
    anthropic.setLatency(300);
    const sdk = (retries: number) => new Anthropic({ baseURL: gw!.url, apiKey: CAPPED, maxRetries: retries });
    const holding = sdk(0).messages.create({ model: 'claude', messages: [{ role: 'user', content: 'hold the slot' }], max_tokens: 10 });
    await until(() => anthropic.counts.received === 1);
    const retried = await sdk(2).messages.create({ model: 'claude', messages: [{ role: 'user', content: 'wait your turn' }], max_tokens: 10 });
    await holding;
    expect(retried.content).toEqual([{ type: 'text', text: 'fake anthropic reply to: wait your turn' }]);
    await gw!.idle();
    expectWaited(gw!, 'anthropic');
  });
});

/**
 * The refused attempt and the served retry are two decision events of one user: the retry began
 * at least the suggested pause after the refusal. The SDKs' own first backoff is at most 500 ms,
 * below RETRY_MS, so only a client that read the header waits this long.
 */
function expectWaited(gw: TestGateway, transport: string): void {
  const events = gw.events.filter((e) => e['user.id'] === 'erin' && e.transport === transport);
  const refused = events.filter((e) => e['error.code'] === 'RATE_LIMITED');
  const served = events.filter((e) => e.outcome === 'success');
  expect(refused).toHaveLength(1);
  expect(refused[0]!['tollgate.rate_limit']).toMatchObject({ id: 'one-in-flight', kind: 'concurrent', retry_after_ms: RETRY_MS });
  expect(served).toHaveLength(2);
  const retry = served.find((e) => Date.parse(e.time) > Date.parse(refused[0]!.time))!;
  expect(Date.parse(retry.time) - Date.parse(refused[0]!.time)).toBeGreaterThanOrEqual(RETRY_MS);
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
