/**
 * An issuer that fails to answer for its keys (or its OpenID configuration) is asked again at most
 * once per `jwksCooldownSeconds`, not once per token: a stream of tokens naming a trusted issuer,
 * signed or not, must not turn into a stream of requests to the identity provider while it is down.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { identitySchema } from '../../src/identity/config.js';
import { JwtVerifier } from '../../src/identity/jwt.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const AUD = 'https://ai.example.test/mcp';
/**
 * How long the verifier waits for keys, long enough that an issuer answering at once is never
 * timed out on a loaded machine (at 100 ms the first, unslowed fetch timed out once with two test
 * files running at a time); a slowed issuer answers well after it, so its every fetch fails.
 */
const FETCH_TIMEOUT_MS = 1000;
const SLOW_MS = 2500;

async function rejection(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('AUTH_INVALID');
  return (err as GatewayError).message;
}

/** Moves the wall clock (which the key cache keeps) and only it forward. */
function passSeconds(s: number): void {
  vi.setSystemTime(Date.now() + s * 1000);
}

describe('key set fetches while the issuer fails', () => {
  let idp: TestIssuer;
  beforeAll(async () => {
    idp = await startTestIssuer();
  });
  afterAll(() => idp.close());
  afterEach(() => {
    idp.setJwksDelay(0);
    vi.useRealTimers();
  });

  function verifier(): JwtVerifier {
    const identity = identitySchema.parse({ resource: AUD, oidc: [{ issuer: idp.issuer, jwksUri: idp.jwksUri, jwksCooldownSeconds: 30 }] });
    return new JwtVerifier(identity, { fetchTimeoutMs: FETCH_TIMEOUT_MS });
  }

  it('asks for the keys once per cooldown, not once per token with an unknown kid', async () => {
    const v = verifier();
    await v.verify(await idp.sign({ sub: 'alice', aud: AUD }));
    vi.useFakeTimers({ toFake: ['Date'] });
    passSeconds(31);
    idp.setJwksDelay(SLOW_MS);
    const stranger = await idp.newKey();
    const before = idp.jwksFetches;
    const unknownKid = () => idp.sign({ sub: 'alice', aud: AUD }, { key: stranger });
    expect(await rejection(v.verify(await unknownKid()))).toBe(`The token cannot be checked now: the keys of ${idp.issuer} could not be fetched in time.`);
    for (let i = 0; i < 3; i++) {
      expect(await rejection(v.verify(await unknownKid()))).toBe(`No signing key of ${idp.issuer} matches the token (unknown kid).`);
    }
    expect(idp.jwksFetches - before).toBe(1);
  });

  it('asks again once the cooldown after the failure has passed, and takes the rotated key', async () => {
    const v = verifier();
    await v.verify(await idp.sign({ sub: 'alice', aud: AUD }));
    vi.useFakeTimers({ toFake: ['Date'] });
    passSeconds(31);
    idp.setJwksDelay(SLOW_MS);
    const stranger = await idp.newKey();
    await rejection(v.verify(await idp.sign({ sub: 'alice', aud: AUD }, { key: stranger })));
    idp.setJwksDelay(0);
    await idp.rotate();
    const before = idp.jwksFetches;
    // Within the cooldown of the failed fetch: refused without asking.
    expect(await rejection(v.verify(await idp.sign({ sub: 'bob', aud: AUD })))).toBe(`No signing key of ${idp.issuer} matches the token (unknown kid).`);
    expect(idp.jwksFetches).toBe(before);
    passSeconds(31);
    expect((await v.verify(await idp.sign({ sub: 'bob', aud: AUD }))).principal.user).toBe('bob');
    expect(idp.jwksFetches - before).toBe(1);
  });

  it('does not go back to a failing issuer on every call once its keys are stale', async () => {
    const v = verifier();
    await v.verify(await idp.sign({ sub: 'alice', aud: AUD }));
    vi.useFakeTimers({ toFake: ['Date'] });
    passSeconds(601);
    idp.setJwksDelay(SLOW_MS);
    const before = idp.jwksFetches;
    for (let i = 0; i < 3; i++) {
      expect(await rejection(v.verify(await idp.sign({ sub: 'alice', aud: AUD })))).toBe(
        `The token cannot be checked now: the keys of ${idp.issuer} could not be fetched in time.`,
      );
    }
    expect(idp.jwksFetches - before).toBe(1);
  });

  it('still fetches on every call when the policy sets no cache and no cooldown', async () => {
    const identity = identitySchema.parse({ resource: AUD, oidc: [{ issuer: idp.issuer, jwksUri: idp.jwksUri, jwksCacheSeconds: 0, jwksCooldownSeconds: 0 }] });
    const v = new JwtVerifier(identity, { fetchTimeoutMs: 2000 });
    const before = idp.jwksFetches;
    await v.verify(await idp.sign({ sub: 'alice', aud: AUD }));
    await v.verify(await idp.sign({ sub: 'alice', aud: AUD }));
    expect(idp.jwksFetches - before).toBe(2);
  });
});

describe('OpenID configuration fetches while the issuer fails', () => {
  let server: Server;
  let issuer: string;
  let asked = 0;
  let idp: TestIssuer;
  beforeAll(async () => {
    idp = await startTestIssuer();
    server = createServer((_req, res) => {
      asked += 1;
      res.writeHead(503, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}/realms/down`;
  });
  afterAll(async () => {
    await idp.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  afterEach(() => vi.useRealTimers());

  it('asks for the OpenID configuration once per cooldown, then again after it', async () => {
    const v = new JwtVerifier(identitySchema.parse({ resource: AUD, oidc: [{ issuer, jwksCooldownSeconds: 30 }] }));
    const token = await idp.sign({ iss: issuer, sub: 'alice', aud: AUD });
    vi.useFakeTimers({ toFake: ['Date'] });
    for (let i = 0; i < 3; i++) {
      expect(await rejection(v.verify(token))).toBe(`The token cannot be checked now: the OpenID configuration of ${issuer} could not be fetched.`);
    }
    expect(asked).toBe(1);
    passSeconds(31);
    await rejection(v.verify(token));
    expect(asked).toBe(2);
  });
});
