/**
 * A body over the size limit is refused with 413 PAYLOAD_TOO_LARGE as soon as the gateway can tell
 * (a Content-Length over it, or more bytes than it arrived), not once the caller has sent the
 * rest: a caller that declared 2 MB and stopped after 19 bytes held its connection until Node's
 * request timeout (300 s), then got 408 INVALID_REQUEST and left two events for one request. One
 * event, with the caller's identity, and the connection closed after the answer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { exchangeOnSocket } from '../helpers/raw.js';

const LIMIT = 64 * 1024;

/** Writes `head` and `body` on a fresh connection, then nothing more: what came back once the server closed it (or after `ms`). */
const stalled = (url: string, head: string, body: Buffer | string, ms = 10_000) => exchangeOnSocket(url, [head, body], { timeoutMs: ms });

describe('a body over the limit that never finishes arriving', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy(), { maxBodyBytes: LIMIT });
  });
  afterAll(() => gw.close());

  const head = (extra: string) =>
    `POST /v1/chat/completions HTTP/1.1\r\nHost: ${new URL(gw.url).host}\r\nAuthorization: Bearer ${KEYS.alice}\r\nContent-Type: application/json\r\n${extra}\r\n`;

  it('is refused at once when its Content-Length is over the limit', { timeout: 30_000 }, async () => {
    const before = gw.events.length;
    const r = await stalled(gw.url, head(`Content-Length: ${2 * 1024 * 1024}\r\n`), '{"model":"standard",');
    expect(r.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(r.text.toLowerCase()).toContain('payload_too_large');
    expect(r.closed).toBe(true);
    await gw.idle();
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ 'error.code': 'PAYLOAD_TOO_LARGE', 'user.id': 'alice', transport: 'openai' })]);
  });

  it('is refused once its chunks pass the limit, though the caller stops before the end', { timeout: 30_000 }, async () => {
    const before = gw.events.length;
    const chunk = Buffer.from(`{"model":"standard","pad":"${'x'.repeat(LIMIT + 100)}`);
    const r = await stalled(gw.url, head('Transfer-Encoding: chunked\r\n'), Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
    expect(r.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(r.closed).toBe(true);
    await gw.idle();
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ 'error.code': 'PAYLOAD_TOO_LARGE', 'user.id': 'alice', transport: 'openai' })]);
  });
});

describe('a compressed body that inflates past the limit and never finishes arriving', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy(), { maxBodyBytes: LIMIT });
  });
  afterAll(() => gw.close());

  it('is refused 413 once what it inflates to passes the limit, and the connection closes', { timeout: 30_000 }, async () => {
    const { gzipSync } = await import('node:zlib');
    const whole = gzipSync(Buffer.from(`{"model":"standard","pad":"${'x'.repeat(LIMIT * 4)}"}`));
    // All but its last bytes: the part sent inflates past the limit; the rest never comes.
    const sent = whole.subarray(0, whole.length - 8);
    const before = gw.events.length;
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: ${new URL(gw.url).host}\r\nAuthorization: Bearer ${KEYS.alice}\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${whole.length}\r\n\r\n`;
    const r = await stalled(gw.url, head, sent);
    expect(r.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(r.closed).toBe(true);
    await gw.idle();
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ 'error.code': 'PAYLOAD_TOO_LARGE', 'user.id': 'alice' })]);
  });
});
