import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { Authenticator } from '../../src/identity/authenticate.js';
import { policyApiKeys } from '../../src/identity/apiKey.js';
import { parsePolicy, type Policy, type PolicyError } from '../../src/policy/load.js';
import { KEYS, STANDARD_HEAD, sha } from '../fixtures/policies.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const AUD = 'https://ai.example.test/mcp';

function policy(identity: string): string {
  return `
${STANDARD_HEAD}apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform], costCenter: cc-1, groups: [employees], roles: [llm-user] }
  - { id: k-bob, sha256: ${sha(KEYS.bob)}, user: bob, disabled: true }
${identity}
`;
}

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return { code: (err as GatewayError).code, message: (err as GatewayError).message };
}


/** The authenticator a gateway builds for a policy: its identity section and its own API keys. */
function authenticatorFor(p: Policy): Authenticator {
  return new Authenticator(p.config.identity, { apiKeys: policyApiKeys(p.apiKeys) });
}

describe('Authenticator', () => {
  let idp: TestIssuer;
  let withOidc: Authenticator;
  beforeAll(async () => {
    idp = await startTestIssuer();
    withOidc = authenticatorFor(
      parsePolicy(
        policy(`
identity:
  resource: ${AUD}
  oidc: [{ issuer: "${idp.issuer}", jwksUri: "${idp.jwksUri}" }]
  requiredGroups: [employees]
  delegation: { allowedActors: [planner-app] }
`),
        't.yaml',
      ),
    );
  });
  afterAll(() => idp.close());

  it('resolves an API key to the principal the policy lists, exactly as before', async () => {
    expect(await withOidc.authenticate(KEYS.alice)).toEqual({
      principal: { user: 'alice', teams: ['platform'], costCenter: 'cc-1', groups: ['employees'], roles: ['llm-user'], authMethod: 'api_key', credentialId: 'k-alice' },
    });
  });

  it('refuses a disabled key with the unknown-key message, even when tokens are accepted', async () => {
    expect(await refusal(withOidc.authenticate(KEYS.bob))).toEqual({ code: 'AUTH_INVALID', message: 'The API key is not recognised (unknown, revoked or disabled).' });
  });

  it('treats a JWT-shaped value as an unknown key when no issuer is configured', async () => {
    const keysOnly = authenticatorFor(parsePolicy(policy(''), 't.yaml'));
    const token = await idp.sign({ sub: 'alice', aud: AUD });
    expect(await refusal(keysOnly.authenticate(token))).toEqual({ code: 'AUTH_INVALID', message: 'The API key is not recognised (unknown, revoked or disabled).' });
    expect(await refusal(keysOnly.authenticate(token, { only: 'jwt' }))).toEqual({
      code: 'AUTH_INVALID',
      message: 'No OIDC issuer is configured (identity.oidc), so tokens cannot be verified.',
    });
  });

  it('does not accept an API key where only a token is expected', async () => {
    expect(await refusal(withOidc.authenticate(KEYS.alice, { only: 'jwt' }))).toEqual({ code: 'AUTH_INVALID', message: 'The token is not a JWT.' });
  });

  it('refuses a caller in none of the required groups with FORBIDDEN', async () => {
    const token = await idp.sign({ sub: 'mallory', aud: AUD, groups: ['/visitors'] });
    expect(await refusal(withOidc.authenticate(token))).toEqual({
      code: 'FORBIDDEN',
      message: 'mallory is in none of the groups allowed to use this gateway (employees).',
    });
  });

  it('accepts an actor listed by client_id and returns the token expiry', async () => {
    const exp = idp.nowS() + 60;
    const token = await idp.sign({ sub: 'alice', aud: AUD, groups: ['/employees'], exp, act: { sub: 'svc-7f3a', client_id: 'planner-app' } });
    expect(await withOidc.authenticate(token)).toEqual({
      principal: { user: 'alice', teams: ['employees'], groups: ['employees'], roles: [], authMethod: 'jwt', credentialId: idp.issuer, actors: ['svc-7f3a'] },
      expiresAt: exp + 30, // exp and the default clock tolerance
    });
  });

  it('checks the current actor only; earlier actors in the chain are recorded', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD, groups: ['employees'], act: { sub: 'intruder', act: { client_id: 'planner-app' } } });
    expect(await refusal(withOidc.authenticate(token))).toEqual({
      code: 'FORBIDDEN',
      message: 'Actor intruder may not act on behalf of users (not in identity.delegation.allowedActors).',
    });
  });
});

describe('identity section at load', () => {
  it('asks for an audience when an issuer has none and no resource is set', () => {
    let issues: string[] = [];
    try {
      parsePolicy(policy('identity:\n  oidc: [{ issuer: "https://sso.example.test/realms/acme" }]'), 't.yaml');
    } catch (err) {
      issues = (err as PolicyError).issues.map((i) => `${i.path}: ${i.message}`);
    }
    expect(issues).toEqual(['identity.oidc[0].audience: give an audience, or identity.resource to use as the audience']);
  });

  it('cannot be configured to accept HS256 or none', () => {
    let issues: string[] = [];
    try {
      parsePolicy(policy('identity:\n  resource: https://ai.example.test/mcp\n  oidc: [{ issuer: "https://sso.example.test", algorithms: [HS256, none] }]'), 't.yaml');
    } catch (err) {
      issues = (err as PolicyError).issues.map((i) => i.path);
    }
    expect(issues).toEqual(['identity.oidc[0].algorithms[0]', 'identity.oidc[0].algorithms[1]']);
  });
});
