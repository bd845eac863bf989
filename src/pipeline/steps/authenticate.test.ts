/**
 * The authenticate step alone, with the real Authenticator of each policy snapshot. Reads:
 * credential (secret, only, source, verified), principal, policy. Writes: principal,
 * credentialExpiresAt. Calls next once the caller is proven; throws AUTH_REQUIRED, AUTH_INVALID or
 * FORBIDDEN without calling it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicPolicy, KEYS } from '../../../test/fixtures/policies.js';
import { callContext, NOW, recordingNext, refusal, testPolicy } from '../../../test/helpers/callContext.js';
import { startTestIssuer, type TestIssuer } from '../../../test/helpers/jwks.js';
import { policyApiKeys } from '../../identity/apiKey.js';
import { Authenticator } from '../../identity/authenticate.js';
import type { Principal } from '../../identity/principal.js';
import type { Policy } from '../../policy/load.js';
import type { CallContext } from '../context.js';
import { authenticate } from './authenticate.js';

const NOW_S = NOW / 1000;
const policy = testPolicy(basicPolicy());

const alice: Principal = { user: 'alice', teams: ['platform'], costCenter: 'cc-1', groups: ['employees'], roles: [], authMethod: 'api_key', credentialId: 'k-alice' };
/** A principal an edge verification produced (as a JWT would), distinct from any policy key. */
const edgeUser: Principal = { user: 'dana', teams: ['research'], groups: ['employees'], roles: [], authMethod: 'jwt', credentialId: 'https://idp.example.com' };

/** The step as the gateway builds it: one real Authenticator per policy, counting how often it is asked for one. */
function authenticateStep(now: () => number = () => NOW) {
  const asked: Policy[] = [];
  const step = authenticate({
    authenticatorFor: (p) => {
      asked.push(p);
      return new Authenticator(p.config.identity, { apiKeys: policyApiKeys(p.apiKeys) });
    },
    now,
  });
  return { step, asked };
}

/** The principal and expiry in the context at the moment next ran. */
const seenBy = (ctx: CallContext) => () => ({ principal: ctx.principal, credentialExpiresAt: ctx.credentialExpiresAt });

describe('authenticate step', () => {
  it('refuses with AUTH_REQUIRED when no credential was presented, and does not call next', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy);
    const next = recordingNext();
    expect(await refusal(step(ctx, next))).toEqual({ code: 'AUTH_REQUIRED', message: 'No credential was presented; send an API key or token.', details: {} });
    expect(next.calls).toEqual([]);
    expect(ctx.principal).toBeUndefined();
  });

  it('sets the principal of a policy API key, with no expiry, before it calls next', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, { credential: { secret: KEYS.alice } });
    const next = recordingNext(seenBy(ctx));
    await step(ctx, next);
    expect(next.calls).toEqual([{ principal: alice, credentialExpiresAt: undefined }]);
  });

  it('refuses an unknown API key with AUTH_INVALID', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, { credential: { secret: 'key-nobody' } });
    const next = recordingNext();
    expect(await refusal(step(ctx, next))).toEqual({ code: 'AUTH_INVALID', message: 'The API key is not recognised (unknown, revoked or disabled).', details: {} });
    expect(next.calls).toEqual([]);
    expect(ctx.principal).toBeUndefined();
  });

  it('names the environment variable a stdio credential came from when it is refused', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, { transport: 'stdio', credential: { secret: 'key-nobody', source: 'TOLLGATE_API_KEY' } });
    expect(await refusal(step(ctx, recordingNext()))).toEqual({
      code: 'AUTH_INVALID',
      message: 'TOLLGATE_API_KEY was rejected: The API key is not recognised (unknown, revoked or disabled).',
      details: {},
    });
  });

  it('gives a key from TOLLGATE_API_KEY the auth method stdio_env', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, { transport: 'stdio', credential: { secret: KEYS.alice, source: 'TOLLGATE_API_KEY' } });
    await step(ctx, recordingNext());
    expect(ctx.principal).toEqual({ ...alice, authMethod: 'stdio_env' });
  });

  it('accepts only a token where the credential must be a JWT (TOLLGATE_TOKEN), naming the variable', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, { transport: 'stdio', credential: { secret: KEYS.alice, only: 'jwt', source: 'TOLLGATE_TOKEN' } });
    expect(await refusal(step(ctx, recordingNext()))).toEqual({
      code: 'AUTH_INVALID',
      message: 'TOLLGATE_TOKEN was rejected: No OIDC issuer is configured (identity.oidc), so tokens cannot be verified.',
      details: {},
    });
  });

  it('refuses a known key whose holder lacks a group the policy requires, with FORBIDDEN and the requirement', async () => {
    const { step } = authenticateStep();
    const strict = testPolicy(`${basicPolicy()}\nidentity: { requiredGroups: [employees] }\n`);
    const ctx = callContext(strict, { credential: { secret: KEYS.bob } });
    const next = recordingNext();
    expect(await refusal(step(ctx, next))).toEqual({
      code: 'FORBIDDEN',
      message: 'bob is in none of the groups allowed to use this gateway (employees).',
      details: { user: 'bob', requiredGroups: ['employees'] },
    });
    expect(next.calls).toEqual([]);
  });

  it('authenticates under the policy the call started with, not another snapshot', async () => {
    const { step, asked } = authenticateStep();
    const reloaded = testPolicy(basicPolicy());
    await step(callContext(reloaded, { credential: { secret: KEYS.alice } }), recordingNext());
    expect(asked).toHaveLength(1);
    expect(asked[0]).toBe(reloaded);
  });

  it('reuses an edge verification of the same credential under the same policy before it expires, without asking the authenticator', async () => {
    const { step, asked } = authenticateStep();
    const ctx = callContext(policy, { credential: { secret: 'token-seen-at-the-edge', verified: { policy, result: { principal: edgeUser, expiresAt: NOW_S + 60 } } } });
    const next = recordingNext(seenBy(ctx));
    await step(ctx, next);
    expect(next.calls).toEqual([{ principal: edgeUser, credentialExpiresAt: NOW_S + 60 }]);
    expect(asked).toEqual([]);
  });

  it('reuses an edge verification that has no expiry (an API key) at any time', async () => {
    const { step, asked } = authenticateStep(() => NOW + 365 * 86_400_000);
    const ctx = callContext(policy, { credential: { secret: KEYS.alice, verified: { policy, result: { principal: alice } } } });
    await step(ctx, recordingNext());
    expect(ctx.principal).toBe(alice);
    expect(ctx.credentialExpiresAt).toBeUndefined();
    expect(asked).toEqual([]);
  });

  it('proves the credential again when the edge verified it under another policy snapshot', async () => {
    const { step, asked } = authenticateStep();
    const before = testPolicy(basicPolicy());
    const ctx = callContext(policy, { credential: { secret: KEYS.alice, verified: { policy: before, result: { principal: edgeUser, expiresAt: NOW_S + 60 } } } });
    await step(ctx, recordingNext());
    expect(ctx.principal).toEqual(alice);
    expect(ctx.credentialExpiresAt).toBeUndefined();
    expect(asked).toEqual([policy]);
  });

  it('refuses an edge verification that has expired (at its expiry second) with AUTH_INVALID "The token has expired."', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, { credential: { secret: 'token-seen-at-the-edge', verified: { policy, result: { principal: edgeUser, expiresAt: NOW_S } } } });
    const next = recordingNext();
    expect(await refusal(step(ctx, next))).toEqual({ code: 'AUTH_INVALID', message: 'The token has expired.', details: {} });
    expect(next.calls).toEqual([]);
    expect(ctx.principal).toBeUndefined();
  });

  it('tells a stdio caller whose TOLLGATE_TOKEN expired to restart with a fresh one', async () => {
    const { step } = authenticateStep();
    const ctx = callContext(policy, {
      transport: 'stdio',
      credential: { secret: 'token-from-env', only: 'jwt', source: 'TOLLGATE_TOKEN', verified: { policy, result: { principal: edgeUser, expiresAt: NOW_S - 1 } } },
    });
    expect(await refusal(step(ctx, recordingNext()))).toEqual({
      code: 'AUTH_INVALID',
      message: 'TOLLGATE_TOKEN has expired; restart tollgate with a fresh token.',
      details: {},
    });
  });

  it('lets a principal set by a trusted in-process caller pass through untouched, without reading the credential', async () => {
    const { step, asked } = authenticateStep();
    const ctx = callContext(policy, { principal: edgeUser, credential: { secret: 'key-nobody' } });
    const next = recordingNext(seenBy(ctx));
    await step(ctx, next);
    expect(next.calls).toEqual([{ principal: edgeUser, credentialExpiresAt: undefined }]);
    expect(asked).toEqual([]);
  });

  describe('with an OIDC issuer', () => {
    const AUD = 'https://tollgate.example.com/mcp';
    let idp: TestIssuer;
    let oidc: Policy;
    beforeAll(async () => {
      idp = await startTestIssuer();
      oidc = testPolicy(`${basicPolicy()}\nidentity:\n  resource: ${AUD}\n  oidc: [{ issuer: "${idp.issuer}", jwksUri: "${idp.jwksUri}" }]\n`);
    });
    afterAll(() => idp.close());

    it('sets the principal of a token and its expiry, in seconds since the epoch', async () => {
      const { step } = authenticateStep(Date.now);
      const exp = idp.nowS() + 120;
      const ctx = callContext(oidc, { credential: { secret: await idp.sign({ sub: 'dana', aud: AUD, groups: ['/employees'], exp }) } });
      const next = recordingNext(seenBy(ctx));
      await step(ctx, next);
      expect(next.calls).toEqual([
        { principal: { user: 'dana', teams: ['employees'], groups: ['employees'], roles: [], authMethod: 'jwt', credentialId: idp.issuer }, credentialExpiresAt: exp + 30 }, // exp and the default clock tolerance
      ]);
    });

    it('keeps the auth method jwt for a token from TOLLGATE_TOKEN (only API keys from the environment are stdio_env)', async () => {
      const { step } = authenticateStep(Date.now);
      const ctx = callContext(oidc, { transport: 'stdio', credential: { secret: await idp.sign({ sub: 'dana', aud: AUD }), only: 'jwt', source: 'TOLLGATE_TOKEN' } });
      await step(ctx, recordingNext());
      expect(ctx.principal?.authMethod).toBe('jwt');
    });
  });
});
