/**
 * OIDC bearer tokens verified with jose against each trusted issuer's JWKS. Keys are fetched on
 * first use and cached; a token whose `kid` is unknown makes the set be fetched again (at most once
 * per cooldown, a failed fetch included: jwks.ts), which is how key rotation is picked up. Only
 * asymmetric algorithms from the issuer's allowed list are accepted, so neither `none` nor an HS256
 * token signed with the public key gets through. Every failure becomes AUTH_INVALID with a message a person can act on.
 */
import { decodeJwt, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { GatewayError } from '../errors.js';
import { principalFromClaims, actorChain, type Actor } from './claims.js';
import type { IdentityConfig, IssuerConfig } from './config.js';
import { remoteKeySet } from './jwks.js';
import type { Principal } from './principal.js';

/** A verified token: who it names, until when, and the delegation chain it carries. */
export interface VerifiedToken {
  principal: Principal;
  /**
   * When the gateway stops accepting the token, in seconds since the epoch: `exp` plus the issuer's
   * clock tolerance, as the signature check reads it (every way in then agrees: /v1 refused a token
   * 5 s past `exp` that the check had accepted, and the MCP bearer guard refused it unrecorded).
   */
  expiresAt: number;
  /** Current actor first; empty when the token is not delegated. */
  actors: Actor[];
  issuer: string;
}

export interface JwtVerifierOptions {
  /** Clock for exp/nbf checks (the JWKS cache keeps wall time). */
  now?: () => number;
  /** Timeout for fetching discovery documents and key sets. */
  fetchTimeoutMs?: number;
  /** Where each issuer's fetched keys are kept; share one between the verifiers of successive policies. */
  keySets?: IssuerKeySets;
}

/** One issuer's signing keys as fetched: the key getter, a discovery under way, the last one that failed. */
interface KeySource {
  keys?: JWTVerifyGetKey;
  pending?: Promise<JWTVerifyGetKey>;
  /** The last discovery that failed, and when (wall time): the answer until the cooldown has passed. */
  discoveryFailure?: { at: number; error: unknown };
}

interface TrustedIssuer {
  config: IssuerConfig;
  audience: string[];
  source: KeySource;
}

/** What decides how an issuer's keys are fetched and kept: a source is reused only while these are unchanged. */
const fetchedBy = (c: IssuerConfig): string => JSON.stringify([c.issuer, c.jwksUri ?? null, c.jwksCacheSeconds, c.jwksCooldownSeconds]);

/**
 * The keys fetched from each issuer, with their cache age and cooldowns, kept across policy
 * reloads: a reload that leaves an issuer's fetching settings alone keeps what was fetched (the
 * keys still expire after `jwksCacheSeconds`), so that an edit made while the identity provider is
 * down does not refuse every token those keys verify. A reload that changes them starts afresh.
 */
export class IssuerKeySets {
  private sources = new Map<string, KeySource>();

  /** The source for `config`'s issuer, made on first use. */
  sourceFor(config: IssuerConfig): KeySource {
    const id = fetchedBy(config);
    let source = this.sources.get(id);
    if (!source) {
      source = {};
      this.sources.set(id, source);
    }
    return source;
  }

  /** Drops the sources of issuers `identity` does not list as they are; verifiers made before keep theirs. */
  retain(identity: IdentityConfig): void {
    const kept = new Set(identity.oidc.map(fetchedBy));
    for (const id of this.sources.keys()) if (!kept.has(id)) this.sources.delete(id);
  }
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** True when `token` has the three base64url parts of a compact JWS. */
export function looksLikeJwt(token: string): boolean {
  return JWT_SHAPE.test(token);
}

function invalid(message: string, cause?: unknown): GatewayError {
  return new GatewayError('AUTH_INVALID', message, {}, { cause });
}

/** Verifies bearer tokens from the issuers listed under `identity.oidc`. */
export class JwtVerifier {
  private readonly issuers = new Map<string, TrustedIssuer>();
  private readonly now: () => number;
  private readonly fetchTimeoutMs: number;

  constructor(config: IdentityConfig, opts: JwtVerifierOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? 5000;
    const keySets = opts.keySets ?? new IssuerKeySets();
    for (const iss of config.oidc) {
      const aud = iss.audience ?? config.resource!;
      this.issuers.set(iss.issuer, { config: iss, audience: Array.isArray(aud) ? aud : [aud], source: keySets.sourceFor(iss) });
    }
  }

  /** False when no issuer is configured: bearer values are then API keys only. */
  get enabled(): boolean {
    return this.issuers.size > 0;
  }

  /** Verifies signature, issuer, audience, exp and nbf, then maps the claims. Throws AUTH_INVALID. */
  async verify(token: string): Promise<VerifiedToken> {
    if (!looksLikeJwt(token)) throw invalid('The token is not a JWT.');
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch (err) {
      throw invalid('The token is malformed: its payload cannot be decoded.', err);
    }
    const iss = unverified.iss;
    const trusted = typeof iss === 'string' ? this.issuers.get(iss) : undefined;
    if (!trusted) throw invalid(typeof iss === 'string' ? `Tokens from issuer ${iss} are not accepted here.` : 'The token names no issuer (iss).');
    const keys = await this.keysOf(trusted);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: trusted.config.issuer,
        audience: trusted.audience,
        algorithms: trusted.config.algorithms,
        clockTolerance: trusted.config.clockToleranceSeconds,
        currentDate: new Date(this.now()),
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      throw explain(err, trusted);
    }
    const principal = principalFromClaims(payload, trusted.config.claims, trusted.config.issuer, trusted.config.userPrefix);
    this.requireOwnNamespace(principal.user, trusted.config);
    return {
      principal,
      expiresAt: payload.exp! + trusted.config.clockToleranceSeconds,
      actors: actorChain(payload),
      issuer: trusted.config.issuer,
    };
  }

  /**
   * An issuer names users in its own namespace: a user whose name begins with a longer userPrefix
   * of another issuer (an unprefixed IdP's `partner:alice`, where the partner's issuer has
   * `userPrefix: partner:`) would be, for budgets, limits and rules, that issuer's user. Refused.
   */
  private requireOwnNamespace(user: string, config: TrustedIssuer['config']): void {
    for (const other of this.issuers.values()) {
      const prefix = other.config.userPrefix;
      if (other.config === config || prefix.length <= config.userPrefix.length || !user.startsWith(prefix)) continue;
      throw new GatewayError('AUTH_INVALID', `The token names the user ${user}, which begins with ${prefix}, the userPrefix of the issuer ${other.config.issuer}: an issuer cannot name another's users.`);
    }
  }

  private async keysOf({ config, source: t }: TrustedIssuer): Promise<JWTVerifyGetKey> {
    if (t.keys) return t.keys;
    // A discovery that failed is not tried again before the cooldown has passed, as for the keys
    // (jwks.ts): tokens naming an issuer that is down must not each send it a request.
    const failed = t.discoveryFailure;
    if (failed && Date.now() < failed.at + config.jwksCooldownSeconds * 1000) throw failed.error;
    // One discovery at a time per issuer.
    t.pending ??= this.jwksUri(config)
      .then((uri) =>
        remoteKeySet(new URL(uri), {
          cacheMaxAgeMs: config.jwksCacheSeconds * 1000,
          cooldownMs: config.jwksCooldownSeconds * 1000,
          timeoutMs: this.fetchTimeoutMs,
        }),
      )
      .catch((error: unknown) => {
        t.discoveryFailure = { at: Date.now(), error };
        throw error;
      })
      .finally(() => {
        t.pending = undefined;
      });
    t.keys = await t.pending;
    return t.keys;
  }

  private async jwksUri(cfg: IssuerConfig): Promise<string> {
    if (cfg.jwksUri) return cfg.jwksUri;
    const url = `${cfg.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    let doc: { jwks_uri?: unknown };
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(this.fetchTimeoutMs), redirect: 'error', headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as { jwks_uri?: unknown };
    } catch (err) {
      throw invalid(`The token cannot be checked now: the OpenID configuration of ${cfg.issuer} could not be fetched.`, err);
    }
    if (typeof doc.jwks_uri !== 'string' || !URL.canParse(doc.jwks_uri)) throw invalid(`The OpenID configuration of ${cfg.issuer} names no jwks_uri.`);
    return doc.jwks_uri;
  }
}

/** Turns a jose failure into the sentence the caller sees. */
function explain(err: unknown, t: TrustedIssuer): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return invalid('The token has expired.', err);
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'nbf') return invalid('The token is not valid yet (nbf is in the future).', err);
      if (e.claim === 'aud') return invalid(`The token was not issued for this gateway: its audience is not ${t.audience.join(' or ')}.`, err);
      if (e.claim === 'iss') return invalid(`The token was not issued by ${t.config.issuer}.`, err);
      if (e.reason === 'missing') return invalid(`The token has no ${e.claim} claim.`, err);
      return invalid(`The token's ${e.claim} claim is not acceptable.`, err);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return invalid(`The token's signing algorithm is not accepted; allowed: ${t.config.algorithms.join(', ')}.`, err);
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return invalid('The token signature does not verify.', err);
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return invalid(`No signing key of ${t.config.issuer} matches the token (unknown kid).`, err);
    case 'ERR_JWKS_TIMEOUT':
      return invalid(`The token cannot be checked now: the keys of ${t.config.issuer} could not be fetched in time.`, err);
    case 'ERR_JWKS_INVALID':
    case 'ERR_JOSE_GENERIC':
      return invalid(`The token cannot be checked now: the keys of ${t.config.issuer} could not be fetched.`, err);
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return invalid('The token is malformed or uses an unsupported algorithm.', err);
    default:
      // A network failure while fetching keys surfaces as a plain fetch error.
      return invalid(`The token cannot be checked now: the keys of ${t.config.issuer} could not be fetched.`, err);
  }
}
