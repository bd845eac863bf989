import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterEach, describe, expect, it } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { demoInputTokens } from '../../src/providers/demo.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

type ErrorMeta = { code: string; message: string; details: Record<string, unknown> };
const errorOf = (r: Awaited<ReturnType<Client['callTool']>>) => (r._meta as Record<string, ErrorMeta>)['io.tollgate/error']!;

/** Charges `amount` to every line of `key`'s budgets, as if earlier calls had used it. */
async function precharge(gw: TestGateway, key: string, amount: number): Promise<void> {
  const g = gw.runtime.gateway;
  const principal = keyPrincipal(g, key);
  const lines = applicableLines(g.policy.budgets, principal, Date.now(), 'tollgate:');
  await g.store.settle(`seed-${key}-${amount}`, lines.map((l) => ({ ...l.line, amount })));
}

describe('budgets through the MCP client', () => {
  let gw: TestGateway | undefined;
  const clients: Client[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    await gw?.close();
  });
  const connect = async (key: string) => {
    const c = await connectHttp(gw!.mcpUrl, key);
    clients.push(c);
    return c;
  };

  it('denies an exhausted budget before reserving, with the budget id and the Monday reset in Paris', async () => {
    const now = Date.parse('2026-11-25T10:00:00Z'); // a Wednesday
    gw = await startTestGateway(basicPolicy({ userTokens: 1000 }), { now: () => now });
    const g = gw.runtime.gateway;
    const lines = applicableLines(g.policy.budgets, keyPrincipal(g, KEYS.alice), now, 'tollgate:');
    await g.store.settle('seed', lines.map((l) => ({ ...l.line, amount: 1000 })));
    const alice = await connect(KEYS.alice);
    const e = errorOf(await alice.callTool({ name: 'complete', arguments: { prompt: 'hi' } }));
    expect(e).toEqual({
      code: 'BUDGET_EXHAUSTED',
      message: 'Budget user-weekly (user alice) is exhausted; it resets at 2026-11-29T23:00:00.000Z.',
      details: { budgetId: 'user-weekly', resetsAt: '2026-11-29T23:00:00.000Z' },
    });
    expect(gw.events.at(-1)).toMatchObject({ effect: 'deny', outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED', 'policy.budget_id': 'user-weekly' });
    expect(gw.events.at(-1)).not.toHaveProperty('tollgate.reserved', expect.anything());
  });

  it('steps down to a cheaper tier when a dollar budget cannot cover the capable one', async () => {
    // $0.002 a month for the team: a premium call reserving 16 input + 100 output tokens
    // ($0.00774 at 15/75 per MTok) does not fit, a standard one ($0.001548) does.
    gw = await startTestGateway(
      basicPolicy({
        extraBudgets: `
  - id: team-usd
    scope: team
    window: { calendar: month, timezone: UTC }
    limit: { usd: 0.002 }`,
      }),
    );
    const alice = await connect(KEYS.alice);
    const r = await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', tier: 'premium', max_tokens: 100 } });
    const s = r.structuredContent as { model: string; decision: Record<string, unknown>; costUsd: number; budgets: unknown[] };
    expect(s.model).toBe('demo/medium');
    expect(s.decision).toMatchObject({ effect: 'tier_down', requestedTier: 'premium', tier: 'standard', budgetId: 'team-usd' });
    expect(s.costUsd).toBe(66 / 1e6);
    expect(s.budgets).toContainEqual(expect.objectContaining({ id: 'team-usd', subject: 'platform', unit: 'usd', used: 66 / 1e6, limit: 0.002 }));
  });

  it('denies a prompt matching a DLP rule and names the rule', async () => {
    gw = await startTestGateway(
      basicPolicy({
        rules: `
  - id: no-aws-keys
    when: "request.text.matches('AKIA[0-9A-Z]{16}')"
    effect: deny
    message: The prompt contains an AWS access key id.`,
      }),
    );
    const carol = await connect(KEYS.carol);
    const e = errorOf(await carol.callTool({ name: 'complete', arguments: { prompt: 'use AKIAABCDEFGHIJKLMNOP please' } }));
    expect(e).toEqual({ code: 'POLICY_DENIED', message: 'The prompt contains an AWS access key id.', details: { ruleId: 'no-aws-keys' } });
  });

  it('lets exactly 10 of 100 parallel calls through when the budget fits 10 reservations', async () => {
    // Each call reserves the bound on its input (5 bytes + 8 + 16 = 29) + 100 output = 129 tokens; 1,290 fit exactly ten. The demo
    // provider holds each call for 4 s so every reservation is made before any settles, even on a loaded machine.
    gw = await startTestGateway(basicPolicy({ userTokens: 1290, tierDownBelow: 0 }).replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 4000 }'));
    const alice = await connect(KEYS.alice);
    const results = await Promise.all(
      Array.from({ length: 100 }, () => alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } })),
    );
    const served = results.filter((r) => !r.isError);
    const refused = results.filter((r) => r.isError).map((r) => errorOf(r).code);
    expect(served.length).toBe(10);
    expect(refused).toEqual(Array(90).fill('BUDGET_EXHAUSTED'));
    const b = await alice.callTool({ name: 'my_budget', arguments: {} });
    expect((b.structuredContent as { budgets: unknown[] }).budgets).toEqual([expect.objectContaining({ used: 60, reserved: 0 })]);
  });

  it('charges a user in two teams to both teams', async () => {
    gw = await startTestGateway(
      basicPolicy({
        extraBudgets: `
  - id: team-tokens
    scope: team
    window: { calendar: day, timezone: UTC }
    limit: { tokens: 100000 }`,
      }).replace('teams: [platform], costCenter: cc-1, groups: [employees]', 'teams: [platform, security], costCenter: cc-1, groups: [employees]'),
    );
    const alice = await connect(KEYS.alice);
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hello' } });
    const b = await alice.callTool({ name: 'my_budget', arguments: {} });
    const budgets = (b.structuredContent as { budgets: { id: string; subject: string; used: number }[] }).budgets;
    expect(budgets.map((x) => [x.id, x.subject, x.used])).toEqual([
      ['user-weekly', 'alice', 6],
      ['team-tokens', 'platform', 6],
      ['team-tokens', 'security', 6],
    ]);
  });

  it('serves the precharged user one tier down and the others normally', async () => {
    gw = await startTestGateway(basicPolicy({ userTokens: 1000 }));
    await precharge(gw, KEYS.alice, 900);
    const alice = await connect(KEYS.alice);
    const carol = await connect(KEYS.carol);
    const a = (await alice.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 10 } })).structuredContent as { tier: string };
    const c = (await carol.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 10 } })).structuredContent as { tier: string };
    expect([a.tier, c.tier]).toEqual(['economy', 'standard']);
  });

  it('lowers max_tokens to what the budget can still pay for instead of refusing', async () => {
    gw = await startTestGateway(basicPolicy({ userTokens: 1000, tierDownBelow: 1 }));
    const prompt = Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    const estimate = demoInputTokens({ messages: [{ role: 'user', content: prompt }] });
    await precharge(gw, KEYS.alice, 1000 - estimate - 20); // room for the input (the demo provider's exact count, made because the bound does not fit) and 20 output tokens
    const alice = await connect(KEYS.alice);
    const r = (await alice.callTool({ name: 'complete', arguments: { prompt, max_tokens: 500 } })).structuredContent as {
      usage: { outputTokens: number };
      decision: { effect: string; reason: string };
    };
    expect(r.usage.outputTokens).toBe(20);
    expect(r.decision).toMatchObject({ effect: 'allow', reason: 'within policy and budget; max_tokens lowered to 20, all that budget user-weekly can pay for' });
    expect(gw.events.at(-1)).toMatchObject({ 'tollgate.output_clamp': { max_tokens: 20, budget: 'user-weekly' }, 'gen_ai.request.max_tokens': 500 });
  });

  it('refuses rather than clamp below limits.minOutputTokens', async () => {
    gw = await startTestGateway(basicPolicy({ userTokens: 1000, tierDownBelow: 1 }));
    await precharge(gw, KEYS.alice, 1000 - demoInputTokens({ messages: [{ role: 'user', content: 'hi' }] }) - 15); // room for 15 output tokens, under the default 16
    const alice = await connect(KEYS.alice);
    const e = errorOf(await alice.callTool({ name: 'complete', arguments: { prompt: 'hi', max_tokens: 500 } }));
    expect(e.code).toBe('BUDGET_EXHAUSTED');
    expect(e.details).toMatchObject({ budgetId: 'user-weekly', remaining: demoInputTokens({ messages: [{ role: 'user', content: 'hi' }] }) + 15, requested: demoInputTokens({ messages: [{ role: 'user', content: 'hi' }] }) + 500 });
  });
});
