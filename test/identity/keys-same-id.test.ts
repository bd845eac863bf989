/**
 * Two operators issuing a key under the same id at once (two `tollgate keys issue --id x` runs):
 * exactly one gets a key, the other is told the id is taken, and the key that was printed is the one
 * that works and that `revoke` revokes. Before, both were told they had a key: on Redis the second
 * record replaced the id's entry, leaving the first key working and unrevokable; in the data
 * directory the second key was printed and never worked.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { hashApiKey } from '../../src/identity/apiKey.js';
import { FileApiKeys } from '../../src/identity/fileKeys.js';
import { StoredApiKeys, type KeyRegistry, type StoredKey } from '../../src/identity/storedKeys.js';
import type { ApiKeyResolver } from '../../src/identity/apiKey.js';
import { startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';

type Registry = KeyRegistry & ApiKeyResolver;

/** Issues `id` from both registries at once; checks one key, the one printed, is the id's. */
async function race(a: Registry, b: Registry, reader: Registry): Promise<void> {
  const results = await Promise.allSettled([a.issue({ id: 'same', user: 'u1' }), b.issue({ id: 'same', user: 'u2' })]);
  const won = results.filter((r): r is PromiseFulfilledResult<{ key: string; record: StoredKey }> => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  expect(won).toHaveLength(1);
  expect(lost).toHaveLength(1);
  expect(lost[0]!.reason).toBeInstanceOf(GatewayError);
  expect((lost[0]!.reason as GatewayError).message).toMatch(/^A key with id "same" already exists/);
  const { key, record } = won[0]!.value;
  expect(await reader.resolve(hashApiKey(key))).toMatchObject({ id: 'same', user: record.user });
  expect((await reader.list()).filter((k) => k.id === 'same')).toHaveLength(1);
  await reader.revoke('same');
  expect(await reader.resolve(hashApiKey(key))).toBeUndefined();
}

describe('two issues of one id at once', () => {
  let redis: PrivateRedis;
  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('in the data directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-same-id-'));
    await race(new FileApiKeys({ dir, cacheMs: 0 }), new FileApiKeys({ dir, cacheMs: 0 }), new FileApiKeys({ dir, cacheMs: 0 }));
  });

  it('on Redis', async () => {
    const prefix = uniquePrefix('same-id');
    const all = [0, 1, 2].map(() => new StoredApiKeys({ url: redis.url, prefix, cacheMs: 0 }));
    try {
      await race(all[0]!, all[1]!, all[2]!);
    } finally {
      await Promise.all(all.map((k) => k.close()));
    }
  });
});
