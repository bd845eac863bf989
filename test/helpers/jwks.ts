/**
 * A local OIDC issuer for tests: serves its OpenID configuration and JWKS on 127.0.0.1 (Keycloak
 * paths), signs tokens with jose-generated keys, rotates keys, and counts JWKS fetches so tests
 * can see when the gateway went back for keys.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';

interface SigningKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicJwk: JWK;
  publicPem: string;
}

export interface SignOptions {
  /** Sign with this key instead of the current one (e.g. one never published). */
  key?: SigningKey;
  /** Header kid; defaults to the key's. */
  kid?: string;
}

export interface TestIssuer {
  /** `http://127.0.0.1:<port>/realms/acme` */
  issuer: string;
  jwksUri: string;
  /** How many times the JWKS was fetched. */
  readonly jwksFetches: number;
  /** The key tokens are signed with unless told otherwise. */
  readonly current: SigningKey;
  /** Seconds since the epoch, as the issuer stamps iat. */
  nowS(): number;
  /**
   * Signs a token with iss, iat and a 5-minute exp filled in; any claim given overrides them, and
   * a claim given as undefined is left out.
   */
  sign(claims: Record<string, unknown>, opts?: SignOptions): Promise<string>;
  /** Makes a key without publishing it. */
  newKey(alg?: 'RS256' | 'ES256'): Promise<SigningKey>;
  /** Publishes a new key and signs with it from now on; `dropOld` unpublishes the previous ones. */
  rotate(opts?: { dropOld?: boolean; alg?: 'RS256' | 'ES256' }): Promise<SigningKey>;
  /** Answers each later JWKS fetch after `ms` (default 0): a slow identity provider. */
  setJwksDelay(ms: number): void;
  close(): Promise<void>;
}

let counter = 0;

async function makeKey(alg: 'RS256' | 'ES256'): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `key-${++counter}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

/** Starts an issuer with one RS256 key published. */
export async function startTestIssuer(realm = 'acme'): Promise<TestIssuer> {
  let published: SigningKey[] = [await makeKey('RS256')];
  let current = published[0]!;
  let fetches = 0;
  let jwksDelayMs = 0;
  const base = `/realms/${realm}`;
  const jwksPath = `${base}/protocol/openid-connect/certs`;
  let origin = '';

  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === jwksPath) {
      fetches += 1;
      const body = JSON.stringify({ keys: published.map((k) => k.publicJwk) });
      const answer = () => res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      if (jwksDelayMs > 0) setTimeout(answer, jwksDelayMs);
      else answer();
      return;
    }
    if (req.method === 'GET' && req.url === `${base}/.well-known/openid-configuration`) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: `${origin}${base}`, jwks_uri: `${origin}${jwksPath}` }));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer = `${origin}${base}`;
  const nowS = () => Math.floor(Date.now() / 1000);

  return {
    issuer,
    jwksUri: `${origin}${jwksPath}`,
    get jwksFetches() {
      return fetches;
    },
    get current() {
      return current;
    },
    nowS,
    async sign(claims, opts = {}) {
      const key = opts.key ?? current;
      const merged: Record<string, unknown> = { iss: issuer, iat: nowS(), exp: nowS() + 300, ...claims };
      for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
      return new SignJWT(merged).setProtectedHeader({ alg: key.alg, kid: opts.kid ?? key.kid, typ: 'JWT' }).sign(key.privateKey);
    },
    newKey: (alg = 'RS256') => makeKey(alg),
    async rotate(opts = {}) {
      const key = await makeKey(opts.alg ?? 'RS256');
      published = opts.dropOld ? [key] : [...published, key];
      current = key;
      return key;
    },
    setJwksDelay(ms) {
      jwksDelayMs = ms;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
