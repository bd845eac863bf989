/**
 * What every MCP transport must do, written once and run over streamable HTTP and over stdio with
 * the official MCP client. Each transport gets a fresh gateway with `contractPolicy()`.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicPolicy, KEYS } from '../fixtures/policies.js';

/** 1,000 tokens a week per user; under 50% left, one tier down. */
export const contractPolicy = () => basicPolicy({ userTokens: 1000, tierDownBelow: 50 });

export interface TransportHarness {
  /** Connects a client for the given API key to a gateway started with contractPolicy(). */
  connect(key: string): Promise<Client>;
  close(): Promise<void>;
}

type ToolResult = Awaited<ReturnType<Client['callTool']>>;

function errorOf(r: ToolResult): { code: string; message: string; details: Record<string, unknown> } {
  expect(r.isError).toBe(true);
  return (r._meta as Record<string, { code: string; message: string; details: Record<string, unknown> }>)['io.tollgate/error']!;
}

const LONG = 'x'.repeat(1600); // the demo provider counts 400 input tokens for it

export function mcpContract(name: string, start: () => Promise<TransportHarness>): void {
  describe(`MCP over ${name}`, () => {
    let h: TransportHarness;
    let alice: Client;
    let bob: Client;

    beforeAll(async () => {
      h = await start();
      alice = await h.connect(KEYS.alice);
      bob = await h.connect(KEYS.bob);
    });
    afterAll(async () => {
      await alice?.close();
      await bob?.close();
      await h?.close();
    });

    it('lists complete, list_models and my_budget with input and output schemas', async () => {
      const { tools } = await alice.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual(['complete', 'estimate', 'list_models', 'my_budget']);
      const complete = tools.find((t) => t.name === 'complete')!;
      expect(Object.keys(complete.inputSchema.properties ?? {}).sort()).toEqual(['max_tokens', 'messages', 'model', 'prompt', 'system', 'temperature', 'tier']);
      expect(complete.outputSchema?.type).toBe('object');
    });

    it('serves a call on the default tier and charges exactly the usage the provider reported', async () => {
      const r = await alice.callTool({ name: 'complete', arguments: { prompt: LONG, max_tokens: 10 } });
      expect(r.isError).toBeFalsy();
      const s = r.structuredContent as Record<string, unknown>;
      expect(s.model).toBe('demo/medium');
      expect(s.tier).toBe('standard');
      expect(s.usage).toEqual({ inputTokens: 400, outputTokens: 4 });
      expect(s.costUsd).toBe((400 * 3 + 4 * 15) / 1e6);
      expect((s.decision as { effect: string }).effect).toBe('allow');
      expect(s.budgets).toEqual([expect.objectContaining({ id: 'user-weekly', subject: 'alice', used: 404, remaining: 596, unit: 'tokens' })]);
      const b = await alice.callTool({ name: 'my_budget', arguments: {} });
      expect((b.structuredContent as { budgets: unknown[] }).budgets).toEqual([
        expect.objectContaining({ id: 'user-weekly', used: 404, reserved: 0, remaining: 596, limit: 1000 }),
      ]);
    });

    it('steps down one tier once a budget is under its threshold, and says so', async () => {
      await alice.callTool({ name: 'complete', arguments: { prompt: LONG, max_tokens: 10 } }); // used 808: 19.2% left
      const r = await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 10 } });
      const s = r.structuredContent as { model: string; tier: string; decision: Record<string, unknown> };
      expect(s.model).toBe('demo/small');
      expect(s.tier).toBe('economy');
      expect(s.decision).toMatchObject({ effect: 'tier_down', requestedTier: 'standard', tier: 'economy', budgetId: 'user-weekly' });
      expect(s.decision.reason).toContain('19.2% left');
    });

    it('denies a call the remaining budget cannot cover, naming the budget and its reset, and reserves nothing', async () => {
      const r = await alice.callTool({ name: 'complete', arguments: { prompt: LONG, max_tokens: 10 } });
      const e = errorOf(r);
      expect(e.code).toBe('BUDGET_EXHAUSTED');
      expect(e.details).toMatchObject({ budgetId: 'user-weekly', subject: 'alice', remaining: 186, requested: 410 }); // the demo provider's exact input count (the bound does not fit) + 10 output tokens
      expect(e.details.resetsAt).toMatch(/^\d{4}-\d{2}-\d{2}T2[23]:00:00\.000Z$/); // Monday 00:00 in Paris
      expect((r.content as { text: string }[])[0]!.text).toMatch(/^BUDGET_EXHAUSTED: Budget user-weekly/);
      const b = await alice.callTool({ name: 'my_budget', arguments: {} });
      expect((b.structuredContent as { budgets: unknown[] }).budgets).toEqual([expect.objectContaining({ used: 814, reserved: 0 })]);
    });

    it('denies a contractor asking for premium with the rule id and its message', async () => {
      const r = await bob.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'premium' } });
      const e = errorOf(r);
      expect(e).toEqual({
        code: 'POLICY_DENIED',
        message: 'Contractors may use standard and economy models only.',
        details: { ruleId: 'contractors-no-premium' },
      });
    });

    it('shows a contractor that premium is not available in list_models', async () => {
      const r = await bob.callTool({ name: 'list_models', arguments: {} });
      const tiers = (r.structuredContent as { tiers: { tier: string; allowed: boolean }[] }).tiers;
      expect(tiers.map((t) => [t.tier, t.allowed])).toEqual([
        ['premium', false],
        ['standard', true],
        ['economy', true],
      ]);
    });

    it.each([
      [{}, 'INVALID_REQUEST', 'give messages or prompt'],
      [{ messages: [] }, 'INVALID_REQUEST', 'messages'],
      [{ prompt: 'hi', max_tokens: 0 }, 'INVALID_REQUEST', 'max_tokens'],
      [{ prompt: 'hi', max_tokens: 10_000_000 }, 'INVALID_REQUEST', 'exceeds the gateway ceiling of 32768'],
      [{ prompt: 'hi', max_tokens: 'lots' }, 'INVALID_REQUEST', 'max_tokens'],
      [{ prompt: 'hi', model: 'demo/huge' }, 'UNKNOWN_MODEL', 'Model "demo/huge" is not configured'],
      [{ prompt: 'hi', tier: 'platinum' }, 'UNKNOWN_MODEL', 'Tier "platinum" is not configured'],
    ])('refuses bad arguments %j with %s', async (args, code, text) => {
      const e = errorOf(await bob.callTool({ name: 'complete', arguments: args }));
      expect(e.code).toBe(code);
      expect(e.message).toContain(text);
    });

    it('charges nothing for refused calls', async () => {
      const b = await bob.callTool({ name: 'my_budget', arguments: {} });
      expect((b.structuredContent as { budgets: unknown[] }).budgets).toEqual([expect.objectContaining({ subject: 'bob', used: 0, reserved: 0 })]);
    });

    it('estimates a refusal by rule as the answer, not as an error', async () => {
      const r = await bob.callTool({ name: 'estimate', arguments: { prompt: 'hi', tier: 'premium' } });
      expect(r.isError).toBeFalsy();
      const s = r.structuredContent as { decision: Record<string, unknown>; model?: string; costUsd?: unknown };
      expect(s.decision).toEqual({ effect: 'deny', code: 'POLICY_DENIED', requestedTier: 'premium', ruleId: 'contractors-no-premium', reason: 'Contractors may use standard and economy models only.' });
      expect([s.model, s.costUsd]).toEqual([undefined, undefined]);
      expect((r.content as { text: string }[])[0]!.text).toBe('Would be refused (POLICY_DENIED): Contractors may use standard and economy models only.');
    });

    it('estimates what the complete that follows gets, reserves nothing and charges nothing', async () => {
      const r = await bob.callTool({ name: 'estimate', arguments: { prompt: LONG, max_tokens: 10 } });
      const e = r.structuredContent as {
        decision: Record<string, unknown>;
        model: string;
        models: string[];
        maxTokens: number;
        inputTokens: { bound: number; counted: unknown[] };
        costUsd: { min: number; max: number };
        budgets: Record<string, unknown>[];
      };
      expect(e.decision).toEqual({ effect: 'allow', requestedTier: 'standard', tier: 'standard', reason: 'within policy and budget' });
      expect([e.model, e.models, e.maxTokens]).toEqual(['demo/medium', ['demo/medium'], 10]);
      // The bound does not fit 1,000 tokens, so the input is counted exactly for every model that could serve, as the call will count it.
      expect(e.inputTokens.counted).toEqual([{ model: 'demo/medium', tokens: 400 }, { model: 'demo/small', tokens: 400 }]);
      expect(e.costUsd).toEqual({ min: (400 * 3) / 1e6, max: (400 * 3 + 10 * 15) / 1e6 });
      expect(e.budgets).toEqual([expect.objectContaining({ id: 'user-weekly', subject: 'bob', used: 0, reserved: 0, remaining: 1000, reservation: 410, remainingAfter: 590 })]);
      const b = await bob.callTool({ name: 'my_budget', arguments: {} });
      expect((b.structuredContent as { budgets: unknown[] }).budgets).toEqual([expect.objectContaining({ used: 0, reserved: 0 })]);

      const c = (await bob.callTool({ name: 'complete', arguments: { prompt: LONG, max_tokens: 10 } })).structuredContent as { model: string; tier: string; costUsd: number; decision: { effect: string } };
      expect([c.decision.effect, c.tier, c.model]).toEqual(['allow', 'standard', 'demo/medium']);
      expect(c.costUsd).toBeGreaterThanOrEqual(e.costUsd.min);
      expect(c.costUsd).toBeLessThanOrEqual(e.costUsd.max);
    });
  });
}
