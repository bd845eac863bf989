/**
 * `tollgate call`, the terminal client of the README's tour: what it prints for a served and a
 * refused call, and that it leaves no session behind on the gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callGateway } from '../../src/client.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

describe('tollgate call', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  const sessions = async () => ((await (await fetch(`${gw.url}/healthz`)).json()) as { sessions: number }).sessions;

  it('prints the answer with the decision, usage and budgets, and ends its session', async () => {
    const r = await callGateway({ url: gw.mcpUrl, apiKey: KEYS.alice, tool: 'complete', prompt: 'hello there', json: false });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\[medium\] You said: hello there\n\n-- allow: within policy and budget\n-- served by demo\/medium \(tier standard\)/);
    expect(r.out).toContain('-- budget user-weekly (alice):');
    expect(await sessions()).toBe(0);
  });

  it('exits 1 with the refusal code for a refused call', async () => {
    const r = await callGateway({ url: gw.mcpUrl, apiKey: KEYS.alice, tool: 'complete', prompt: 'hello', tier: 'no-such-tier', json: false });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^UNKNOWN_MODEL: /);
    expect(await sessions()).toBe(0);
  });
});
