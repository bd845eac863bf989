/**
 * A request whose headers reached a route but whose body breaks HTTP/1.1 framing (a chunk size
 * that is not hex) is one refusal: one event, INVALID_REQUEST, on the route's transport, with the
 * credential it presented, named by the answer's x-request-id. It was two: the edge's
 * INVALID_REQUEST, and the route's CANCELLED, "the caller disconnected", though the caller had not.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { exchangeOnSocket } from '../helpers/raw.js';

const send = async (url: string, bytes: string) => (await exchangeOnSocket(url, [bytes])).text;

describe('a body that breaks HTTP/1.1 framing after its headers reached a route', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  it.each([
    ['a chunk size that is not hex', 'zz\r\n{"model":"standard"}\r\n0\r\n\r\n'],
    ['a chunk longer than its size', '3\r\n{"model":"standard"}\r\n0\r\n\r\n'],
  ])('%s is one INVALID_REQUEST event', async (_what, body) => {
    const before = gw.events.length;
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: ${new URL(gw.url).host}\r\nAuthorization: Bearer ${KEYS.alice}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const answer = await send(gw.url, head + body);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    await gw.idle();
    // Give a second event, if one were coming, the time to come.
    await new Promise((r) => setTimeout(r, 200));
    const events = gw.events.slice(before);
    expect(events).toEqual([expect.objectContaining({ 'error.code': 'INVALID_REQUEST', transport: 'openai', reason: expect.stringContaining('/v1/chat/completions') })]);
    expect(answer.toLowerCase()).toContain(`x-request-id: ${String(events[0]!['request.id'])}`);
  });
});

describe('a request Node cannot parse, second on a kept-alive connection', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  it.each([
    ['headers over 16 KiB', (host: string) => `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ['both Content-Length and Transfer-Encoding', (host: string) => `POST /v1/chat/completions HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
  ])('%s is answered and recorded, as on a fresh connection', async (_what, bad, status) => {
    const host = new URL(gw.url).host;
    const before = gw.events.length;
    const answer = await new Promise<string>((resolve) => {
      const { hostname, port } = new URL(gw.url);
      const socket = connect(Number(port), hostname);
      let text = '';
      let sent = false;
      const timer = setTimeout(() => socket.destroy(), 10_000);
      socket.on('data', (d: Buffer) => {
        text += d.toString('utf8');
        // Once the first answer is whole, the second request goes on the same connection.
        if (!sent && text.includes('"status":"ok"')) {
          sent = true;
          socket.write(bad(host));
        }
      });
      socket.on('error', () => {});
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(text);
      });
      socket.write(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    });
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    expect(statuses).toEqual([200, status]);
    await gw.idle();
    await new Promise((r) => setTimeout(r, 200));
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ 'error.code': 'INVALID_REQUEST', reason: expect.stringContaining(String(status)) })]);
  });
});
