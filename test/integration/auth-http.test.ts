import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const RESOURCE = 'https://ai.example.test/mcp';
const PRM_URL = 'https://ai.example.test/.well-known/oauth-protected-resource/mcp';
const AGENT_KEY = 'key-agent-planner';

const INIT = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

function policy(idp: TestIssuer): string {
  return `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
defaultTier: standard
apiKeys:
  - { id: k-agent, sha256: ${sha(AGENT_KEY)}, user: agent-planner, roles: [llm-user] }
identity:
  resource: ${RESOURCE}
  resourceName: Tollgate test
  oidc:
    - issuer: ${idp.issuer}
      jwksUri: ${idp.jwksUri}
      claims: { user: preferred_username, costCenter: cost_center, roles: { clients: [tollgate] } }
  requiredRoles: [llm-user]
  delegation: { allowedActors: [agent-planner] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week }
    limit: { tokens: 10000 }
`;
}

function post(gw: TestGateway, headers: Record<string, string> = {}) {
  return fetch(gw.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(INIT),
  });
}

interface Budget {
  id: string;
  subject: string;
  used: number;
}
const budgetsOf = async (c: Client) => ((await c.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { user: string; budgets: Budget[] });

describe('MCP authorization on the HTTP transport', () => {
  let idp: TestIssuer;
  let gw: TestGateway;
  const tokenFor = (user: string, extra: Record<string, unknown> = {}) =>
    idp.sign({ sub: `id-${user}`, aud: RESOURCE, preferred_username: user, realm_access: { roles: ['llm-user'] }, cost_center: 'CC-4711', ...extra });

  beforeAll(async () => {
    idp = await startTestIssuer();
    gw = await startTestGateway(policy(idp));
  });
  afterAll(async () => {
    await gw.close();
    await idp.close();
  });

  it('answers 401 with a challenge pointing at the protected resource metadata', async () => {
    const res = await post(gw);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer error="invalid_token", error_description="Missing Authorization header", resource_metadata="${PRM_URL}"`);
    expect(await res.json()).toEqual({ error: 'invalid_token', error_description: 'Missing Authorization header' });
  });

  it('answers 401 naming the problem for an expired token', async () => {
    const res = await post(gw, { authorization: `Bearer ${await tokenFor('alice', { iat: idp.nowS() - 900, exp: idp.nowS() - 600 })}` });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer error="invalid_token", error_description="The token has expired.", resource_metadata="${PRM_URL}"`);
    expect(await res.json()).toEqual({ error: 'invalid_token', error_description: 'The token has expired.' });
  });

  it('serves the RFC 9728 document at the path-suffixed and root well-known URLs, also to a browser Origin', async () => {
    const expected = {
      resource: RESOURCE,
      authorization_servers: [idp.issuer],
      bearer_methods_supported: ['header'],
      resource_name: 'Tollgate test',
    };
    const suffixed = await fetch(`${gw.url}/.well-known/oauth-protected-resource/mcp`, { headers: { origin: 'https://claude.example.test' } });
    expect(suffixed.status).toBe(200);
    expect(suffixed.headers.get('access-control-allow-origin')).toBe('*');
    expect(await suffixed.json()).toEqual(expected);
    expect(await (await fetch(`${gw.url}/.well-known/oauth-protected-resource`)).json()).toEqual(expected);
  });

  it('charges a JWT caller\'s call to the user the token names', async () => {
    const client = await connectHttp(gw.mcpUrl, await tokenFor('alice'));
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
    const result = r.structuredContent as { requestId: string; budgets: Budget[] };
    expect(result.budgets.map((b) => [b.id, b.subject, b.used])).toEqual([['user-weekly', 'alice', 6]]);
    expect(gw.events.find((e) => e['request.id'] === result.requestId)).toMatchObject({
      'user.id': 'alice',
      'user.cost_center': 'CC-4711',
      'auth.method': 'jwt',
      'tollgate.charged': [{ budget: 'user-weekly', subject: 'alice', amount: 6, unit: 'tokens' }],
    });
    await client.close();
  });

  it('answers 403 with the reason for a caller without the required role', async () => {
    const token = await tokenFor('carol', { realm_access: { roles: ['offline_access'] } });
    const res = await post(gw, { authorization: `Bearer ${token}` });
    expect(res.status).toBe(403);
    const reason = 'carol lacks a required role: this gateway needs one of llm-user.';
    expect(res.headers.get('www-authenticate')).toBe(`Bearer error="insufficient_scope", error_description="${reason}", resource_metadata="${PRM_URL}"`);
    expect(await res.json()).toEqual({ error: 'insufficient_scope', error_description: reason });
  });

  it('charges a delegated call to the subject, not the agent, and records the actor chain', async () => {
    const token = await tokenFor('dave', { act: { sub: 'agent-planner', act: { sub: 'agent-orchestrator' } } });
    const delegated = await connectHttp(gw.mcpUrl, token);
    const r = await delegated.callTool({ name: 'complete', arguments: { prompt: 'plan my week', max_tokens: 20 } });
    const { requestId } = r.structuredContent as { requestId: string };
    const event = gw.events.find((e) => e['request.id'] === requestId)!;
    expect(event).toMatchObject({ 'user.id': 'dave', 'actor.chain': ['agent-planner', 'agent-orchestrator'], 'auth.method': 'jwt' });
    const charged = event['tollgate.charged']![0]!.amount;
    expect(charged).toBe(9);

    const dave = await connectHttp(gw.mcpUrl, await tokenFor('dave'));
    expect(await budgetsOf(dave)).toMatchObject({ user: 'dave', budgets: [{ id: 'user-weekly', subject: 'dave', used: 9 }] });
    const agent = await connectHttp(gw.mcpUrl, AGENT_KEY);
    expect(await budgetsOf(agent)).toMatchObject({ user: 'agent-planner', budgets: [{ id: 'user-weekly', subject: 'agent-planner', used: 0 }] });
    await Promise.all([delegated.close(), dave.close(), agent.close()]);
  });

  it('refuses an actor that may not act for users with 403 naming it, recorded as the user and actor the token proved', async () => {
    const token = await tokenFor('dave', { act: { sub: 'rogue-agent' } });
    const before = gw.events.length;
    const res = await post(gw, { authorization: `Bearer ${token}` });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({
      error: 'insufficient_scope',
      error_description: 'Actor rogue-agent may not act on behalf of users (not in identity.delegation.allowedActors).',
    });
    await gw.idle();
    // The signature was verified: who it names and who acts are known, not an unidentified caller.
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ 'error.code': 'FORBIDDEN', 'user.id': 'dave', 'actor.chain': ['rogue-agent'], 'auth.credential.id': idp.issuer })]);
  });

  it('records a caller refused for a missing role as the user the token proved', async () => {
    const token = await idp.sign({ sub: 'id-erin', aud: RESOURCE, preferred_username: 'erin', realm_access: { roles: [] } });
    const before = gw.events.length;
    const res = await post(gw, { authorization: `Bearer ${token}` });
    expect(res.status).toBe(403);
    await gw.idle();
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ 'error.code': 'FORBIDDEN', 'user.id': 'erin' })]);
  });

  it('still accepts API keys next to tokens', async () => {
    const res = await post(gw, { authorization: `Bearer ${AGENT_KEY}` });
    expect(res.status).toBe(200);
    expect(res.headers.get('mcp-session-id')).toBeTruthy();
  });

  it('records a refusal of an Authorization header without the Bearer scheme, though the key in it is valid, on /mcp and /v1 alike', async () => {
    const before = gw.events.length;
    const res = await post(gw, { authorization: AGENT_KEY });
    expect(res.status).toBe(401);
    const chat = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: AGENT_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(chat.status).toBe(401);
    expect(((await chat.json()) as { error: { message: string } }).error.message).toContain('The Authorization header must be "Bearer <API key or token>".');
    await gw.idle();
    expect(gw.events.slice(before)).toEqual([
      expect.objectContaining({ outcome: 'refused', 'error.code': 'AUTH_INVALID', transport: 'http' }),
      expect.objectContaining({ outcome: 'refused', 'error.code': 'AUTH_INVALID', transport: 'openai' }),
    ]);
  });

  it('refuses "Bearer <key> <more>" and a bare key alike on /mcp, /a2a and /v1, each recorded by fingerprint, not as the key\'s owner', async () => {
    const a2a = { jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'hi' }] } } };
    const chat = { model: 'standard', messages: [{ role: 'user', content: 'hi' }] };
    for (const authorization of [`Bearer ${AGENT_KEY} extra`, AGENT_KEY]) {
      const before = gw.events.length;
      const answers = [];
      for (const [path, body] of [['/mcp', INIT], ['/a2a', a2a], ['/v1/chat/completions', chat]] as const) {
        const res = await fetch(`${gw.url}${path}`, {
          method: 'POST',
          headers: { authorization, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'a2a-version': '1.0' },
          body: JSON.stringify(body),
        });
        answers.push([path, res.status, await res.text()]);
      }
      expect(answers.map(([path, status]) => [path, status])).toEqual([
        ['/mcp', 401],
        ['/a2a', 401],
        ['/v1/chat/completions', 401],
      ]);
      for (const [, , text] of answers) expect(text).toContain('The Authorization header must be \\"Bearer <API key or token>\\".');
      await gw.idle();
      const events = gw.events.slice(before);
      expect(events.map((e) => [e.transport, e.outcome, e['error.code'], e['user.id'], e['auth.credential.id']])).toEqual([
        ['http', 'refused', 'AUTH_INVALID', undefined, undefined],
        ['a2a', 'refused', 'AUTH_INVALID', undefined, undefined],
        ['openai', 'refused', 'AUTH_INVALID', undefined, undefined],
      ]);
      for (const e of events) expect(e['auth.credential.fingerprint']).toMatch(/^[0-9a-f]+$/);
    }
  });

  it('reads "Bearer" followed by more than one space on /mcp as /v1 does (RFC 9110)', async () => {
    const res = await post(gw, { authorization: `Bearer   ${AGENT_KEY}` });
    expect(res.status).toBe(200);
  });

  it('accepts a token expired within the clock tolerance (30 s) as /v1 does, and records one expired past it', async () => {
    const fresh = await tokenFor('alice', { exp: idp.nowS() - 5 });
    const res = await post(gw, { authorization: `Bearer ${fresh}` });
    expect(res.status).toBe(200);
    const before = gw.events.length;
    const stale = await tokenFor('alice', { exp: idp.nowS() - 60 });
    const refused = await post(gw, { authorization: `Bearer ${stale}` });
    expect(refused.status).toBe(401);
    await gw.idle();
    expect(gw.events.slice(before)).toEqual([expect.objectContaining({ outcome: 'refused', 'error.code': 'AUTH_INVALID' })]);
  });
});
