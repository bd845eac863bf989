/**
 * Optional relationship check against OpenFGA before a call is decided: "may user:alice can_use
 * model_tier:premium?". The tuple is built from templates in the policy; answers are cached for a
 * few seconds per tuple; when OpenFGA cannot be reached the policy's failMode decides.
 */
import { CredentialsMethod, FgaApiError, FgaValidationError, OpenFgaClient } from '@openfga/sdk';
import { GatewayError } from '../errors.js';
import { isEgressAllowed } from '../providers/egress.js';
import { TtlCache } from '../ttlCache.js';
import type { OpenFgaConfig } from './config.js';
import { renderTemplate, type FgaVars } from './fgaTemplate.js';
import type { Principal } from './principal.js';

/** The one relationship asked about. */
export interface FgaTuple {
  user: string;
  relation: string;
  object: string;
}

export interface FgaOutcome {
  allowed: boolean;
  tuple: FgaTuple;
  /** Where the answer came from: OpenFGA itself, the decision cache, or failMode open. */
  source: 'openfga' | 'cache' | 'fail_open';
}

export interface FgaAuthorizerOptions {
  /** The policy's egress.allow: OpenFGA's host must be on it. */
  egressAllow: readonly string[];
  now?: () => number;
  /** Most cached answers kept; the least recently used go first. */
  maxCacheEntries?: number;
}

/** Checks tuples against one OpenFGA store, with a short decision cache. */
export class FgaAuthorizer {
  private readonly client: OpenFgaClient;
  /** Answers per tuple for cacheSeconds; none when cacheSeconds is 0. */
  private readonly cache?: TtlCache<{ allowed: boolean }>;

  constructor(
    private readonly config: OpenFgaConfig,
    opts: FgaAuthorizerOptions,
  ) {
    if (!isEgressAllowed(config.apiUrl, opts.egressAllow)) {
      throw new GatewayError('EGRESS_DENIED', `OpenFGA at ${new URL(config.apiUrl).host} is not on the policy's egress.allow list.`);
    }
    if (config.cacheSeconds > 0) this.cache = new TtlCache({ max: opts.maxCacheEntries ?? 10_000, ttlMs: config.cacheSeconds * 1000, now: opts.now });
    this.client = new OpenFgaClient({
      apiUrl: config.apiUrl,
      storeId: config.storeId,
      authorizationModelId: config.authorizationModelId,
      credentials: config.apiToken ? { method: CredentialsMethod.ApiToken, config: { token: config.apiToken } } : undefined,
      // One quick try: a slow authorizer must not hold the call; failMode says what happens next.
      retryParams: { maxRetry: 0, minWaitInMs: 0 },
      // The SDK's axios would otherwise send every check (and its API token) through a proxy named
      // by HTTP_PROXY / HTTPS_PROXY, a host egress.allow never saw; a redirect is not followed either.
      baseOptions: { timeout: config.timeoutMs, maxRedirects: 0, proxy: false },
    });
  }

  /** Asks whether the templated tuple holds. Throws AUTHZ_UNAVAILABLE when unreachable and failing closed. */
  async check(vars: FgaVars): Promise<FgaOutcome> {
    const tuple: FgaTuple = {
      user: renderTemplate(this.config.check.user, vars),
      relation: renderTemplate(this.config.check.relation, vars),
      object: renderTemplate(this.config.check.object, vars),
    };
    const key = `${tuple.user}\n${tuple.relation}\n${tuple.object}`;
    const hit = this.cache?.get(key);
    if (hit) return { allowed: hit.allowed, tuple, source: 'cache' };
    let allowed: boolean;
    try {
      const res = await this.client.check(tuple);
      allowed = res.allowed === true;
    } catch (err) {
      // failMode covers an outage only; a rejected check (bad tuple, wrong store, bad token) is a
      // configuration fault and never lets a call through.
      if (!isOutage(err)) throw new GatewayError('AUTHZ_UNAVAILABLE', 'The authorization service (OpenFGA) rejected the check; see the gateway log.', {}, { cause: err });
      if (this.config.failMode === 'open') return { allowed: true, tuple, source: 'fail_open' };
      throw new GatewayError('AUTHZ_UNAVAILABLE', 'The authorization service (OpenFGA) could not be reached, and its check fails closed.', { failMode: 'closed' }, { cause: err });
    }
    this.cache?.set(key, { allowed });
    return { allowed, tuple, source: 'openfga' };
  }
}

/** Unreachable, timed out, overloaded or failing: the cases a fail mode is declared for. */
function isOutage(err: unknown): boolean {
  if (err instanceof FgaApiError) return err.statusCode === undefined || err.statusCode === 429 || err.statusCode >= 500;
  return !(err instanceof FgaValidationError);
}
