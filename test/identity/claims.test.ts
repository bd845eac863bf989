/**
 * Claim mapping: where each principal field comes from (a dotted claim path, or several) and how
 * its values are filtered (prefix, match, strip), on the claims a Keycloak realm puts in a token.
 */
import { describe, expect, it } from 'vitest';
import { principalFromClaims } from '../../src/identity/claims.js';
import { identitySchema } from '../../src/identity/config.js';
import { parsePolicy } from '../../src/policy/load.js';

const ISSUER = 'https://sso.example.com/realms/acme';

/** The claims mapping of an issuer, parsed (defaults filled in) as the policy loader does. */
function mapping(claims: Record<string, unknown>) {
  return identitySchema.parse({ resource: 'https://ai.example.com/mcp', oidc: [{ issuer: ISSUER, claims }] }).oidc[0]!.claims;
}

/** What a Keycloak realm with a group mapper (full path), realm roles and a client puts in a token. */
const keycloak = {
  sub: 'f3b1c2d4-0000-4000-8000-000000000001',
  preferred_username: 'alice',
  groups: ['/employees', '/teams/data', '/teams/data/ml', '/cost-centers/cc-4711', '/contractors'],
  realm_access: { roles: ['offline_access', 'uma_authorization', 'default-roles-acme', 'llm-user'] },
  resource_access: { tollgate: { roles: ['tier-premium', 'admin'] }, account: { roles: ['manage-account'] } },
  org: { unit: { cost_center: 4711 } },
};

const principal = (claims: Record<string, unknown>, payload: Record<string, unknown> = keycloak) => principalFromClaims(payload, mapping(claims), ISSUER);

describe('claim mapping', () => {
  it('makes every group a team by default, /employees included', () => {
    expect(principal({}).teams).toEqual(['employees', 'data', 'ml', 'cc-4711', 'contractors']);
  });

  it('keeps only groups under /teams/ as teams when the mapping filters on that prefix', () => {
    const p = principal({ user: 'preferred_username', teams: { claim: 'groups', prefix: '/teams/' } });
    expect(p.teams).toEqual(['data', 'data/ml']);
    expect(p.teams).not.toContain('employees');
    expect(p.groups).toEqual(['employees', 'data', 'ml', 'cc-4711', 'contractors']);
  });

  it('takes a team from the first capture group of a regular expression', () => {
    expect(principal({ teams: { claim: 'groups', match: '^/teams/([^/]+)$' } }).teams).toEqual(['data']);
  });

  it('takes the cost centre from a group path, the first value kept', () => {
    expect(principal({ costCenter: { claim: 'groups', prefix: '/cost-centers/' } }).costCenter).toBe('cc-4711');
  });

  it('reads a number at a dotted path as the cost centre', () => {
    expect(principal({ costCenter: 'org.unit.cost_center' }).costCenter).toBe('4711');
  });

  it('leaves the cost centre out when no value passes the filter', () => {
    expect(principal({ costCenter: { claim: 'groups', prefix: '/billing/' } })).not.toHaveProperty('costCenter');
  });

  it('keeps a match without capture group whole, then applies groupPath', () => {
    expect(principal({ groups: { claim: 'groups', match: '^/(?:teams|contractors)' }, groupPath: 'full' }).groups).toEqual(['teams/data', 'teams/data/ml', 'contractors']);
  });

  it('strips a prefix where present and keeps the other values', () => {
    expect(principal({ roles: { clients: ['tollgate'], realm: false, strip: 'tier-' } }).roles).toEqual(['premium', 'admin']);
  });

  it('reads roles from one claim path given as a string, and from nothing else', () => {
    expect(principal({ roles: 'resource_access.tollgate.roles' }).roles).toEqual(['tier-premium', 'admin']);
  });

  it('filters realm and client roles together', () => {
    expect(principal({ roles: { clients: ['tollgate', 'account'], match: '^(?:llm-|tier-)' } }).roles).toEqual(['llm-user', 'tier-premium']);
  });

  it('pools values from several claim paths', () => {
    const payload = { ...keycloak, department: 'finance' };
    expect(principal({ teams: { claim: ['department', 'groups'], prefix: '/teams/' } }, payload).teams).toEqual(['data', 'data/ml']);
    expect(principal({ teams: { claim: ['department', 'groups'], match: '^(?:/teams/)?([a-z]+)$' } }, payload).teams).toEqual(['finance', 'data']);
  });

  it('drops a value the filters leave empty; what stays a path follows groupPath', () => {
    expect(principal({ teams: { claim: 'groups', prefix: '/teams/data' } }).teams).toEqual(['ml']);
  });

  it('refuses an expression that does not compile, naming where it is', () => {
    const text = `
version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
identity:
  resource: https://ai.example.com/mcp
  oidc:
    - issuer: ${ISSUER}
      claims: { teams: { claim: groups, match: "^/teams/(" } }
`;
    expect(() => parsePolicy(text, 'p.yaml')).toThrow(
      'Policy p.yaml is invalid (1 error):\n  - identity.oidc[0].claims.teams.match (line 9, col 48): a valid regular expression (JavaScript syntax)',
    );
  });
});
