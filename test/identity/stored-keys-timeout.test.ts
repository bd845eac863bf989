/**
 * Issued API keys on Redis (StoredApiKeys) against a store that accepts the connection and never
 * answers (a hung host, here a private redis-server stopped with SIGSTOP): every lookup and change
 * fails with QUOTA_STORE_UNAVAILABLE once its command timeout has passed, instead of holding the
 * caller forever, and works again once the server answers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { StoredApiKeys } from '../../src/identity/storedKeys.js';
import { hashApiKey } from '../../src/identity/apiKey.js';
import { startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';

describe('issued keys on a Redis that stops answering', () => {
  let redis: PrivateRedis;
  let keys: StoredApiKeys;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    keys = new StoredApiKeys({ url: redis.url, prefix: uniquePrefix('stored-keys'), cacheMs: 0, commandTimeoutMs: 300 });
  });

  afterAll(async () => {
    redis.thaw();
    await keys.close();
    await redis.stop();
  });

  it('refuses a lookup, an issue, a revocation and a listing with QUOTA_STORE_UNAVAILABLE naming the timeout, then answers again', async () => {
    const { key } = await keys.issue({ user: 'ada', id: 'ada-laptop' });
    expect(await keys.resolve(hashApiKey(key))).toMatchObject({ user: 'ada' });

    redis.freeze();
    const refusals = await Promise.allSettled([keys.resolve(hashApiKey(key)), keys.issue({ user: 'bob', id: 'bob-ci' }), keys.revoke('ada-laptop'), keys.list()]);
    for (const r of refusals) {
      expect(r.status).toBe('rejected');
      const err = (r as PromiseRejectedResult).reason as GatewayError;
      expect(err).toBeInstanceOf(GatewayError);
      expect(err.code).toBe('QUOTA_STORE_UNAVAILABLE');
      expect(err.message).toBe('The shared store holding issued API keys did not answer within 300 ms.');
    }

    redis.thaw();
    expect(await keys.resolve(hashApiKey(key))).toMatchObject({ user: 'ada' });
  });
});
