/**
 * The estimate step alone, with the real adapters (built from the policy as the gateway builds
 * them): OpenAI figures locally, Anthropic through the fake's count_tokens. Each context is first
 * filled in by the real decide step over a real ledger. Reads: decision, budgets, lines,
 * estimatedInputTokens, request. Writes: inputTokens (a figure per model ref) and inputCounted
 * (the refs whose figure is an exact count). Calls next once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha } from '../../../test/fixtures/policies.js';
import { callContext, capturingLogger, clock, recordingNext, testLedger, testPolicy } from '../../../test/helpers/callContext.js';
import { keyPrincipal } from '../../../test/helpers/principal.js';
import { startFakeAnthropic } from '../../../tools/fake-providers/anthropic.js';
import type { FakeProviderServer } from '../../../tools/fake-providers/types.js';
import { buildProviders } from '../../gateway/policyRuntime.js';
import type { Policy } from '../../policy/load.js';
import { countOpenAIInput } from '../../providers/estimate.js';
import { MemoryQuotaStore } from '../../quota/memory.js';
import type { CallContext } from '../context.js';
import { enforcePolicy } from './decide.js';
import { estimateInput } from './estimate.js';

const KEY = 'key-estimate';
const PROSE = 'The committee reviewed the quarterly figures and agreed to postpone the decision until the audit is complete. '.repeat(20);

const policyText = (anthropic: FakeProviderServer, limit: number, counting: { anthropic: string; openai: string }) => `
version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "http://127.0.0.1:9/v1", countTokens: ${counting.openai} }
  anthropic: { kind: anthropic, apiKey: sk-ant-test, baseUrl: "${anthropic.url}", countTokens: ${counting.anthropic} }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
  anthropic/claude-sonnet-5-5: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  openai: [openai/gpt-5-mini]
  anthropic: [anthropic/claude-sonnet-5-5]
apiKeys:
  - { id: est, sha256: ${sha(KEY)}, user: ada }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: ${limit} }
`;

describe('estimate step', () => {
  let anthropic: FakeProviderServer;
  beforeAll(async () => {
    anthropic = await startFakeAnthropic({ billing: 'bpe' });
  });
  afterAll(() => anthropic.close());

  /** A context as the decide step leaves it for a call to `model` with PROSE, then the estimate step run over it. */
  async function estimated(policy: Policy, model: string): Promise<{ ctx: CallContext; lines: Record<string, unknown>[]; nextCalls: number }> {
    const { log, lines } = capturingLogger();
    const ledger = testLedger(new MemoryQuotaStore(clock));
    const ctx = callContext(policy, { principal: keyPrincipal({ policy }, KEY), request: { model, messages: [{ role: 'user', content: PROSE }], maxTokens: 100 }, log });
    await enforcePolicy({ ledger, now: clock })(ctx, async () => {});
    const providers = buildProviders(policy);
    const next = recordingNext();
    await estimateInput({ providerFor: (_p, name) => providers.get(name) })(ctx, next);
    return { ctx, lines, nextCalls: next.calls.length };
  }

  it("takes OpenAI's vocabulary bound on a roomy budget ('always'), counts nothing, and calls next", async () => {
    const before = anthropic.requests.length;
    const { ctx, nextCalls } = await estimated(testPolicy(policyText(anthropic, 1_000_000, { anthropic: 'false', openai: "'always'" })), 'openai/gpt-5-mini');
    const exact = await countOpenAIInput({ messages: [{ content: PROSE }] }, 'gpt-5-mini');
    expect(ctx.estimatedInputTokens).toBe(Buffer.byteLength(PROSE) + 8 + 16);
    expect(ctx.inputTokens).toEqual(new Map([['openai/gpt-5-mini', exact]]));
    expect(ctx.inputCounted).toEqual(new Set());
    expect(anthropic.requests.length).toBe(before);
    expect(nextCalls).toBe(1);
  });

  it("counts an Anthropic model through count_tokens on a roomy budget with 'always', once", async () => {
    const before = anthropic.requests.length;
    const { ctx } = await estimated(testPolicy(policyText(anthropic, 1_000_000, { anthropic: "'always'", openai: "'always'" })), 'anthropic/claude-sonnet-5-5');
    expect(anthropic.requests.slice(before).map((r) => r.path)).toEqual(['/v1/messages/count_tokens']);
    const counted = ctx.inputTokens?.get('anthropic/claude-sonnet-5-5');
    expect(counted).toBeLessThan(ctx.estimatedInputTokens / 4);
    expect(ctx.inputCounted).toEqual(new Set(['anthropic/claude-sonnet-5-5']));
  });

  it('leaves the bound alone on a roomy budget when counting is only for a bound that does not fit (true)', async () => {
    const before = anthropic.requests.length;
    const { ctx } = await estimated(testPolicy(policyText(anthropic, 1_000_000, { anthropic: 'true', openai: 'true' })), 'anthropic/claude-sonnet-5-5');
    expect(ctx.inputTokens).toBeUndefined();
    expect(anthropic.requests.length).toBe(before);
  });

  it('counts exactly when the figures do not fit: every model of the decided tier and of the tiers below it', async () => {
    const before = anthropic.requests.length;
    // About 2,200 bytes of prose, about 400 tokens: the bound does not fit 600, a count does.
    // OpenAI's tier comes first, so the call may fall back to Anthropic's.
    const { ctx } = await estimated(testPolicy(policyText(anthropic, 600, { anthropic: 'true', openai: 'true' })), 'openai/gpt-5-mini');
    expect(anthropic.requests.slice(before).map((r) => r.path)).toEqual(['/v1/messages/count_tokens']);
    expect([...(ctx.inputCounted ?? [])].sort()).toEqual(['anthropic/claude-sonnet-5-5', 'openai/gpt-5-mini']);
  });

  it('keeps the bound and logs when a count fails, without asking the same provider again', async () => {
    const before = anthropic.requests.length;
    anthropic.failNext({ kind: 'status', status: 500 });
    const { ctx, lines, nextCalls } = await estimated(testPolicy(policyText(anthropic, 600, { anthropic: "'always'", openai: 'false' })), 'anthropic/claude-sonnet-5-5');
    expect(anthropic.requests.length - before).toBe(1);
    expect(ctx.inputTokens).toBeUndefined();
    expect(lines.filter((l) => l.event === 'count_tokens_failed').map((l) => l.model)).toEqual(['anthropic/claude-sonnet-5-5']);
    expect(nextCalls).toBe(1);
  });
});
