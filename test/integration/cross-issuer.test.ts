/**
 * Two identity providers that both name a user "alice": without a prefix she is one user for
 * budgets, limits and rules (a partner IdP's alice spent the employee's budget), and the event says
 * which credential was used either way (`auth.credential.id`: the issuer, or the API key's id).
 * `userPrefix` on an issuer keeps its users apart; `tollgate check` warns about issuers that share one.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPolicyText } from '../../src/policy/check.js';
import { KEYS, sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const AUD = 'https://ai.example.test/mcp';

const policy = (a: TestIssuer, b: TestIssuer, prefix: string) => `
version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice }
identity:
  resource: ${AUD}
  oidc:
    - { issuer: ${a.issuer}, jwksUri: ${a.jwksUri}, claims: { user: preferred_username } }
    - { issuer: ${b.issuer}, jwksUri: ${b.jwksUri}, claims: { user: preferred_username }${prefix ? `, userPrefix: "${prefix}"` : ''} }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
`;

describe('users of two identity providers', () => {
  let a: TestIssuer;
  let b: TestIssuer;
  let gw: TestGateway;
  beforeAll(async () => {
    [a, b] = await Promise.all([startTestIssuer(), startTestIssuer()]);
    gw = await startTestGateway(policy(a, b, 'partner:'));
  });
  afterAll(async () => {
    await gw.close();
    await Promise.all([a.close(), b.close()]);
  });

  const call = async (credential: string) => {
    const client = new OpenAI({ apiKey: credential, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const before = gw.events.length;
    await client.chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 });
    await gw.idle();
    return gw.events.slice(before)[0]!;
  };

  it('charges a prefixed issuer\'s alice apart from the other\'s and from the API key\'s, and names each credential', async () => {
    const fromA = await call(await a.sign({ sub: 'a-1', aud: AUD, preferred_username: 'alice' }));
    const fromB = await call(await b.sign({ sub: 'b-1', aud: AUD, preferred_username: 'alice' }));
    const fromKey = await call(KEYS.alice);
    expect(fromA).toMatchObject({ 'user.id': 'alice', 'auth.method': 'jwt', 'auth.credential.id': a.issuer, 'tollgate.charged': [expect.objectContaining({ subject: 'alice' })] });
    expect(fromB).toMatchObject({ 'user.id': 'partner:alice', 'auth.method': 'jwt', 'auth.credential.id': b.issuer, 'tollgate.charged': [expect.objectContaining({ subject: 'partner:alice' })] });
    expect(fromKey).toMatchObject({ 'user.id': 'alice', 'auth.method': 'api_key', 'auth.credential.id': 'k-alice' });
  });

  it("refuses a token whose user name begins with another issuer's prefix, or holds a control or bidi character", async () => {
    const client = (token: string) => new OpenAI({ apiKey: token, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const ask = { model: 'standard', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 10 };
    for (const name of ['partner:alice', 'ali\u0000ce', 'ali\u202ece']) {
      const before = gw.events.length;
      const err = await client(await a.sign({ sub: 'a-2', aud: AUD, preferred_username: name })).chat.completions.create(ask).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
      await gw.idle();
      expect(gw.events.slice(before)).toEqual([expect.objectContaining({ outcome: 'refused', 'error.code': 'AUTH_INVALID' })]);
      expect(gw.events.at(-1)!['user.id']).toBeUndefined();
    }
    // The prefixed issuer's own partner:alice is served as before.
    const ok = await client(await b.sign({ sub: 'b-2', aud: AUD, preferred_username: 'alice' })).chat.completions.create(ask);
    expect(ok.choices[0]!.message.content).toBeTruthy();
  });

  it('is warned about by check when two issuers share a prefix', () => {
    const shared = checkPolicyText(policy(a, b, ''), 'p.yaml');
    expect(shared.errors).toEqual([]);
    expect(shared.warnings).toEqual([expect.objectContaining({ code: 'USERS_SHARED', message: expect.stringContaining(b.issuer) })]);
    expect(checkPolicyText(policy(a, b, 'partner:'), 'p.yaml').warnings.filter((w) => w.code === 'USERS_SHARED')).toEqual([]);
  });
});
