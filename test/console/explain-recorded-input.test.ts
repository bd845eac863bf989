/**
 * The console's request page explains a recorded call with the input it was reserved with (its
 * decision event's input bound and counts), since the prompt itself is not kept: it explained a
 * "Hello" instead, and told a reviewer that a call refused BUDGET_EXHAUSTED for its 2,400-token
 * prompt would have been served one tier down, while the same call sent again was refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explainDecision } from '../../src/console/data.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';


let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway(basicPolicy({ userTokens: 3000, tierDownBelow: 50 }));
});
afterAll(() => gw.close());

describe('explain on the console for a recorded call', () => {
  it('decides with the call\'s recorded input, as the same call sent again is decided', async () => {
    const g = gw.runtime.gateway;
    const principal = keyPrincipal(g, KEYS.alice);
    const call = () => g.complete({ transport: 'http', principal, request: { messages: [{ role: 'user', content: 'word '.repeat(1900) }], tier: 'premium', maxTokens: 100 } });
    await call();
    const refused = await call().catch((e: unknown) => e);
    expect((refused as { code?: string }).code).toBe('BUDGET_EXHAUSTED');
    await gw.idle();
    const event = gw.events.at(-1)!;
    expect(event['error.code']).toBe('BUDGET_EXHAUSTED');
    const text = await explainDecision({ gateway: g, keyPrefix: 'tollgate:', now: () => Date.now() }, g.policy, event);
    expect(text).toMatch(/BUDGET_EXHAUSTED/);
    expect(text).not.toMatch(/tier_down/);
  });
});
