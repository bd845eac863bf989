/**
 * One entry for every credential a transport receives: an API key (looked up by hash) or, when
 * the policy trusts an OIDC issuer, a JWT. After proving who the caller is, checks the policy's
 * gateway-wide requirements (a required role or group) and, for a delegated token, that the
 * acting agent is allowed to act for users. Transports map AUTH_* to 401 and FORBIDDEN to 403.
 */
import { GatewayError } from '../errors.js';
import { couldBeIssuedKey, hashApiKey, principalFromApiKey, type ApiKeyResolver } from './apiKey.js';
import type { Actor } from './claims.js';
import type { IdentityConfig } from './config.js';
import { JwtVerifier, looksLikeJwt, type IssuerKeySets } from './jwt.js';
import type { Principal } from './principal.js';

const refusedPrincipals = new WeakMap<GatewayError, Principal>();

/**
 * The caller a FORBIDDEN refusal was made of, when its credential was proved first (a required role
 * or group missing, an actor not allowed): its event records that user and actor chain, not an
 * unidentified caller.
 */
export function refusedPrincipal(err: unknown): Principal | undefined {
  if (!(err instanceof GatewayError)) return undefined;
  // stdio restates a refusal with the variable's name, the original as its cause.
  return refusedPrincipals.get(err) ?? (err.cause instanceof GatewayError ? refusedPrincipals.get(err.cause) : undefined);
}

export interface Authenticated {
  principal: Principal;
  /** Seconds since the epoch after which the credential must be presented again; none for API keys. */
  expiresAt?: number;
  /**
   * A key issued at run time: a revocation can end it at any moment, so a verification of it holds
   * for the call it was made for, not for a session (the key store's lookup cache bounds how long a
   * revocation goes unseen). Keys the policy lists and tokens are not: they end with the policy
   * snapshot or at `expiresAt`.
   */
  revocable?: true;
}

export interface AuthenticateOptions {
  /** Accept only this kind of credential (stdio's TOLLGATE_TOKEN must be a JWT). */
  only?: 'api_key' | 'jwt';
}

export interface AuthenticatorOptions {
  /** The policy's `apiKeys`, looked up first: an issued key cannot shadow one. */
  apiKeys: ApiKeyResolver;
  /** Keys issued at run time (`tollgate keys`), looked up after the policy's. */
  issuedKeys?: ApiKeyResolver;
  /** The ids of the policy's `apiKeys`: an issued key holding one of them is refused (an id names one key). */
  policyKeyIds?: ReadonlySet<string>;
  /** The issuers' fetched keys, shared with the authenticators of earlier policies (kept across a reload). */
  keySets?: IssuerKeySets;
  now?: () => number;
}

const UNKNOWN_KEY = 'The API key is not recognised (unknown, revoked or disabled).';

/**
 * Authenticates credentials under one policy's identity section. Build one per policy; the JWKS
 * caches it reads are those of `keySets` when given, which outlive it.
 */
export class Authenticator {
  private readonly apiKeys: ApiKeyResolver;
  private readonly issuedKeys?: ApiKeyResolver;
  private readonly policyKeyIds?: ReadonlySet<string>;
  private readonly jwt: JwtVerifier;

  constructor(
    private readonly identity: IdentityConfig,
    opts: AuthenticatorOptions,
  ) {
    this.apiKeys = opts.apiKeys;
    this.issuedKeys = opts.issuedKeys;
    this.policyKeyIds = opts.policyKeyIds;
    this.jwt = new JwtVerifier(identity, { now: opts.now, keySets: opts.keySets });
  }

  /** Proves who presents `credential`. Throws AUTH_INVALID (unknown/bad) or FORBIDDEN (not allowed). */
  async authenticate(credential: string, opts: AuthenticateOptions = {}): Promise<Authenticated> {
    const result = await this.identify(credential, opts);
    try {
      this.authorize(result.principal, result.actors);
    } catch (err) {
      // Proved, then refused: whom the credential proved is known and is what the refusal records.
      if (err instanceof GatewayError) refusedPrincipals.set(err, result.principal);
      throw err;
    }
    const { principal, expiresAt, revocable } = result;
    return revocable ? { principal, revocable } : { principal, expiresAt };
  }

  private async identify(credential: string, opts: AuthenticateOptions): Promise<Authenticated & { actors: Actor[] }> {
    if (opts.only !== 'jwt') {
      const hash = hashApiKey(credential);
      const own = await this.apiKeys.resolve(hash);
      if (own && !own.disabled) return { principal: principalFromApiKey(own), actors: [] };
      // Only a credential shaped as an issued key is looked up in the key store: a token, or any
      // other value, is answered without waiting on a store that may not be answering.
      const issued = own || !couldBeIssuedKey(credential) ? undefined : await this.issuedKeys?.resolve(hash);
      if (issued && !issued.disabled) {
        // A policy taken while the issued keys could not be listed may have given its own key this
        // id: the two would share it in events and `scope: key` lines. The policy's key keeps it.
        if (this.policyKeyIds?.has(issued.id)) {
          throw new GatewayError('AUTH_INVALID', `This key's id ${JSON.stringify(issued.id)} is also the id of an API key in the policy, and an id names one key: revoke it and issue another with tollgate keys issue.`);
        }
        return { principal: principalFromApiKey(issued), actors: [], revocable: true };
      }
      const entry = own ?? issued;
      if (entry || opts.only === 'api_key' || !this.jwt.enabled || !looksLikeJwt(credential)) throw new GatewayError('AUTH_INVALID', UNKNOWN_KEY);
    }
    if (!this.jwt.enabled) throw new GatewayError('AUTH_INVALID', 'No OIDC issuer is configured (identity.oidc), so tokens cannot be verified.');
    const token = await this.jwt.verify(credential);
    return { principal: token.principal, expiresAt: token.expiresAt, actors: token.actors };
  }

  /** Checks a principal that presented no credential (--dev-anonymous) against the gateway-wide rights. Throws FORBIDDEN. */
  admit(p: Principal): Principal {
    try {
      this.authorize(p, []);
    } catch (err) {
      if (err instanceof GatewayError) refusedPrincipals.set(err, p);
      throw err;
    }
    return p;
  }

  /** Gateway-wide rights: required roles and groups, and who may act for whom. */
  private authorize(p: Principal, actors: Actor[]): void {
    const { requiredRoles, requiredGroups, delegation } = this.identity;
    if (requiredRoles.length > 0 && !requiredRoles.some((r) => p.roles.includes(r))) {
      throw new GatewayError('FORBIDDEN', `${p.user} lacks a required role: this gateway needs one of ${requiredRoles.join(', ')}.`, { user: p.user, requiredRoles });
    }
    if (requiredGroups.length > 0 && !requiredGroups.some((g) => p.groups.includes(g))) {
      throw new GatewayError('FORBIDDEN', `${p.user} is in none of the groups allowed to use this gateway (${requiredGroups.join(', ')}).`, {
        user: p.user,
        requiredGroups,
      });
    }
    const current = actors[0];
    // Only the current actor is checked: RFC 8693 says prior actors in a nested act are informational.
    if (current && !delegation.allowedActors.some((a) => a === current.id || a === current.clientId)) {
      throw new GatewayError('FORBIDDEN', `Actor ${current.id} may not act on behalf of users (not in identity.delegation.allowedActors).`, {
        actor: current.id,
        user: p.user,
      });
    }
  }
}
