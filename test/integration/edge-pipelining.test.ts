/**
 * Several requests on one connection, some of them refused at the edge: each request is answered or
 * recorded on its own, once. Found by a probe of the edge's own fixes: a request pipelined behind a
 * 413 (the connection closing after it) was served and charged but never answered; bytes that broke
 * HTTP after a whole request were blamed on that request (its answer replaced by a 400, two events,
 * one a CANCELLED); a broken body after an early 401 got a second answer and event; a broken body
 * on /v1 was recorded without the caller its valid key named.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { exchangeOnSocket } from '../helpers/raw.js';

const LIMIT = 4096;

/** Writes `pieces` (`gapMs` apart) on one connection; resolves with all it read once the server closes it. */
const exchange = async (url: string, pieces: string[], gapMs = 0, ms = 10_000) => (await exchangeOnSocket(url, pieces, { gapMs, timeoutMs: ms })).text;

const statuses = (answer: string) => [...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

describe('requests pipelined on one connection with edge refusals among them', () => {
  let gw: TestGateway;
  let host: string;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy().replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 200 }'), { maxBodyBytes: LIMIT });
    host = new URL(gw.url).host;
  });
  afterAll(() => gw.close());

  const chat = (key: string = KEYS.alice) => {
    const body = JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });
    return `POST /v1/chat/completions HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  };
  /** A request declaring a body over the limit, and the body, exactly as long as declared. */
  const tooLarge = () => {
    const body = `{"model":"standard","pad":"${'x'.repeat(LIMIT)}"}`;
    return `POST /v1/chat/completions HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${KEYS.alice}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  };
  /** Events as [outcome, code, transport], in a fixed order (a call's event follows its answer, after an edge refusal's). */
  const summary = (events: readonly { outcome: string; 'error.code'?: string; transport: string }[]) => events.map((e) => [e.outcome, e['error.code'] ?? '-', e.transport]).sort();
  const settled = async (before: number) => {
    await gw.idle();
    await new Promise((r) => setTimeout(r, 300));
    await gw.idle();
    return gw.events.slice(before);
  };

  it('does not run a request pipelined behind a 413 that closes the connection: it is neither answered nor charged', async () => {
    const before = gw.events.length;
    const answer = await exchange(gw.url, [chat() + tooLarge() + chat()]);
    expect(statuses(answer)).toEqual([200, 413]);
    expect(summary(await settled(before))).toEqual([
      ['failed', 'PAYLOAD_TOO_LARGE', 'openai'],
      ['success', '-', 'openai'],
    ]);
  });

  it('answers a whole request before bytes that break HTTP after it, and records those once, apart', async () => {
    for (const gapMs of [0, 100]) {
      const before = gw.events.length;
      const answer = await exchange(gw.url, [chat(), 'GARBAGE\u0001\r\n\r\n'], gapMs);
      expect(statuses(answer)).toEqual([200, 400]);
      expect(summary(await settled(before))).toEqual([
        ['failed', 'INVALID_REQUEST', 'http'],
        ['success', '-', 'openai'],
      ]);
    }
  });

  it('answers a refused credential once, whatever broken body follows it on /mcp', async () => {
    const before = gw.events.length;
    const head = `POST /mcp HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer not-a-key\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n`;
    const answer = await exchange(gw.url, [head, 'QQ\r\nzz\r\n'], 200);
    expect(statuses(answer)).toEqual([401]);
    const events = await settled(before);
    expect(events.map((e) => e['error.code'])).toEqual(['AUTH_INVALID']);
  });

  it('records a broken body on /v1 as the caller its valid key names', async () => {
    const before = gw.events.length;
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${KEYS.alice}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const answer = await exchange(gw.url, [head + 'zz\r\n{}\r\n0\r\n\r\n']);
    expect(statuses(answer)).toEqual([400]);
    const events = await settled(before);
    expect(events).toEqual([expect.objectContaining({ 'error.code': 'INVALID_REQUEST', 'user.id': 'alice', 'auth.credential.id': 'k-alice', transport: 'openai' })]);
  });
});
