/**
 * One issuer's signing keys, fetched from its `jwks_uri` and cached; jose's local key set picks the
 * key for each token. It keeps jose's remote set's rules (a cache age, a cooldown before an unknown
 * `kid` makes it fetch again, redirects not followed, only a 200 taken) with one difference: a fetch
 * that failed counts as a fetch. jose's remote set times its cooldown from the last fetch that
 * succeeded, so while an issuer fails, every token with an unknown kid (or, once the keys are
 * stale, every token) sent another request to it: any caller could turn a stream of unsigned
 * tokens into a stream of requests to the identity provider while it was down.
 */
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';

export interface RemoteKeySetOptions {
  /** How long fetched keys are used before they are fetched again. */
  cacheMaxAgeMs: number;
  /** After any fetch, an unknown kid fetches again only once this has passed; after a failed one, nothing fetches before. */
  cooldownMs: number;
  timeoutMs: number;
  /** Wall clock, in ms. */
  now?: () => number;
}

async function fetchKeys(url: URL, timeoutMs: number): Promise<JSONWebKeySet> {
  const signal = AbortSignal.timeout(timeoutMs);
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'manual', headers: { accept: 'application/json, application/jwk-set+json' } });
  } catch (err) {
    throw (err as { name?: string }).name === 'TimeoutError' ? new errors.JWKSTimeout(undefined, { cause: err }) : err;
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new errors.JOSEError('Expected 200 OK from the JSON Web Key Set HTTP response');
  }
  try {
    return (await res.json()) as JSONWebKeySet;
  } catch (cause) {
    throw signal.aborted ? new errors.JWKSTimeout(undefined, { cause }) : new errors.JOSEError('Failed to parse the JSON Web Key Set HTTP response as JSON', { cause });
  }
}

/** The key getter `jwtVerify` takes, over the key set at `url`. */
export function remoteKeySet(url: URL, opts: RemoteKeySetOptions): JWTVerifyGetKey {
  const now = opts.now ?? ((): number => Date.now());
  let local: ReturnType<typeof createLocalJWKSet> | undefined;
  let fetchedAt = -Infinity;
  let triedAt = -Infinity;
  /** Why the last fetch failed; undefined once one succeeds. */
  let failure: unknown;
  let pending: Promise<void> | undefined;

  const refresh = (): Promise<void> => {
    pending ??= (async () => {
      triedAt = now();
      try {
        local = createLocalJWKSet(await fetchKeys(url, opts.timeoutMs));
        fetchedAt = now();
        failure = undefined;
      } catch (err) {
        failure = err;
        throw err;
      }
    })().finally(() => {
      pending = undefined;
    });
    return pending;
  };
  const coolingDown = (): boolean => now() < triedAt + opts.cooldownMs;

  return async (header, token) => {
    if (pending) await pending.catch(() => undefined);
    if (!local || !(now() < fetchedAt + opts.cacheMaxAgeMs)) {
      // A fetch that failed within the cooldown is the answer until the cooldown has passed.
      if (failure !== undefined && coolingDown()) throw failure;
      await refresh();
    }
    try {
      return await local!(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey) || coolingDown()) throw err;
      await refresh();
      return local!(header, token);
    }
  };
}
