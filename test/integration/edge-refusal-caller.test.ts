/**
 * A request the HTTP edge refuses before any route authenticates it (an unknown path, a method a
 * route does not serve, a refused Origin) is recorded as the caller its credential names, so that a
 * security team reading the journal sees who probed, not only a fingerprint of what they sent. The
 * answer stays the edge's (404, 405, 403): a credential that proves no one leaves the refusal's own
 * code and the fingerprint, and one event either way.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { sendRaw } from '../helpers/raw.js';

describe('a refusal at the edge before authentication', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  const refused = async (req: Parameters<typeof sendRaw>[1]) => {
    const before = gw.events.length;
    const res = await sendRaw(gw.url, req);
    await gw.idle();
    return { status: res.status, events: gw.events.slice(before), requestId: res.headers['x-request-id'] };
  };
  const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

  it.each([
    ['an unknown path', { method: 'GET', path: '/v2/models' }, 404, 'NOT_FOUND'],
    ['a method /mcp does not serve', { method: 'PUT', path: '/mcp', body: '{}', headers: { 'content-type': 'application/json' } }, 405, 'INVALID_REQUEST'],
    ['a refused Origin', { method: 'POST', path: '/v1/chat/completions', body: '{}', headers: { 'content-type': 'application/json', origin: 'https://evil.example' } }, 403, 'FORBIDDEN'],
  ] as const)('%s is recorded as the user the key names', async (_what, req, status, code) => {
    const { status: got, events, requestId } = await refused({ ...req, headers: { ...('headers' in req ? req.headers : {}), ...bearer(KEYS.alice) } });
    expect(got).toBe(status);
    expect(events.map((e) => [e['error.code'], e['user.id'], e['auth.credential.id']])).toEqual([[code, 'alice', 'k-alice']]);
    // The answer names the event it left.
    expect(requestId).toBe(events[0]!['request.id']);
  });

  it('an x-api-key is read as on the Anthropic route', async () => {
    const { events } = await refused({ method: 'GET', path: '/v2/models', headers: { 'x-api-key': KEYS.bob } });
    expect(events.map((e) => [e['error.code'], e['user.id']])).toEqual([['NOT_FOUND', 'bob']]);
  });

  it('a key that proves no one keeps the edge code and its fingerprint, in one event', async () => {
    const { status, events } = await refused({ method: 'GET', path: '/v2/models', headers: bearer('key-nobody') });
    expect(status).toBe(404);
    expect(events).toHaveLength(1);
    expect(events[0]!['error.code']).toBe('NOT_FOUND');
    expect(events[0]!['user.id']).toBeUndefined();
    expect(events[0]!['auth.credential.fingerprint']).toMatch(/^[0-9a-f]{12}$/);
  });
});
