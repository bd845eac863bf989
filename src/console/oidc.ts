/**
 * The console's OIDC sign-in: the authorization code flow with PKCE (RFC 7636, S256) against the
 * issuer named in `console.oidc`. The browser is sent to the issuer's authorization endpoint with a
 * random state, nonce and code challenge; the verifier, state and nonce wait in a signed, HttpOnly
 * cookie (SameSite=Lax: the way back is a navigation from the issuer's site). The callback checks
 * the state, trades the code and verifier for tokens at the token endpoint, and hands the ID token
 * after checking it was made for this sign-in (issuer, client, nonce) to the gateway's identity
 * pipeline (access.ts), which verifies it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import { GatewayError } from '../errors.js';
import type { ConsoleConfig } from '../policy/schema.js';

type OidcConfig = NonNullable<ConsoleConfig['oidc']>;

/** The endpoints of an issuer's OpenID configuration the flow uses. */
interface Endpoints {
  authorization: string;
  token: string;
}

/** What waits in the flow cookie while the browser is at the issuer. */
export interface PendingLogin {
  state: string;
  nonce: string;
  verifier: string;
  redirectUri: string;
  issuer: string;
  /** Epoch ms. */
  expiresAt: number;
}

/** How long a browser may stay at the issuer before the flow has to start again. */
export const FLOW_TTL_MS = 10 * 60_000;
const TIMEOUT_MS = 5000;

const discovered = new Map<string, { at: number; endpoints: Endpoints }>();

/** The issuer's authorization and token endpoints, from its discovery document (kept 10 minutes). */
async function endpointsOf(issuer: string, now: number): Promise<Endpoints> {
  const hit = discovered.get(issuer);
  if (hit && now - hit.at < 600_000) return hit.endpoints;
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  let doc: Record<string, unknown>;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS), headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    doc = (await res.json()) as Record<string, unknown>;
  } catch (err) {
    throw new GatewayError('IDENTITY_UNAVAILABLE', `The OIDC issuer's configuration (${url}) could not be read: ${(err as Error).message}.`);
  }
  const { authorization_endpoint: authorization, token_endpoint: token } = doc;
  if (typeof authorization !== 'string' || typeof token !== 'string') throw new GatewayError('IDENTITY_UNAVAILABLE', `The OIDC issuer's configuration at ${url} names no authorization_endpoint or token_endpoint.`);
  const endpoints = { authorization, token };
  discovered.set(issuer, { at: now, endpoints });
  return endpoints;
}

const random = () => randomBytes(32).toString('base64url');

/** Starts a sign-in: where to send the browser, and what to keep in the flow cookie. */
export async function startLogin(oidc: OidcConfig, redirectUri: string, now: number): Promise<{ location: string; pending: PendingLogin }> {
  const { authorization } = await endpointsOf(oidc.issuer, now);
  const pending: PendingLogin = { state: random(), nonce: random(), verifier: random(), redirectUri, issuer: oidc.issuer, expiresAt: now + FLOW_TTL_MS };
  const url = new URL(authorization);
  const params = {
    response_type: 'code',
    client_id: oidc.clientId,
    redirect_uri: redirectUri,
    scope: [...new Set(['openid', ...oidc.scopes])].join(' '),
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: createHash('sha256').update(pending.verifier).digest('base64url'),
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return { location: url.toString(), pending };
}

/**
 * Trades the authorization code for tokens; returns the ID token. Throws AUTH_INVALID when the
 * issuer refuses the code (its `error` named) or answers without an ID token.
 */
export async function redeemCode(oidc: OidcConfig, pending: PendingLogin, code: string, now: number): Promise<string> {
  const { token } = await endpointsOf(oidc.issuer, now);
  const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: pending.redirectUri, client_id: oidc.clientId, code_verifier: pending.verifier });
  if (oidc.clientSecret) body.set('client_secret', oidc.clientSecret);
  let res: Response;
  try {
    res = await fetch(token, { method: 'POST', body, headers: { accept: 'application/json' }, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    throw new GatewayError('IDENTITY_UNAVAILABLE', `The OIDC token endpoint could not be reached: ${(err as Error).message}.`);
  }
  const answer = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) throw new GatewayError('AUTH_INVALID', `The issuer refused the sign-in code (${typeof answer.error === 'string' ? answer.error : `HTTP ${res.status}`}).`);
  if (typeof answer.id_token !== 'string') throw new GatewayError('AUTH_INVALID', 'The issuer answered without an ID token (is the openid scope allowed for this client?).');
  return answer.id_token;
}

/**
 * Checks that an ID token was made for this sign-in (OpenID Connect Core 3.1.3.7): by the console's
 * issuer, for the console's client (its `aud`, and `azp` when there are several audiences), with
 * the nonce this browser's flow sent. The identity pipeline accepts every audience of the issuer's
 * `identity.oidc` entry (the MCP resource too), so it cannot tell a console ID token from another.
 * Run before the token is verified: a claim that fails here refuses the sign-in either way.
 */
export function checkIdToken(idToken: string, oidc: OidcConfig, pending: PendingLogin): void {
  const claims = decodeJwt(idToken);
  const audience = typeof claims.aud === 'string' ? [claims.aud] : (claims.aud ?? []);
  const azpFits = claims.azp === undefined ? audience.length === 1 : claims.azp === oidc.clientId;
  if (claims.iss !== oidc.issuer || !audience.includes(oidc.clientId) || !azpFits) {
    throw new GatewayError('AUTH_INVALID', `The ID token was not made for this console (issuer ${oidc.issuer}, client ${oidc.clientId}).`);
  }
  if (claims.nonce !== pending.nonce) throw new GatewayError('AUTH_INVALID', 'The ID token does not carry the nonce this sign-in sent.');
}
