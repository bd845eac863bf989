import { base64url, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { identitySchema } from '../../src/identity/config.js';
import { JwtVerifier } from '../../src/identity/jwt.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const AUD = 'https://ai.example.test/mcp';

function verifierFor(issuer: TestIssuer, extra: Record<string, unknown> = {}, identity: Record<string, unknown> = {}) {
  return new JwtVerifier(identitySchema.parse({ resource: AUD, oidc: [{ issuer: issuer.issuer, jwksUri: issuer.jwksUri, ...extra }], ...identity }));
}

/** The AUTH_INVALID message a verification fails with. */
async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('AUTH_INVALID');
    return (err as GatewayError).message;
  }
  throw new Error('expected the token to be rejected');
}

describe('JWT verification against a JWKS issuer', () => {
  let idp: TestIssuer;
  let verifier: JwtVerifier;
  beforeAll(async () => {
    idp = await startTestIssuer();
    verifier = verifierFor(idp);
  });
  afterAll(() => idp.close());

  it('accepts a valid token and maps sub to the user', async () => {
    const exp = idp.nowS() + 120;
    const token = await idp.sign({ sub: 'alice', aud: AUD, exp });
    expect(await verifier.verify(token)).toEqual({
      principal: { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'jwt', credentialId: idp.issuer },
      // Until exp and the default clock tolerance of 30 s have passed: when the gateway stops accepting it.
      expiresAt: exp + 30,
      actors: [],
      issuer: idp.issuer,
    });
  });

  it('rejects an expired token', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD, iat: idp.nowS() - 600, exp: idp.nowS() - 120 });
    expect(await rejection(verifier.verify(token))).toBe('The token has expired.');
  });

  it('accepts a token expired by less than the clock tolerance (30 s by default)', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD, iat: idp.nowS() - 600, exp: idp.nowS() - 10 });
    expect((await verifier.verify(token)).principal.user).toBe('alice');
  });

  it('rejects a token that is not valid yet', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD, nbf: idp.nowS() + 600 });
    expect(await rejection(verifier.verify(token))).toBe('The token is not valid yet (nbf is in the future).');
  });

  it('rejects a token issued for another audience', async () => {
    const token = await idp.sign({ sub: 'alice', aud: 'https://other.example.test' });
    expect(await rejection(verifier.verify(token))).toBe(`The token was not issued for this gateway: its audience is not ${AUD}.`);
  });

  it('rejects a token from an issuer it does not trust', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD, iss: 'https://evil.example.test/realms/acme' });
    expect(await rejection(verifier.verify(token))).toBe('Tokens from issuer https://evil.example.test/realms/acme are not accepted here.');
  });

  it('rejects a token without exp', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD, exp: undefined });
    expect(await rejection(verifier.verify(token))).toBe('The token has no exp claim.');
  });

  it('rejects alg none', async () => {
    const enc = (o: unknown) => base64url.encode(JSON.stringify(o));
    const token = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ iss: idp.issuer, sub: 'alice', aud: AUD, exp: idp.nowS() + 300 })}.`;
    expect(await rejection(verifier.verify(token))).toBe(
      'The token\'s signing algorithm is not accepted; allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512.',
    );
  });

  it('rejects an HS256 token signed with the issuer\'s public key bytes (no HS/RS confusion)', async () => {
    const secret = new TextEncoder().encode(idp.current.publicPem);
    const token = await new SignJWT({ iss: idp.issuer, sub: 'mallory', aud: AUD, exp: idp.nowS() + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: idp.current.kid })
      .sign(secret);
    expect(await rejection(verifier.verify(token))).toBe(
      'The token\'s signing algorithm is not accepted; allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512.',
    );
  });

  it('rejects a token whose payload was changed after signing', async () => {
    const token = await idp.sign({ sub: 'alice', aud: AUD });
    const [header, , signature] = token.split('.');
    const forged = base64url.encode(JSON.stringify({ iss: idp.issuer, sub: 'admin', aud: AUD, exp: idp.nowS() + 300 }));
    expect(await rejection(verifier.verify(`${header}.${forged}.${signature}`))).toBe('The token signature does not verify.');
  });

  it('rejects something that is not a JWT', async () => {
    expect(await rejection(verifier.verify('not-a-jwt'))).toBe('The token is not a JWT.');
  });
});

describe('JWKS caching and key rotation', () => {
  let idp: TestIssuer;
  beforeAll(async () => {
    idp = await startTestIssuer();
  });
  afterAll(() => idp.close());

  it('fetches the key set once and reuses it', async () => {
    const verifier = verifierFor(idp);
    const before = idp.jwksFetches;
    await verifier.verify(await idp.sign({ sub: 'a', aud: AUD }));
    await verifier.verify(await idp.sign({ sub: 'b', aud: AUD }));
    expect(idp.jwksFetches - before).toBe(1);
  });

  it('rejects an unknown kid without refetching while cooling down', async () => {
    const verifier = verifierFor(idp);
    await verifier.verify(await idp.sign({ sub: 'a', aud: AUD }));
    const before = idp.jwksFetches;
    const stranger = await idp.newKey();
    expect(await rejection(verifier.verify(await idp.sign({ sub: 'a', aud: AUD }, { key: stranger })))).toBe(
      `No signing key of ${idp.issuer} matches the token (unknown kid).`,
    );
    expect(idp.jwksFetches).toBe(before);
  });

  it('picks up a rotated key by refetching on its unknown kid once the cooldown has passed', async () => {
    const verifier = verifierFor(idp, { jwksCooldownSeconds: 0 });
    await verifier.verify(await idp.sign({ sub: 'a', aud: AUD }));
    const before = idp.jwksFetches;
    const stranger = await idp.newKey();
    expect(await rejection(verifier.verify(await idp.sign({ sub: 'a', aud: AUD }, { key: stranger })))).toBe(
      `No signing key of ${idp.issuer} matches the token (unknown kid).`,
    );
    expect(idp.jwksFetches - before).toBe(1);
    const rotated = await idp.rotate({ dropOld: true, alg: 'ES256' });
    const result = await verifier.verify(await idp.sign({ sub: 'after-rotation', aud: AUD }));
    expect(result.principal.user).toBe('after-rotation');
    expect(rotated.alg).toBe('ES256');
    expect(idp.jwksFetches - before).toBe(2);
  });

  it('finds the key set through the issuer\'s OpenID configuration when no jwksUri is given', async () => {
    const verifier = new JwtVerifier(identitySchema.parse({ resource: AUD, oidc: [{ issuer: idp.issuer }] }));
    expect((await verifier.verify(await idp.sign({ sub: 'discovered', aud: AUD }))).principal.user).toBe('discovered');
  });
});

describe('several trusted issuers', () => {
  let a: TestIssuer;
  let b: TestIssuer;
  let verifier: JwtVerifier;
  beforeAll(async () => {
    [a, b] = await Promise.all([startTestIssuer('staff'), startTestIssuer('partners')]);
    verifier = new JwtVerifier(
      identitySchema.parse({
        resource: AUD,
        oidc: [
          { issuer: a.issuer, jwksUri: a.jwksUri },
          { issuer: b.issuer, jwksUri: b.jwksUri, audience: 'partner-gateway', claims: { user: 'email' } },
        ],
      }),
    );
  });
  afterAll(() => Promise.all([a.close(), b.close()]));

  it('verifies each token against its own issuer, audience and claim mapping', async () => {
    expect((await verifier.verify(await a.sign({ sub: 'alice', aud: AUD }))).principal).toMatchObject({ user: 'alice', credentialId: a.issuer });
    expect((await verifier.verify(await b.sign({ sub: 'p-1', email: 'pat@partner.test', aud: 'partner-gateway' }))).principal).toMatchObject({
      user: 'pat@partner.test',
      credentialId: b.issuer,
    });
  });

  it('rejects a token naming one issuer but signed with the other\'s key', async () => {
    const token = await a.sign({ sub: 'alice', aud: AUD }, { key: b.current });
    expect(await rejection(verifier.verify(token))).toBe(`No signing key of ${a.issuer} matches the token (unknown kid).`);
  });
});

describe('Keycloak-shaped claims', () => {
  let idp: TestIssuer;
  beforeAll(async () => {
    idp = await startTestIssuer();
  });
  afterAll(() => idp.close());

  const keycloakToken = (t: TestIssuer) =>
    t.sign({
      sub: 'f3b1c2d4-0000-4000-8000-000000000001',
      aud: ['tollgate', 'account'],
      azp: 'tollgate',
      preferred_username: 'alice',
      email: 'alice@example.test',
      groups: ['/eng/platform', '/contractors', 'staff'],
      realm_access: { roles: ['offline_access', 'llm-user'] },
      resource_access: { tollgate: { roles: ['premium'] }, account: { roles: ['manage-account'] } },
      cost_center: 'CC-4711',
    });

  it('maps preferred_username, last-segment groups, realm and client roles and the cost centre', async () => {
    const verifier = verifierFor(idp, {
      audience: 'tollgate',
      claims: { user: 'preferred_username', costCenter: 'cost_center', roles: { clients: ['tollgate'] } },
    });
    expect((await verifier.verify(await keycloakToken(idp))).principal).toEqual({
      user: 'alice',
      teams: ['platform', 'contractors', 'staff'],
      groups: ['platform', 'contractors', 'staff'],
      roles: ['offline_access', 'llm-user', 'premium'],
      costCenter: 'CC-4711',
      authMethod: 'jwt',
      credentialId: idp.issuer,
    });
  });

  it('keeps full group paths without the leading slash when asked, and reads email as the user', async () => {
    const verifier = verifierFor(idp, { audience: 'tollgate', claims: { user: 'email', groupPath: 'full', roles: { realm: false } } });
    expect((await verifier.verify(await keycloakToken(idp))).principal).toEqual({
      user: 'alice@example.test',
      teams: ['eng/platform', 'contractors', 'staff'],
      groups: ['eng/platform', 'contractors', 'staff'],
      roles: [],
      authMethod: 'jwt',
      credentialId: idp.issuer,
    });
  });

  it('records the RFC 8693 actor chain, current actor first, and charges the subject', async () => {
    const verifier = verifierFor(idp);
    const token = await idp.sign({ sub: 'alice', aud: AUD, act: { sub: 'agent-planner', client_id: 'planner-app', act: { sub: 'agent-orchestrator' } } });
    const result = await verifier.verify(token);
    expect(result.principal).toEqual({
      user: 'alice',
      teams: [],
      groups: [],
      roles: [],
      authMethod: 'jwt',
      credentialId: idp.issuer,
      actors: ['agent-planner', 'agent-orchestrator'],
    });
    expect(result.actors).toEqual([{ id: 'agent-planner', clientId: 'planner-app' }, { id: 'agent-orchestrator' }]);
  });

  it('rejects a token whose user claim is missing', async () => {
    const verifier = verifierFor(idp, { claims: { user: 'preferred_username' } });
    expect(await rejection(verifier.verify(await idp.sign({ sub: 'x', aud: AUD })))).toBe('The token has no preferred_username claim to identify the user.');
  });
});
