/**
 * The charsets a JSON body may be sent in: UTF-8, UTF-16 and UTF-32 (RFC 8259, and RFC 7159 before
 * it). Any other is refused with 400 INVALID_REQUEST naming it, recorded as the caller's, on every
 * way in. UTF-7 in particular: the body parser would decode it, and every `+` the caller wrote
 * would begin a base64 run, so the gateway would send and charge a prompt the caller never wrote.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { sendRaw } from '../helpers/raw.js';

let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway(basicPolicy());
});
afterAll(() => gw.close());

const PROMPT = 'Is C++ faster than 1+1=2?';
const CHAT = { model: 'standard', messages: [{ role: 'user', content: PROMPT }] };

function chat(charset: string, body: Buffer) {
  return sendRaw(gw.url, { path: '/v1/chat/completions', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': `application/json; charset=${charset}` }, body });
}

describe('the charset of a JSON body', () => {
  it('refuses UTF-7 with 400 INVALID_REQUEST naming it, recorded as the caller\'s', async () => {
    const before = gw.events.length;
    const res = await chat('utf-7', Buffer.from(JSON.stringify(CHAT)));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({ error: { code: 'INVALID_REQUEST', message: 'INVALID_REQUEST: The request could not be read: unsupported charset "UTF-7".' } });
    await gw.idle();
    expect(gw.events.slice(before).map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual([['openai', 'INVALID_REQUEST', 'alice']]);
  });

  it('refuses UTF-7 on /mcp as it refuses latin1', async () => {
    const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'utf7', version: '1' } } };
    const res = await sendRaw(gw.mcpUrl, {
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json; charset=utf-7', accept: 'application/json, text/event-stream' },
      body: JSON.stringify(init),
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({ error: { code: 'INVALID_REQUEST', message: 'The request could not be read: unsupported charset "UTF-7".', details: {} } });
  });

  it.each([
    ['utf-8', 'utf8'],
    ['utf-16le', 'utf16le'],
    ['utf-16', 'utf16le'],
  ] as const)('serves a body in %s with the prompt as written', async (charset, encoding) => {
    const text = JSON.stringify(CHAT);
    // UTF-16 without a byte order mark is read as big-endian unless it says otherwise; this one says so.
    const body = charset === 'utf-16' ? Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, encoding)]) : Buffer.from(text, encoding);
    const res = await chat(charset, body);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text).choices[0].message.content).toBe(`[medium] You said: ${PROMPT}`);
  });

  // As bytes that are not UTF-8 are refused rather than replaced: a stray byte was dropped and a
  // lone surrogate passed on.
  it.each([
    ['a stray byte after UTF-16LE', 'utf-16le', () => Buffer.concat([Buffer.from(JSON.stringify(CHAT), 'utf16le'), Buffer.from([0x41])])],
    // The code unit itself, not JSON's \ud800 escape (which any charset may carry).
    ['a lone surrogate in UTF-16LE', 'utf-16le', () => Buffer.from(JSON.stringify({ ...CHAT, messages: [{ role: 'user', content: 'x@y' }] }).replace('@', '\ud800'), 'utf16le')],
    ['UTF-32 cut short', 'utf-32le', () => Buffer.from([0x7b, 0, 0, 0, 0x7d, 0, 0])],
  ] as const)('refuses %s with 400 INVALID_REQUEST, recorded as the caller\'s', async (_what, charset, body) => {
    const before = gw.events.length;
    const res = await chat(charset, body());
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({ error: { code: 'INVALID_REQUEST' } });
    expect(JSON.parse(res.text).error.message).toContain(`The request body is not valid ${charset.toUpperCase()}.`);
    await gw.idle();
    expect(gw.events.slice(before).map((e) => [e['error.code'], e['user.id']])).toEqual([['INVALID_REQUEST', 'alice']]);
  });
});
