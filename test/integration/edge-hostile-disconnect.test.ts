/**
 * A client that leaves while its request body is on its way, on every way in that reads a body:
 * it closes its side of the connection (FIN) or drops it (RST) after the headers and part of the
 * body. No one is left to answer, so nothing is written back, and the request leaves one decision
 * event: CANCELLED, as the caller's, on the route's transport (never a second, unattributed
 * "not valid HTTP/1.1" refusal, and never INVALID_REQUEST, which would blame the caller's bytes).
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway(basicPolicy());
});
afterAll(() => gw.close());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `check` holds, or fails after 5 s. */
async function waitFor(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await sleep(10);
  }
}

/**
 * Sends the headers of a POST announcing 500 bytes and the first 30 of them, then leaves as `how`
 * says once the gateway has had time to start reading the body. Resolves with what the gateway
 * wrote back on the connection.
 */
async function leaveMidBody(path: string, headers: Record<string, string>, how: 'fin' | 'rst'): Promise<string> {
  const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
  socket.on('error', () => undefined);
  let read = '';
  socket.on('data', (d: Buffer) => (read += d.toString('latin1')));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const lines = Object.entries({ Host: '127.0.0.1', 'Content-Type': 'application/json', 'Content-Length': '500', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.write(`POST ${path} HTTP/1.1\r\n${lines.join('')}\r\n{"model":"standard","messages":[`);
  await sleep(50);
  if (how === 'rst') socket.resetAndDestroy();
  else socket.end();
  await closed;
  return read;
}

const BEARER = { Authorization: `Bearer ${KEYS.alice}` };
const ROUTES: { path: string; headers: Record<string, string>; transport: string }[] = [
  { path: '/v1/chat/completions', headers: BEARER, transport: 'openai' },
  { path: '/v1/responses', headers: BEARER, transport: 'openai' },
  { path: '/v1/messages', headers: { 'x-api-key': KEYS.alice, 'anthropic-version': '2023-06-01' }, transport: 'anthropic' },
  { path: '/v1/messages/count_tokens', headers: BEARER, transport: 'anthropic' },
  { path: '/v1/tollgate/estimate', headers: BEARER, transport: 'http' },
  { path: '/mcp', headers: { ...BEARER, Accept: 'application/json, text/event-stream' }, transport: 'http' },
  { path: '/a2a', headers: { ...BEARER, 'A2A-Version': '1.0' }, transport: 'a2a' },
];

describe('a client that leaves mid-body', () => {
  for (const how of ['fin', 'rst'] as const) {
    it.each(ROUTES)(`is recorded as one CANCELLED event of its own on $path (${how}), and sent nothing`, async ({ path, headers, transport }) => {
      const before = gw.events.length;
      const answer = await leaveMidBody(path, headers, how);
      await waitFor(() => gw.events.length > before);
      // Both refusals, when there were two, were recorded within a few milliseconds of each other.
      await sleep(150);
      await gw.idle();
      expect(answer).toBe('');
      expect(gw.events.slice(before)).toMatchObject([{ transport, outcome: 'failed', 'error.code': 'CANCELLED', 'user.id': 'alice' }]);
      expect(gw.events.slice(before)).toHaveLength(1);
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    });
  }
});
