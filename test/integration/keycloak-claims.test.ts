/**
 * A Keycloak-shaped token through a real call: the test issuer serves its JWKS, the gateway maps
 * the token's full-path groups, realm roles and client roles as the policy's claim mapping says,
 * and the charge lands on the team the mapping picks (`/teams/data` -> data), never on
 * `/employees`, which every employee of the realm carries.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const RESOURCE = 'https://ai.example.test/mcp';

function policy(idp: TestIssuer): string {
  return `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
defaultTier: standard
identity:
  resource: ${RESOURCE}
  oidc:
    - issuer: ${idp.issuer}
      jwksUri: ${idp.jwksUri}
      audience: tollgate
      claims:
        user: preferred_username
        teams: { claim: groups, prefix: /teams/ }
        groups: groups
        costCenter: { claim: groups, match: "^/cost-centers/(cc-[0-9]+)$" }
        roles: { realm: true, clients: [tollgate], strip: "tollgate-" }
  requiredRoles: [llm-user]
budgets:
  - id: team-monthly
    scope: team
    window: { calendar: month }
    limit: { tokens: 100000 }
  - id: cc-monthly
    scope: costCenter
    window: { calendar: month }
    limit: { tokens: 100000 }
rules:
  - id: premium-needs-role
    when: "request.tier == 'premium' && !('premium' in principal.roles)"
    effect: deny
    message: premium needs the tollgate client role premium.
`;
}

describe('a Keycloak token through a real call', () => {
  let idp: TestIssuer;
  let gw: TestGateway;
  beforeAll(async () => {
    idp = await startTestIssuer();
    gw = await startTestGateway(policy(idp));
  });
  afterAll(async () => {
    await gw.close();
    await idp.close();
  });

  /** What a realm with a full-path group mapper, realm roles and a `tollgate` client signs. */
  const keycloakToken = (user: string, groups: string[], clientRoles: string[] = []) =>
    idp.sign({
      sub: `f3b1c2d4-${user}`,
      aud: ['tollgate', 'account'],
      azp: 'tollgate',
      typ: 'Bearer',
      preferred_username: user,
      groups,
      realm_access: { roles: ['offline_access', 'uma_authorization', 'default-roles-acme', 'llm-user'] },
      resource_access: { tollgate: { roles: clientRoles }, account: { roles: ['manage-account', 'view-profile'] } },
    });

  it('charges the team under /teams/ and the cost centre, not /employees', async () => {
    const client = await connectHttp(gw.mcpUrl, await keycloakToken('alice', ['/employees', '/teams/data', '/cost-centers/cc-4711']));
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
    expect(r.isError).toBeFalsy();
    const { requestId } = r.structuredContent as { requestId: string };
    await gw.idle();
    const event = gw.events.find((e) => e['request.id'] === requestId)!;
    expect(event).toMatchObject({
      'user.id': 'alice',
      'user.teams': ['data'],
      'user.cost_center': 'cc-4711',
      'user.groups': ['employees', 'data', 'cc-4711'],
      'auth.method': 'jwt',
      'tollgate.charged': [
        { budget: 'team-monthly', subject: 'data', amount: 6, unit: 'tokens' },
        { budget: 'cc-monthly', subject: 'cc-4711', amount: 6, unit: 'tokens' },
      ],
    });
    await client.close();
  });

  it('gives a realm member outside /teams/ no team line to charge', async () => {
    const client = await connectHttp(gw.mcpUrl, await keycloakToken('bob', ['/employees']));
    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
    const { requestId } = r.structuredContent as { requestId: string };
    await gw.idle();
    const event = gw.events.find((e) => e['request.id'] === requestId)!;
    expect(r.isError).toBeFalsy();
    expect(event['user.teams']).toEqual([]);
    expect(event['user.groups']).toEqual(['employees']);
    // No team, no cost centre: neither budget has a line for bob, so nothing is charged.
    expect(event['tollgate.charged']).toBeUndefined();
    await client.close();
  });

  it('reads the client role with its prefix stripped, so the premium rule lets her through', async () => {
    const denied = await connectHttp(gw.mcpUrl, await keycloakToken('carol', ['/teams/data']));
    const refused = await denied.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10, tier: 'premium' } });
    expect(refused.isError).toBe(true);
    expect(JSON.stringify(refused.content)).toContain('premium needs the tollgate client role premium.');

    const allowed = await connectHttp(gw.mcpUrl, await keycloakToken('carol', ['/teams/data'], ['tollgate-premium']));
    const r = await allowed.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10, tier: 'premium' } });
    expect(r.isError).toBeFalsy();
    expect((r.structuredContent as { tier: string }).tier).toBe('premium');
    await Promise.all([denied.close(), allowed.close()]);
  });
});
