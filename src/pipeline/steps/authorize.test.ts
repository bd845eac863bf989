/**
 * The authorize step alone, against a fake OpenFGA server speaking the Check API. Reads: the
 * policy's identity.openfga section, principal, request (tier or model). Writes nothing. Calls
 * next when no check is configured, when the tier or model is unknown (the decision reports it),
 * or when OpenFGA grants the tuple; throws FORBIDDEN or AUTHZ_UNAVAILABLE without calling it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicPolicy, KEYS } from '../../../test/fixtures/policies.js';
import { callContext, clock, recordingNext, refusal, testPolicy } from '../../../test/helpers/callContext.js';
import { deadUrl, startFakeOpenFga, type FakeOpenFga } from '../../../test/helpers/fakeOpenFga.js';
import { keyPrincipal } from '../../../test/helpers/principal.js';
import type { CompletionInput } from '../../call/request.js';
import type { Policy } from '../../policy/load.js';
import { checkRelationships } from './authorize.js';

const STORE = '01HZX3Q4K7M2N5P8R9S0T1V2W3';

/** The fixture policy with an OpenFGA check (default templates: user:<user> can_use model_tier:<tier>). */
function withOpenFga(apiUrl: string): Policy {
  return testPolicy(`${basicPolicy()}
egress: { allow: ["127.0.0.1"] }
identity:
  openfga: { apiUrl: "${apiUrl}", storeId: ${STORE} }
`);
}

const plain = testPolicy(basicPolicy());
const alice = keyPrincipal({ policy: plain }, KEYS.alice);
const ask = (over: Partial<CompletionInput> = {}): CompletionInput => ({ messages: [{ role: 'user', content: 'Hi' }], maxTokens: 100, ...over });

describe('authorize step', () => {
  let fga: FakeOpenFga;
  let policy: Policy;
  beforeAll(async () => {
    fga = await startFakeOpenFga();
    fga.grant('user:alice', 'can_use', 'model_tier:standard');
    fga.grant('user:alice', 'can_use', 'model_tier:economy');
    policy = withOpenFga(fga.url);
  });
  afterAll(() => fga.close());

  it('calls next and writes nothing when the policy configures no OpenFGA check', async () => {
    const ctx = callContext(plain, { principal: alice, request: ask({ tier: 'premium' }) });
    const before = { ...ctx };
    const asked = fga.requests.length;
    const next = recordingNext();
    await checkRelationships({ now: clock })(ctx, next);
    expect(next.calls).toHaveLength(1);
    expect(ctx).toEqual(before);
    expect(fga.requests.length).toBe(asked);
  });

  it('calls next when OpenFGA grants the caller the default tier, having asked about that tier', async () => {
    const ctx = callContext(policy, { principal: alice, request: ask() });
    const asked = fga.requests.length;
    const next = recordingNext();
    await checkRelationships({ now: clock })(ctx, next);
    expect(next.calls).toHaveLength(1);
    expect(fga.requests.slice(asked).map((r) => [r.storeId, r.body.tuple_key])).toEqual([[STORE, { user: 'user:alice', relation: 'can_use', object: 'model_tier:standard' }]]);
  });

  it('asks about the first tier listing a requested model', async () => {
    const ctx = callContext(policy, { principal: alice, request: ask({ model: 'demo/small' }) });
    const asked = fga.requests.length;
    await checkRelationships({ now: clock })(ctx, recordingNext());
    expect(fga.requests.slice(asked).map((r) => r.body.tuple_key)).toEqual([{ user: 'user:alice', relation: 'can_use', object: 'model_tier:economy' }]);
  });

  it('refuses with FORBIDDEN and the tuple it checked when OpenFGA does not grant it, and does not call next', async () => {
    const ctx = callContext(policy, { principal: alice, request: ask({ tier: 'premium' }) });
    const next = recordingNext();
    expect(await refusal(checkRelationships({ now: clock })(ctx, next))).toEqual({
      code: 'FORBIDDEN',
      message: 'Not authorized: OpenFGA does not grant user:alice can_use on model_tier:premium.',
      details: { check: { user: 'user:alice', relation: 'can_use', object: 'model_tier:premium' } },
    });
    expect(next.calls).toEqual([]);
    expect(ctx.decision).toBeUndefined();
  });

  it('passes an unknown tier through without asking OpenFGA, for the decision to report', async () => {
    const ctx = callContext(policy, { principal: alice, request: ask({ tier: 'platinum' }) });
    const asked = fga.requests.length;
    const next = recordingNext();
    await checkRelationships({ now: clock })(ctx, next);
    expect(next.calls).toHaveLength(1);
    expect(fga.requests.length).toBe(asked);
  });

  it('refuses with AUTHZ_UNAVAILABLE when OpenFGA cannot be reached and the check fails closed', async () => {
    const ctx = callContext(withOpenFga(await deadUrl()), { principal: alice, request: ask() });
    const next = recordingNext();
    expect(await refusal(checkRelationships({ now: clock })(ctx, next))).toEqual({
      code: 'AUTHZ_UNAVAILABLE',
      message: 'The authorization service (OpenFGA) could not be reached, and its check fails closed.',
      details: { failMode: 'closed' },
    });
    expect(next.calls).toEqual([]);
  });
});
