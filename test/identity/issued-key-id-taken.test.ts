/**
 * An id names one key. A policy that gives one of its keys an id a key issued with `tollgate keys`
 * holds is refused at start and on a reload, but while the issued keys cannot be listed (Redis
 * down) it is taken unchecked; from then on the issued key is refused at every use (AUTH_INVALID,
 * saying why), so the two never share the id in events or a `scope: key` rate-limit line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { Authenticator } from '../../src/identity/authenticate.js';
import { policyApiKeys } from '../../src/identity/apiKey.js';
import { FileApiKeys } from '../../src/identity/fileKeys.js';
import { parsePolicy } from '../../src/policy/load.js';
import { STANDARD_HEAD, sha } from '../fixtures/policies.js';

describe('an issued key whose id a policy key took', () => {
  it('is refused, naming the id, while the policy key is served', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-id-taken-'));
    // Issued while the policy had no key ci; the policy below (taken unchecked) gives it to bob.
    const issuedKeys = new FileApiKeys({ dir });
    const { key: DANA } = await issuedKeys.issue({ user: 'dana', id: 'ci' });
    const policy = parsePolicy(`${STANDARD_HEAD}apiKeys:\n  - { id: ci, sha256: ${sha('bob-key-1234567')}, user: bob }\n`, 'p.yaml');
    const authn = new Authenticator(policy.config.identity, {
      apiKeys: policyApiKeys(policy.apiKeys),
      issuedKeys,
      policyKeyIds: new Set(policy.config.apiKeys.map((k) => k.id)),
    });
    expect((await authn.authenticate('bob-key-1234567')).principal).toMatchObject({ user: 'bob', credentialId: 'ci' });
    const err = await authn.authenticate(DANA).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('AUTH_INVALID');
    expect((err as GatewayError).message).toBe('This key\'s id "ci" is also the id of an API key in the policy, and an id names one key: revoke it and issue another with tollgate keys issue.');
    rmSync(dir, { recursive: true, force: true });
  });
});
