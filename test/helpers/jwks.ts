/**
 * A local OIDC issuer for tests: serves its OpenID configuration and JWKS on 127.0.0.1 (Keycloak
 * paths), signs tokens with jose-generated keys, rotates keys, and counts JWKS fetches so tests
 * can see when the gateway went back for keys. It also runs the authorization code flow with PKCE
 * (RFC 6749 section 4.1, RFC 7636) as a real issuer does, without a login screen: the authorization
 * endpoint signs in whoever `setLoginUser` names and redirects back with a one-time code; the
 * token endpoint checks the code, client, redirect URI and S256 verifier and answers with an ID
 * token (audience the client id, the flow's nonce) and an access token.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
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
  /** The user the authorization endpoint signs in (claims of their ID token); none refuses with access_denied. */
  setLoginUser(claims: Record<string, unknown> | undefined): void;
  /** What the code flow's endpoints received, oldest first. */
  readonly flow: { authorize: Record<string, string>[]; token: { params: Record<string, string>; status: number }[] };
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
  const authPath = `${base}/protocol/openid-connect/auth`;
  const tokenPath = `${base}/protocol/openid-connect/token`;
  let origin = '';
  let loginUser: Record<string, unknown> | undefined;
  const flow: { authorize: Record<string, string>[]; token: { params: Record<string, string>; status: number }[] } = { authorize: [], token: [] };
  const codes = new Map<string, { clientId: string; redirectUri: string; challenge: string; nonce?: string; claims: Record<string, unknown> }>();
  const nowS = () => Math.floor(Date.now() / 1000);
  const signWith = (claims: Record<string, unknown>) => {
    const merged: Record<string, unknown> = { iss: `${origin}${base}`, iat: nowS(), exp: nowS() + 300, ...claims };
    for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
    return new SignJWT(merged).setProtectedHeader({ alg: current.alg, kid: current.kid, typ: 'JWT' }).sign(current.privateKey);
  };

  /** GET /auth: checks the request as an issuer would, then redirects back with a code (or an error). */
  const authorize = (url: URL, res: import('node:http').ServerResponse) => {
    const q = Object.fromEntries(url.searchParams);
    flow.authorize.push(q);
    if (!q.redirect_uri || !q.client_id) return void res.writeHead(400, { 'content-type': 'text/plain' }).end('missing client_id or redirect_uri');
    const back = new URL(q.redirect_uri);
    if (q.state) back.searchParams.set('state', q.state);
    if (q.response_type !== 'code' || !q.code_challenge || q.code_challenge_method !== 'S256') back.searchParams.set('error', 'invalid_request');
    else if (!loginUser) back.searchParams.set('error', 'access_denied');
    else {
      const code = randomBytes(16).toString('base64url');
      codes.set(code, { clientId: q.client_id, redirectUri: q.redirect_uri, challenge: q.code_challenge, nonce: q.nonce, claims: loginUser });
      back.searchParams.set('code', code);
    }
    res.writeHead(302, { location: back.toString() }).end();
  };

  /** POST /token: the code once, for the client and redirect URI it was issued to, with the verifier of its challenge. */
  const token = async (req: IncomingMessage, res: import('node:http').ServerResponse) => {
    let text = '';
    for await (const chunk of req) text += chunk;
    const params = Object.fromEntries(new URLSearchParams(text));
    const answer = (status: number, body: Record<string, unknown>) => {
      flow.token.push({ params, status });
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    };
    if (params.grant_type !== 'authorization_code') return answer(400, { error: 'unsupported_grant_type' });
    const grant = params.code ? codes.get(params.code) : undefined;
    if (params.code) codes.delete(params.code);
    if (!grant || grant.clientId !== params.client_id || grant.redirectUri !== params.redirect_uri) return answer(400, { error: 'invalid_grant' });
    const challenge = createHash('sha256').update(params.code_verifier ?? '').digest('base64url');
    if (challenge !== grant.challenge) return answer(400, { error: 'invalid_grant', error_description: 'PKCE verification failed' });
    const idToken = await signWith({ aud: grant.clientId, azp: grant.clientId, nonce: grant.nonce, ...grant.claims });
    const accessToken = await signWith({ aud: 'account', azp: grant.clientId, ...grant.claims });
    answer(200, { access_token: accessToken, token_type: 'Bearer', expires_in: 300, id_token: idToken });
  };

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://issuer');
    if (req.method === 'GET' && url.pathname === authPath) return authorize(url, res);
    if (req.method === 'POST' && url.pathname === tokenPath) return void token(req, res);
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
      res.end(
        JSON.stringify({
          issuer: `${origin}${base}`,
          jwks_uri: `${origin}${jwksPath}`,
          authorization_endpoint: `${origin}${authPath}`,
          token_endpoint: `${origin}${tokenPath}`,
          response_types_supported: ['code'],
          grant_types_supported: ['authorization_code'],
          code_challenge_methods_supported: ['S256'],
          id_token_signing_alg_values_supported: ['RS256', 'ES256'],
        }),
      );
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer = `${origin}${base}`;

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
    setLoginUser(claims) {
      loginUser = claims;
    },
    flow,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
