/**
 * Failover within the reservation. A reservation covers one attempt on whichever model of the tier
 * serves the call (the largest of their worst cases), not one attempt on each. A streamed attempt
 * whose head arrived and that then failed (a cut, a timeout after the head) is charged what it
 * consumed; failing over after it and charging the second attempt in full as well would put the
 * call, and with it the budget, past what was reserved. The pipeline fails over only while the
 * reservation still covers what was consumed plus the next model's worst case.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inputTokenBound } from '../../src/providers/estimate.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import { promptTokens, replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

type ErrorMeta = { code: string; message: string; details: Record<string, unknown> };
type Budget = { id: string; used: number; reserved: number; limit: number; remaining: number; overrun?: number };

const KEY = 'key-audit-failover';
const PROMPT = 'What did the quarterly report say';
const MAX_TOKENS = 10;
/** What admission reserves for the input: the byte bound (neither provider counts). */
const BOUND = inputTokenBound({ messages: [{ content: PROMPT }] });
/** The call's worst case on either model, and the budget: exactly one reservation. */
const RESERVED = BOUND + MAX_TOKENS;

const policy = (primary: FakeProviderServer, backup: FakeProviderServer, tpm: number) => `
version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${primary.url}", countTokens: false, timeoutMs: 5000 }
  backup: { kind: openai, apiKey: sk-test, baseUrl: "${backup.url}", countTokens: false, timeoutMs: 5000 }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
  backup/gpt-5-mini: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  standard: [openai/gpt-5-mini, backup/gpt-5-mini]
apiKeys:
  - { id: fo, sha256: ${sha(KEY)}, user: fay, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: ${RESERVED} }
rateLimits:
  - id: user-tpm
    scope: user
    tokensPerMinute: ${tpm}
`;

describe('failover never charges past the reservation', () => {
  let primary: FakeProviderServer;
  let backup: FakeProviderServer;
  let gw: TestGateway;
  let client: Client;

  const budget = async (): Promise<Budget> => ((await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: Budget[] }).budgets[0]!;
  const streamed = () => client.callTool({ name: 'complete', arguments: { prompt: PROMPT, max_tokens: MAX_TOKENS } }, undefined, { onprogress: () => {} });

  beforeAll(async () => {
    [primary, backup] = await Promise.all([startFakeOpenAI(), startFakeOpenAI()]);
  });
  afterAll(() => Promise.all([primary.close(), backup.close()]));
  beforeEach(async () => {
    primary.reset();
    backup.reset();
    gw = await startTestGateway(policy(primary, backup, RESERVED));
    client = await connectHttp(gw.mcpUrl, KEY);
  });
  afterEach(async () => {
    await client.close();
    await gw.close();
  });

  it('does not fail over after a stream cut at its head when the reservation cannot cover a second attempt, and stays within the budget', async () => {
    // The head arrives, then the socket is cut before any text: the attempt is charged the input it
    // reserved (no usage was reported). A second attempt would need the whole reservation again.
    primary.failNext({ kind: 'cut', afterWords: 0 });
    const r = await streamed();
    await gw.idle();
    const b = await budget();
    // The bound: no budget ends a call with more used than its limit.
    expect(b.used).toBeLessThanOrEqual(b.limit);
    expect(b).toMatchObject({ used: BOUND, reserved: 0, limit: RESERVED });
    expect(b.overrun).toBeUndefined();
    expect(r.isError).toBe(true);
    expect((r._meta as Record<string, ErrorMeta>)['io.tollgate/error']!.code).toBe('PROVIDER_UNAVAILABLE');
    expect(backup.counts.received).toBe(0);
    const e = gw.events.at(-1)!;
    expect(e['tollgate.charged']).toEqual([{ budget: 'user-weekly', subject: 'fay', amount: BOUND, unit: 'tokens' }]);
    expect(e['tollgate.overrun']).toBeUndefined();
  });

  it('still fails over when the failed attempt consumed nothing (an error status before any byte)', async () => {
    primary.failNext({ kind: 'status', status: 503 });
    const r = await streamed();
    expect(r.isError).toBeFalsy();
    expect((r.structuredContent as { model: string }).model).toBe('backup/gpt-5-mini');
    await gw.idle();
    const used = promptTokens(undefined, [{ content: PROMPT }]) + replyWords('openai', PROMPT, MAX_TOKENS).length;
    expect(await budget()).toMatchObject({ used, reserved: 0 });
  });
});
