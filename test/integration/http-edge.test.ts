import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const INIT = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

function post(gw: TestGateway, body: unknown, headers: Record<string, string> = {}) {
  return fetch(gw.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

describe('HTTP edge', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy(), { maxBodyBytes: 64 * 1024 });
  });
  afterAll(() => gw.close());

  it('answers 401 with a WWW-Authenticate challenge and a clear message when no key is sent', async () => {
    const res = await post(gw, INIT);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
    expect(await res.json()).toEqual({ error: 'invalid_token', error_description: 'Missing Authorization header' });
  });

  it('answers 401 naming the problem, without a stack trace, for an unknown key', async () => {
    const res = await post(gw, INIT, { authorization: 'Bearer not-a-key' });
    expect(res.status).toBe(401);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: 'invalid_token', error_description: 'The API key is not recognised (unknown, revoked or disabled).' });
    expect(text).not.toContain('    at ');
  });

  it('refuses a body over the size limit with 413 PAYLOAD_TOO_LARGE', async () => {
    const big = { ...INIT, params: { ...INIT.params, pad: 'x'.repeat(70 * 1024) } };
    const res = await post(gw, big, { authorization: `Bearer ${KEYS.alice}` });
    expect(res.status).toBe(413);
    expect((await res.json()).error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('answers a JSON-RPC parse error for a body that is not JSON', async () => {
    const res = await post(gw, '{"jsonrpc": ', { authorization: `Bearer ${KEYS.alice}` });
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe(-32700);
  });

  it('refuses a browser Origin that is not allowed with 403', async () => {
    const res = await post(gw, INIT, { authorization: `Bearer ${KEYS.alice}`, origin: 'https://evil.example' });
    expect(res.status).toBe(403);
    expect((await res.json()).error.code).toBe('FORBIDDEN');
  });

  it('refuses a Host header other than localhost (DNS rebinding) with 403', async () => {
    const { request } = await import('node:http');
    const url = new URL(gw.mcpUrl);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: url.hostname, port: url.port, path: '/mcp', method: 'POST', headers: { host: 'attacker.example', 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(JSON.stringify(INIT));
    });
    expect(status).toBe(403);
  });

  it('does not let one caller use a session opened by another', async () => {
    const init = await post(gw, INIT, { authorization: `Bearer ${KEYS.alice}` });
    const sid = init.headers.get('mcp-session-id')!;
    expect(sid).toBeTruthy();
    const res = await post(gw, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, { authorization: `Bearer ${KEYS.bob}`, 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' });
    expect(res.status).toBe(403);
    expect((await res.json()).error.message).toBe('This session belongs to another caller.');
  });

  it('reports health with the store kind and policy version', async () => {
    const res = await fetch(`${gw.url}/healthz`);
    expect(await res.json()).toMatchObject({ status: 'ok', store: 'memory', policyVersion: gw.runtime.gateway.policy.version });
  });

  it('sends no ETag: every answer is its own, so no hash is made of it', async () => {
    const res = await fetch(`${gw.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('etag')).toBeNull();
  });

  it('streams text as MCP progress notifications when the client sends a progress token', async () => {
    const client = await connectHttp(gw.mcpUrl, KEYS.carol);
    const deltas: string[] = [];
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'stream me please', max_tokens: 50 } }, undefined, {
      onprogress: (p) => deltas.push(String(p.message)),
    });
    expect(deltas).toEqual(['[medium] ', 'You ', 'said: ', 'stream ', 'me ', 'please']);
    expect((r.structuredContent as { text: string }).text).toBe(deltas.join(''));
    await client.close();
  });

  it('emits one decision event per call with the principal, models, usage and cost', async () => {
    const client = await connectHttp(gw.mcpUrl, KEYS.carol);
    const before = gw.events.length;
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
    const id = (r.structuredContent as { requestId: string }).requestId;
    await client.callTool({ name: 'complete', arguments: { prompt: 'hello', tier: 'gold' } });
    expect(gw.events.length).toBe(before + 2);
    const ok = gw.events.find((e) => e['request.id'] === id)!;
    expect(ok).toMatchObject({
      event: 'tollgate.decision',
      transport: 'http',
      effect: 'allow',
      outcome: 'success',
      'user.id': 'carol',
      'user.teams': ['data'],
      'gen_ai.provider.name': 'demo',
      'gen_ai.response.model': 'medium',
      'gen_ai.usage.input_tokens': 2,
      'gen_ai.usage.output_tokens': 4,
      'tollgate.tier.requested': 'standard',
      'tollgate.tier.served': 'standard',
      'tollgate.reserved': [{ budget: 'user-weekly', subject: 'carol', amount: 39 }], // the input's bound (5 UTF-8 bytes + 24 framing tokens) + 10 output tokens
      'tollgate.charged': [{ budget: 'user-weekly', subject: 'carol', amount: 6, unit: 'tokens' }],
      'tollgate.cost_usd': 66 / 1e6,
    });
    expect(ok).not.toHaveProperty('gen_ai.prompt');
    expect(gw.events.at(-1)).toMatchObject({ effect: 'error', outcome: 'failed', 'error.code': 'UNKNOWN_MODEL' });
    await client.close();
  });
});

describe('MCP sessions on HTTP', () => {
  const SECRET = 'shared-by-both-replicas-0123456789abcdef';
  const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'complete', arguments: { prompt: 'hello there', max_tokens: 16 } } };
  const open = async (gw: TestGateway, key: string = KEYS.alice) => {
    const init = await post(gw, INIT, { authorization: `Bearer ${key}` });
    expect(init.status).toBe(200);
    await init.text();
    return { authorization: `Bearer ${key}`, 'mcp-session-id': init.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-11-25' };
  };
  const sessionCount = async (gw: TestGateway) => ((await (await fetch(`${gw.url}/healthz`)).json()) as { sessions: number }).sessions;
  const started: TestGateway[] = [];
  const start = async (env?: Record<string, string>) => {
    const gw = await startTestGateway(basicPolicy(), env ? { env } : {});
    started.push(gw);
    return gw;
  };
  afterEach(async () => {
    await Promise.all(started.splice(0).map((gw) => gw.close()));
  });

  it('ends a session on DELETE; the id is then unknown', async () => {
    const gw = await start();
    const headers = await open(gw);
    expect(await sessionCount(gw)).toBe(1);
    const del = await fetch(gw.mcpUrl, { method: 'DELETE', headers });
    expect(del.status).toBe(200);
    expect(await sessionCount(gw)).toBe(0);
    const after = await post(gw, call, headers);
    expect(after.status).toBe(404);
    expect((await after.json()).error).toEqual({ code: -32001, message: 'Session not found; initialize a new one.' });
    expect((await fetch(gw.mcpUrl, { method: 'DELETE', headers })).status).toBe(404);
  });

  it('answers GET with 405 (no standalone stream), after checking the session', async () => {
    const gw = await start();
    const headers = await open(gw);
    const res = await fetch(gw.mcpUrl, { headers: { ...headers, accept: 'text/event-stream' } });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST, DELETE');
    const unknown = await fetch(gw.mcpUrl, { headers: { ...headers, 'mcp-session-id': 'nope', accept: 'text/event-stream' } });
    expect(unknown.status).toBe(404);
  });

  it('answers a call as one JSON body, or as an SSE stream with progress when the client sends a progress token', async () => {
    const gw = await start();
    const headers = await open(gw);
    const plain = await post(gw, call, headers);
    expect(plain.headers.get('content-type')).toMatch(/^application\/json/);
    expect((await plain.json()).result.structuredContent).toMatchObject({ model: expect.any(String) });
    const withProgress = { ...call, id: 3, params: { ...call.params, _meta: { progressToken: 'p1' } } };
    const streamed = await post(gw, withProgress, headers);
    expect(streamed.headers.get('content-type')).toBe('text/event-stream');
    const events = (await streamed.text()).split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)));
    expect(events.filter((e) => e.method === 'notifications/progress').length).toBeGreaterThan(0);
    expect(events.at(-1)).toMatchObject({ id: 3, result: { structuredContent: expect.any(Object) } });
  });

  it('answers a batch with its responses in request order, one JSON body, and a batch without requests with 202', async () => {
    const gw = await start();
    const headers = await open(gw);
    const batch = [
      { jsonrpc: '2.0', id: 'b', method: 'tools/call', params: { name: 'list_models', arguments: {} } },
      { jsonrpc: '2.0', method: 'notifications/initialized' },
      { jsonrpc: '2.0', id: 7, method: 'tools/list' },
      { jsonrpc: '2.0', id: 8, method: 'no/such/method' },
    ];
    const res = await post(gw, batch, headers);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const body = (await res.json()) as { id: unknown; result?: unknown; error?: { code: number } }[];
    expect(body.map((r) => r.id)).toEqual(['b', 7, 8]);
    expect(body[0]!.result).toMatchObject({ structuredContent: { tiers: expect.any(Array) } });
    expect(body[1]!.result).toMatchObject({ tools: expect.arrayContaining([expect.objectContaining({ name: 'complete' })]) });
    expect(body[2]!.error).toMatchObject({ code: -32601 });

    const notes = await post(gw, [{ jsonrpc: '2.0', method: 'notifications/initialized' }, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 99 } }], headers);
    expect(notes.status).toBe(202);
    expect(await notes.text()).toBe('');
  });

  it('refuses a second initialize on an open session with -32600', async () => {
    const gw = await start();
    const headers = await open(gw);
    const res = await post(gw, INIT, headers);
    expect(res.status).toBe(400);
    expect((await res.json()).error).toEqual({ code: -32600, message: 'Invalid Request: Server already initialized' });
    expect(await sessionCount(gw)).toBe(1);
  });

  it('keeps at most TOLLGATE_MAX_SESSIONS_PER_CALLER sessions per caller, ending their least recently used', async () => {
    const gw = await start({ TOLLGATE_MAX_SESSIONS_PER_CALLER: '2' });
    const first = await open(gw);
    const second = await open(gw);
    const bob = await open(gw, KEYS.bob);
    const third = await open(gw);
    expect((await post(gw, call, first)).status).toBe(404);
    for (const headers of [second, third, bob]) expect((await post(gw, call, headers)).status).toBe(200);
    expect(await sessionCount(gw)).toBe(3);
  });

  it('refuses an initialize past TOLLGATE_MAX_SESSIONS with 503, recorded as GATEWAY_BUSY for its caller', async () => {
    const gw = await start({ TOLLGATE_MAX_SESSIONS: '1' });
    await open(gw);
    const res = await post(gw, INIT, { authorization: `Bearer ${KEYS.bob}` });
    expect(res.status).toBe(503);
    expect((await res.json()).error).toEqual({ code: -32000, message: 'Too many open sessions; try again later.' });
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ 'error.code': 'GATEWAY_BUSY', 'user.id': 'bob', outcome: 'failed' });
    expect(await sessionCount(gw)).toBe(1);
  });

  it('serves a session on any replica that shares TOLLGATE_SESSION_SECRET, and on no other', async () => {
    const a = await start({ TOLLGATE_SESSION_SECRET: SECRET });
    const b = await start({ TOLLGATE_SESSION_SECRET: SECRET });
    const c = await start();
    const headers = await open(a);
    const onB = await post(b, call, headers);
    expect(onB.status).toBe(200);
    expect(await onB.text()).toContain('"structuredContent"');
    expect(b.events.at(-1)).toMatchObject({ 'user.id': 'alice', outcome: 'success' });
    // The id is bound to the caller who opened it, on every replica.
    expect((await post(b, call, { ...headers, authorization: `Bearer ${KEYS.bob}` })).status).toBe(403);
    expect((await post(c, call, headers)).status).toBe(404);
    // The official client works across the pair: its session opened on A, its calls on B.
    const client = await connectHttp(a.mcpUrl, KEYS.carol);
    const sid = (client.transport as { sessionId?: string }).sessionId!;
    const onBAgain = await post(b, { ...call, id: 3 }, { authorization: `Bearer ${KEYS.carol}`, 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' });
    expect(onBAgain.status).toBe(200);
    await client.close();
  });
});
