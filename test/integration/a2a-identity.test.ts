import { Role, TaskState, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, type Client } from '@a2a-js/sdk/client';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const RESOURCE = 'https://ai.example.test/mcp';

function policy(idp: TestIssuer): string {
  return `
version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
defaultTier: standard
identity:
  resource: ${RESOURCE}
  oidc:
    - issuer: ${idp.issuer}
      jwksUri: ${idp.jwksUri}
      claims: { user: preferred_username }
  delegation: { allowedActors: [agent-planner] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week }
    limit: { tokens: 10000 }
`;
}

async function a2aClient(url: string, token: string): Promise<Client> {
  const fetchImpl: typeof fetch = (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set('authorization', `Bearer ${token}`);
    return fetch(input, { ...init, headers });
  };
  return new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] })).createFromUrl(url);
}

describe('A2A and compatible endpoints with OIDC tokens', () => {
  let idp: TestIssuer;
  let gw: TestGateway;
  const tokenFor = (user: string, extra: Record<string, unknown> = {}) => idp.sign({ sub: `id-${user}`, aud: RESOURCE, preferred_username: user, ...extra });

  beforeAll(async () => {
    idp = await startTestIssuer();
    gw = await startTestGateway(policy(idp));
  });
  afterAll(async () => {
    await gw.close();
    await idp.close();
  });

  it('declares the issuer as an OpenID Connect scheme on the Agent Card, as an alternative to bearer', async () => {
    const card = await (await fetch(`${gw.url}/.well-known/agent-card.json`, { headers: { 'a2a-version': '1.0' } })).json();
    expect(card.securitySchemes.oidc).toEqual({
      openIdConnectSecurityScheme: { openIdConnectUrl: `${idp.issuer}/.well-known/openid-configuration`, description: 'Sign in with the company identity provider.' },
    });
    expect(card.securityRequirements).toEqual([{ schemes: { bearer: {} } }, { schemes: { oidc: {} } }]);
  });

  it('charges a delegated A2A call to the subject and records the actor chain', async () => {
    const client = await a2aClient(gw.url, await tokenFor('dave', { act: { sub: 'agent-planner' } }));
    const message = {
      messageId: crypto.randomUUID(),
      contextId: '',
      taskId: '',
      role: Role.ROLE_USER,
      parts: [{ content: { $case: 'text' as const, value: 'plan my week' }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
      metadata: { max_tokens: 20 },
      extensions: [],
      referenceTaskIds: [],
    };
    const task = (await client.sendMessage({ tenant: '', message, configuration: undefined, metadata: undefined })) as Task;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    const { requestId } = task.metadata?.['io.tollgate/result'] as { requestId: string };
    expect(gw.events.find((e) => e['request.id'] === requestId)).toMatchObject({ transport: 'a2a', 'user.id': 'dave', 'actor.chain': ['agent-planner'], 'auth.method': 'jwt' });
  });

  it('refuses an A2A call from an actor not allowed to delegate (403 with the reason)', async () => {
    const client = await a2aClient(gw.url, await tokenFor('dave', { act: { sub: 'rogue-agent' } }));
    const message = {
      messageId: crypto.randomUUID(),
      contextId: '',
      taskId: '',
      role: Role.ROLE_USER,
      parts: [{ content: { $case: 'text' as const, value: 'hi' }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
      metadata: undefined,
      extensions: [],
      referenceTaskIds: [],
    };
    await expect(client.sendMessage({ tenant: '', message, configuration: undefined, metadata: undefined })).rejects.toThrow(/Status: 403.*Actor rogue-agent may not act on behalf of users/);
  });

  it('serves an OpenAI-compatible call to a JWT caller, charged to the user the token names', async () => {
    const openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: await tokenFor('erin'), maxRetries: 0 });
    const { response } = await openai.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'hello' }] }).withResponse();
    const requestId = response.headers.get('x-request-id');
    expect(gw.events.find((e) => e['request.id'] === requestId)).toMatchObject({ transport: 'openai', 'user.id': 'erin', 'auth.method': 'jwt' });
  });
});
