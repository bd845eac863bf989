/**
 * `tollgate call`, the terminal client of the README's tour: what it prints for a served and a
 * refused call, and that it leaves no session behind on the gateway.
 */
import { readFileSync } from 'node:fs';
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

describe("the README tour's tier-down and fallback, on policy/default.yaml", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(readFileSync(new URL('../../policy/default.yaml', import.meta.url), 'utf8'));
  });
  afterAll(() => gw.close());

  it('prints what the README says: allow, tier_down, fallback to economy, BUDGET_EXHAUSTED', async () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const loop = readme.slice(readme.indexOf('for i in 1 2 3 4; do'));
    const told = loop.slice(loop.indexOf('\n') + 1, loop.indexOf('```')).trimEnd().split('\n').map((l) => l.replace(/^#\s+/, ''));
    expect(told).toHaveLength(4);
    const long = 'lorem '.repeat(500);
    const printed: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await callGateway({ url: gw.mcpUrl, apiKey: 'tg-demo-ops', tool: 'complete', prompt: long, tier: 'premium', maxTokens: 200, json: false });
      printed.push(r.code === 0 ? r.out.split('\n').find((l) => /^-- [a-z_]+:/.test(l))! : r.out.trim());
    }
    // The README cuts the reset time short with `...`.
    expect(printed.map((p, i) => (told[i]!.endsWith('...') ? `${p.slice(0, told[i]!.length - 3)}...` : p))).toEqual(told);
    // The economy call is charged to the economy budget only.
    await gw.idle();
    const fallback = gw.events.find((e) => e['tollgate.tier.served'] === 'economy')!;
    expect(fallback['tollgate.charged']).toEqual(
      expect.arrayContaining([
        { budget: 'small-weekly', subject: 'olga', amount: 0, unit: 'tokens' },
        expect.objectContaining({ budget: 'small-weekly-economy', subject: 'olga', unit: 'tokens' }),
      ]),
    );
  });
});
