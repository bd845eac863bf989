import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { FgaAuthorizer } from '../../src/identity/openfga.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';
import { KEYS, sha } from '../fixtures/policies.js';
import { deadUrl, startFakeOpenFga, type FakeOpenFga } from '../helpers/fakeOpenFga.js';

const STORE = '01HZX3Q4K7M2N5P8R9S0T1V2W3';
const MODEL = '01HZX3Q4K7M2N5P8R9S0T1V2W4';

function policyText(apiUrl: string, fga: string = '', egress = '[127.0.0.1]'): string {
  return `
version: 1
providers:
  demo: { kind: demo }
egress: { allow: ${egress} }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform] }
  - { id: k-bob, sha256: ${sha(KEYS.bob)}, user: bob, teams: [platform] }
identity:
  openfga:
    apiUrl: ${apiUrl}
    storeId: ${STORE}
    authorizationModelId: ${MODEL}
    ${fga}
`;
}

const alice: Principal = { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key' };

function authorizer(apiUrl: string, over: Record<string, unknown> = {}, now = () => Date.now()) {
  const policy = parsePolicy(policyText(apiUrl), 'fga.yaml');
  return new FgaAuthorizer({ ...policy.config.identity.openfga!, ...over }, { egressAllow: ['127.0.0.1'], now });
}

describe('OpenFGA check against a fake server speaking the Check API', () => {
  let fga: FakeOpenFga;
  beforeAll(async () => {
    fga = await startFakeOpenFga();
    fga.grant('user:alice', 'can_use', 'model_tier:premium');
  });
  afterAll(() => fga.close());

  it('allows a granted tuple and sends the SDK\'s check body to /stores/{id}/check', async () => {
    const before = fga.requests.length;
    const outcome = await authorizer(fga.url).check({ principal: alice, request: { tier: 'premium' } });
    expect(outcome).toEqual({ allowed: true, source: 'openfga', tuple: { user: 'user:alice', relation: 'can_use', object: 'model_tier:premium' } });
    expect(fga.requests.slice(before)).toEqual([
      {
        storeId: STORE,
        body: {
          tuple_key: { user: 'user:alice', relation: 'can_use', object: 'model_tier:premium' },
          contextual_tuples: { tuple_keys: [] },
          authorization_model_id: MODEL,
        },
      },
    ]);
  });

  it('answers a second identical check from the cache without reaching OpenFGA', async () => {
    let t = 1_000_000;
    const authz = authorizer(fga.url, { cacheSeconds: 10 }, () => t);
    const before = fga.requests.length;
    expect((await authz.check({ principal: alice, request: { tier: 'premium' } })).source).toBe('openfga');
    t += 9_000;
    expect(await authz.check({ principal: alice, request: { tier: 'premium' } })).toEqual({
      allowed: true,
      source: 'cache',
      tuple: { user: 'user:alice', relation: 'can_use', object: 'model_tier:premium' },
    });
    expect(fga.requests.length - before).toBe(1);
    t += 2_000;
    expect((await authz.check({ principal: alice, request: { tier: 'premium' } })).source).toBe('openfga');
    expect(fga.requests.length - before).toBe(2);
  });

  it('fills templates from the principal and request', async () => {
    const authz = authorizer(fga.url, { check: { user: 'team:${principal.costCenter}#member', relation: 'can_use', object: 'model:${request.model}' } });
    await expect(authz.check({ principal: { ...alice, costCenter: 'cc-9' }, request: { tier: 'premium', model: 'demo/large' } })).resolves.toMatchObject({
      allowed: false,
      tuple: { user: 'team:cc-9#member', relation: 'can_use', object: 'model:demo/large' },
    });
  });

  it('refuses to form a tuple from a value containing #', async () => {
    const err = await authorizer(fga.url)
      .check({ principal: { ...alice, user: 'x#member' }, request: { tier: 'premium' } })
      .catch((e: unknown) => e as GatewayError);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).message).toBe('The OpenFGA check cannot be formed: principal.user is "x#member", which it cannot contain.');
  });
});

describe('OpenFGA in the pipeline', () => {
  let fga: FakeOpenFga;
  let rt: Runtime;
  const sink = memorySink();
  beforeAll(async () => {
    fga = await startFakeOpenFga();
    fga.grant('user:alice', 'can_use', 'model_tier:premium');
    const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' });
    rt = await buildRuntime(settings, { policy: parsePolicy(policyText(fga.url), 'fga.yaml'), sink });
  });
  afterAll(async () => {
    await rt.close();
    await fga.close();
  });

  const call = async (key: string, tier: string) => {
    const { principal } = await rt.gateway.authenticate({ secret: key }, { transport: 'cli' });
    return rt.gateway.complete({ principal, transport: 'cli', request: { messages: [{ role: 'user', content: 'hello' }], tier, maxTokens: 10 } });
  };

  it('serves a caller OpenFGA allows', async () => {
    expect((await call(KEYS.alice, 'premium')).tier).toBe('premium');
  });

  it('refuses a caller OpenFGA denies with FORBIDDEN naming the tuple, before any budget is touched', async () => {
    const err = (await call(KEYS.bob, 'premium').catch((e: unknown) => e)) as GatewayError;
    expect(err.toJSON()).toEqual({
      code: 'FORBIDDEN',
      message: 'Not authorized: OpenFGA does not grant user:bob can_use on model_tier:premium.',
      details: { check: { user: 'user:bob', relation: 'can_use', object: 'model_tier:premium' } },
    });
    expect(sink.events.at(-1)).toMatchObject({ 'user.id': 'bob', outcome: 'refused', 'error.code': 'FORBIDDEN', 'tollgate.charged': undefined, 'tollgate.reserved': undefined });
  });
});

describe('OpenFGA unreachable', () => {
  it('refuses with AUTHZ_UNAVAILABLE when failMode is closed', async () => {
    const err = (await authorizer(await deadUrl(), { failMode: 'closed' })
      .check({ principal: alice, request: { tier: 'premium' } })
      .catch((e: unknown) => e)) as GatewayError;
    expect(err.toJSON()).toEqual({
      code: 'AUTHZ_UNAVAILABLE',
      message: 'The authorization service (OpenFGA) could not be reached, and its check fails closed.',
      details: { failMode: 'closed' },
    });
  });

  it('lets the call through when failMode is open, and does not cache that answer', async () => {
    const authz = authorizer(await deadUrl(), { failMode: 'open' });
    const tuple = { user: 'user:alice', relation: 'can_use', object: 'model_tier:premium' };
    expect(await authz.check({ principal: alice, request: { tier: 'premium' } })).toEqual({ allowed: true, source: 'fail_open', tuple });
    expect(await authz.check({ principal: alice, request: { tier: 'premium' } })).toEqual({ allowed: true, source: 'fail_open', tuple });
  });
});

describe('OpenFGA policy checks at load', () => {
  const issuesOf = (text: string) => {
    try {
      parsePolicy(text, 'fga.yaml');
    } catch (err) {
      return (err as PolicyError).issues.map((i) => `${i.path}: ${i.message}`);
    }
    return [];
  };

  it('requires the OpenFGA host on egress.allow', () => {
    expect(issuesOf(policyText('https://fga.example.test', '', '[api.anthropic.com]'))).toEqual([
      'identity.openfga.apiUrl: fga.example.test is not on egress.allow; add it there to let OpenFGA checks leave',
    ]);
  });

  it('keeps ${...} in check templates for each call instead of resolving them as bindings', () => {
    const text = policyText('http://127.0.0.1:1', 'check: { user: "user:${principal.user}", relation: can_use, object: "model_tier:${request.tier}" }');
    expect(parsePolicy(text, 'fga.yaml').config.identity.openfga!.check).toEqual({ user: 'user:${principal.user}', relation: 'can_use', object: 'model_tier:${request.tier}' });
  });

  it('rejects a template naming an unknown value', () => {
    expect(issuesOf(policyText('http://127.0.0.1:1', 'check: { user: "user:${principal.email}" }'))).toEqual([
      'identity.openfga.check.user: ${principal.email} is not a known value; use principal.user, principal.costCenter, principal.authMethod, request.tier, request.model or request.provider',
    ]);
  });
});
