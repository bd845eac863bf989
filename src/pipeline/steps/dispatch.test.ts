/**
 * The dispatch step alone, in front of the real demo provider and the real OpenAI adapter talking
 * to the fake OpenAI server (tools/fake-providers). Each context is first filled in by the real
 * decide and reserve steps, over a real ledger. Reads: decision (the candidates of the reserved
 * tier), reservation, request, outputClamp, signal, onText, policy. Writes: the dispatch mark on
 * the reservation (before any byte leaves), attempts, usage, served, costMicroUsd, upstreamMs. The
 * last step: never calls next. Fails over on PROVIDER_UNAVAILABLE until text has reached the
 * caller; throws CANCELLED when the caller aborted.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KEYS, sha } from '../../../test/fixtures/policies.js';
import { callContext, clock, recordingNext, refusal, testLedger, testPolicy } from '../../../test/helpers/callContext.js';
import { keyPrincipal } from '../../../test/helpers/principal.js';
import { startFakeOpenAI } from '../../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../../tools/fake-providers/types.js';
import type { CompletionInput } from '../../call/request.js';
import type { Policy } from '../../policy/load.js';
import type { Provider } from '../../providers/provider.js';
import { createProvider } from '../../providers/registry.js';
import { MemoryQuotaStore } from '../../quota/memory.js';
import { compose } from '../compose.js';
import type { CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { enforcePolicy } from './decide.js';
import { dispatchToProvider } from './dispatch.js';
import { reserveAndSettle } from './reserve.js';

const PROMPT = 'Summarise the quarterly report';

function policyText(openaiUrl: string): string {
  return `
version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "${openaiUrl}", timeoutMs: 2000 }
  demo: { kind: demo }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
  openai/gpt-5-nano: { price: { inputPerMTok: 0.05, outputPerMTok: 0.4 } }
  demo/medium: { maxOutputTokens: 16 }
tiers:
  hosted: [openai/gpt-5-mini, openai/gpt-5-nano]
  standard: [openai/gpt-5-mini, demo/medium]
  economy: [demo/small]
defaultTier: standard
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: UTC }, limit: { tokens: 100000 } }
`;
}

/** The providers of a policy snapshot, built as the gateway builds them (with its egress allowlist). */
function providersOf(policy: Policy): (p: Policy, name: string) => Provider | undefined {
  const built = new Map(Object.entries(policy.config.providers).map(([name, cfg]) => [name, createProvider(name, cfg, { egressAllow: policy.config.egress.allow })]));
  return (p, name) => (p === policy ? built.get(name) : undefined);
}

describe('dispatch step', () => {
  let openai: FakeProviderServer;
  let policy: Policy;
  let dispatch: ReturnType<typeof dispatchToProvider>;
  /** The ledger and store each prepared context was reserved on. */
  const prepared = new WeakMap<CallContext, { ledger: Ledger; store: MemoryQuotaStore }>();
  /** Each time the step marked a reservation dispatched: the call, and how many requests the provider had received by then. */
  let marks: { id: string; providerRequests: number }[] = [];
  beforeAll(async () => {
    openai = await startFakeOpenAI();
    policy = testPolicy(policyText(openai.url));
    dispatch = dispatchToProvider({
      providerFor: providersOf(policy),
      dispatched: async (ctx) => {
        marks.push({ id: ctx.id, providerRequests: openai.requests.length });
        await prepared.get(ctx)!.ledger.dispatched(ctx);
      },
      now: clock,
    });
  });
  afterAll(() => openai.close());
  beforeEach(() => {
    openai.reset();
    marks = [];
  });

  const model = (ref: string) => policy.models.get(ref)!;

  /** A context as the decide and reserve steps leave it: its reservation held in a fresh store. */
  async function reserved(request: Partial<CompletionInput>, init: Partial<CallContext> = {}): Promise<CallContext> {
    const ctx = callContext(policy, {
      principal: keyPrincipal({ policy }, KEYS.alice),
      request: { messages: [{ role: 'user', content: PROMPT }], maxTokens: 50, ...request },
      ...init,
    });
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    await compose<CallContext>([enforcePolicy({ ledger, now: clock }), reserveAndSettle({ ledger, providerFor: () => undefined })])(ctx);
    prepared.set(ctx, { ledger, store });
    return ctx;
  }

  /** What the step wrote. */
  const written = (ctx: CallContext) => ({ attempts: ctx.attempts, usage: ctx.usage, served: ctx.served, costMicroUsd: ctx.costMicroUsd, upstreamMs: ctx.upstreamMs });

  it('serves the call on the first model of the reserved tier and writes what it returned, without calling next', async () => {
    const ctx = await reserved({ tier: 'economy' });
    const next = recordingNext();
    await dispatch(ctx, next);

    // The demo provider: one token per 4 characters of input (30 characters: 8), one per word of its reply.
    expect(written(ctx)).toEqual({
      attempts: [{ model: 'demo/small', provider: 'demo', ok: true, ms: 0 }],
      usage: { inputTokens: 8, outputTokens: 7 },
      served: { model: model('demo/small'), responseModel: 'small', text: '[small] You said: Summarise the quarterly report', stopReason: 'end_turn' },
      costMicroUsd: 8 * 1 + 7 * 5,
      upstreamMs: 0,
    });
    expect(next.calls).toEqual([]);
  });

  it('marks the reservation dispatched in the store once, before the request reaches the provider', async () => {
    const ctx = await reserved({});
    await dispatch(ctx, recordingNext());

    expect(marks).toEqual([{ id: 'call-1', providerRequests: 0 }]);
    expect(openai.requests).toHaveLength(1);
    const open: unknown[] = [];
    prepared.get(ctx)!.store.recover((id, r) => {
      open.push({ id, dispatched: r.dispatched });
      return {};
    });
    expect(open).toEqual([{ id: 'call-1', dispatched: true }]);
  });

  it('marks the reservation dispatched once however many models it tries', async () => {
    openai.failNext({ kind: 'status', status: 503 });
    const ctx = await reserved({});
    await dispatch(ctx, recordingNext());
    expect(ctx.attempts).toHaveLength(2);
    expect(marks).toEqual([{ id: 'call-1', providerRequests: 0 }]);
  });

  it('asks the provider for no more output tokens than the output clamp allows', async () => {
    const ctx = await reserved({ tier: 'economy' });
    ctx.outputClamp = { tokens: 3, budgetId: 'user-weekly' };
    await dispatch(ctx, recordingNext());
    expect(ctx.usage).toEqual({ inputTokens: 8, outputTokens: 3 });
    expect(ctx.served).toMatchObject({ text: '[small] You said: ', stopReason: 'max_tokens' });
  });

  it('sends the request to the upstream API as asked: model id, messages, max tokens', async () => {
    const ctx = await reserved({ system: 'Be brief.', maxTokens: 20 });
    await dispatch(ctx, recordingNext());
    expect(openai.requests).toHaveLength(1);
    expect(openai.requests[0]!.body).toMatchObject({
      model: 'gpt-5-mini',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: PROMPT },
      ],
      max_completion_tokens: 20,
      max_tokens: 20,
    });
    // The fake counts words: 2 + 4 in, 8 out ("fake openai reply to: Summarise the quarterly report").
    expect(written(ctx)).toEqual({
      attempts: [{ model: 'openai/gpt-5-mini', provider: 'openai', ok: true, ms: 0 }],
      usage: { inputTokens: 6, outputTokens: 8 },
      served: { model: model('openai/gpt-5-mini'), responseModel: 'gpt-5-mini', text: 'fake openai reply to: Summarise the quarterly report', stopReason: 'end_turn' },
      // 6 x $0.25 + 8 x $2 per million tokens = 17.5 micro-dollars, rounded up.
      costMicroUsd: 18,
      upstreamMs: 0,
    });
  });

  it('fails over to the next model of the tier on PROVIDER_UNAVAILABLE, recording both attempts', async () => {
    openai.failNext({ kind: 'status', status: 503 });
    const ctx = await reserved({});
    await dispatch(ctx, recordingNext());

    expect(ctx.attempts).toEqual([
      { model: 'openai/gpt-5-mini', provider: 'openai', ok: false, errorCode: 'PROVIDER_UNAVAILABLE', status: 503, reason: 'Provider openai failed (HTTP 503 server_error): fake fault: HTTP 503', ms: 0 },
      { model: 'demo/medium', provider: 'demo', ok: true, ms: 0 },
    ]);
    expect(ctx.served).toMatchObject({ model: model('demo/medium'), responseModel: 'medium' });
    expect(ctx.usage).toEqual({ inputTokens: 8, outputTokens: 7 });
    expect(openai.requests).toHaveLength(1);
  });

  it('does not fail over on an error another provider would not fix (PROVIDER_ERROR), and rethrows it', async () => {
    openai.failNext({ kind: 'status', status: 400 });
    const ctx = await reserved({});
    expect(await refusal(dispatch(ctx, recordingNext()))).toEqual({
      code: 'PROVIDER_ERROR',
      message: 'Provider openai failed (HTTP 400 invalid_request_error): fake fault: HTTP 400',
      details: { provider: 'openai', status: 400, upstreamType: 'invalid_request_error' },
    });
    expect(ctx.attempts.map((a) => [a.model, a.ok, a.errorCode, a.status])).toEqual([['openai/gpt-5-mini', false, 'PROVIDER_ERROR', 400]]);
    expect(ctx.served).toBeUndefined();
  });

  it('refuses with PROVIDER_UNAVAILABLE, naming the tier and every attempt, when every model of the tier fails', async () => {
    openai.failNext({ kind: 'status', status: 503 }, 2);
    const ctx = await reserved({ tier: 'hosted' });
    const err = await refusal(dispatch(ctx, recordingNext()));
    expect(err).toEqual({
      code: 'PROVIDER_UNAVAILABLE',
      message: 'Every provider for tier hosted failed; see attempts.',
      details: {
        attempts: [
          { model: 'openai/gpt-5-mini', provider: 'openai', errorCode: 'PROVIDER_UNAVAILABLE', status: 503, reason: 'Provider openai failed (HTTP 503 server_error): fake fault: HTTP 503' },
          { model: 'openai/gpt-5-nano', provider: 'openai', errorCode: 'PROVIDER_UNAVAILABLE', status: 503, reason: 'Provider openai failed (HTTP 503 server_error): fake fault: HTTP 503' },
        ],
      },
    });
    expect(ctx.served).toBeUndefined();
    expect(ctx.usage).toBeUndefined();
    expect(ctx.upstreamMs).toBe(0);
  });

  it('refuses with CANCELLED, and tries no other model, when the caller aborts while the provider answers', async () => {
    openai.failNext({ kind: 'hang' });
    const caller = new AbortController();
    const ctx = await reserved({}, { signal: caller.signal });
    const running = refusal(dispatch(ctx, recordingNext()));
    while (openai.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    caller.abort();

    expect(await running).toEqual({ code: 'CANCELLED', message: 'The call was cancelled by the caller.', details: {} });
    expect(ctx.attempts).toEqual([
      { model: 'openai/gpt-5-mini', provider: 'openai', ok: false, errorCode: 'CANCELLED', status: undefined, reason: 'The call was cancelled by the caller.', ms: 0 },
    ]);
    expect(openai.requests).toHaveLength(1);
    expect(ctx.served).toBeUndefined();
  });

  it('refuses with CANCELLED before the dispatch mark and before any provider, when the caller has already left', async () => {
    const caller = new AbortController();
    const ctx = await reserved({}, { signal: caller.signal });
    caller.abort();
    expect(await refusal(dispatch(ctx, recordingNext()))).toEqual({ code: 'CANCELLED', message: 'The call was cancelled by the caller.', details: {} });
    expect(marks).toEqual([]);
    expect(openai.counts.received).toBe(0);
    expect(ctx.attempts).toEqual([]);
    expect(ctx.usage).toBeUndefined();
  });

  it('charges the input bound and the text that arrived when the caller leaves a stream the provider reported no usage for yet', async () => {
    openai.setWordDelay(300);
    const caller = new AbortController();
    const deltas: string[] = [];
    const ctx = await reserved({}, {
      signal: caller.signal,
      onText: (d) => {
        deltas.push(d);
        caller.abort();
      },
    });
    expect((await refusal(dispatch(ctx, recordingNext()))).code).toBe('CANCELLED');
    expect(deltas).toEqual(['fake ']);
    expect(ctx.estimatedInputTokens).toBeGreaterThan(0);
    // The output's bound: one token per UTF-8 byte of 'fake '.
    expect(ctx.usage).toEqual({ inputTokens: ctx.estimatedInputTokens, outputTokens: 5 });
    expect(ctx.attempts.map((a) => [a.model, a.ok, a.errorCode])).toEqual([['openai/gpt-5-mini', false, 'CANCELLED']]);
  });

  it('serves a call whose provider had answered when the caller left, with the usage it reported', async () => {
    openai.setEndDelay(200);
    const caller = new AbortController();
    const ctx = await reserved({}, { signal: caller.signal });
    const running = dispatch(ctx, recordingNext());
    while (openai.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    caller.abort();
    await running;
    expect(ctx.served).toMatchObject({ text: 'fake openai reply to: Summarise the quarterly report' });
    expect(ctx.usage).toEqual({ inputTokens: 4, outputTokens: 8 });
    expect(openai.counts).toEqual({ received: 1, completed: 1, aborted: 0 });
  });

  it('charges a plain call whose caller left after its head and whose body was then cut its input reserved and its output cap', async () => {
    // The head and half the body arrive at once, the connection drops 100 ms later; the caller leaves in between.
    openai.failNext({ kind: 'cut', afterWords: 0 });
    const caller = new AbortController();
    const ctx = await reserved({}, { signal: caller.signal });
    const running = refusal(dispatch(ctx, recordingNext()));
    while (openai.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    caller.abort();
    expect((await running).code).toBe('CANCELLED');
    // Generated whole before its head: the bound reserved for the input (54) and the output cap (50).
    expect(ctx.usage).toEqual({ inputTokens: 54, outputTokens: 50 });
    expect(ctx.served).toBeUndefined();
  });

  it('streams text to the caller as it arrives, with the model serving it', async () => {
    const deltas: [string, string][] = [];
    const ctx = await reserved({ tier: 'economy' }, { onText: (delta, ref) => void deltas.push([delta, ref]) });
    await dispatch(ctx, recordingNext());
    expect(deltas).toEqual(['[small] ', 'You ', 'said: ', 'Summarise ', 'the ', 'quarterly ', 'report'].map((d) => [d, 'demo/small']));
    expect(ctx.served?.text).toBe('[small] You said: Summarise the quarterly report');
  });

  // Was a bug (the usage of every attempt priced at the model tried last: 162 here); the reserve step's
  // dollar lines take the same figure (chargeLines with ctx.costMicroUsd).
  it('keeps the tokens a failed attempt consumed when it fails over, priced at the model that consumed them', async () => {
    // The stream is cut before any text: the adapter charges the input reserved for the call (the bound:
    // 30 bytes + 8 + 16 framing tokens) and the call fails over to demo/medium, which reads 8 tokens and answers 7.
    // The reservation (54 + 100) covers those 54 and demo/medium's worst case (54 + its 16 output tokens).
    openai.failNext({ kind: 'cut', afterWords: 0 });
    const ctx = await reserved({ maxTokens: 100 }, { onText: () => {} });
    await dispatch(ctx, recordingNext());

    expect(ctx.attempts.map((a) => [a.model, a.ok, a.errorCode])).toEqual([
      ['openai/gpt-5-mini', false, 'PROVIDER_UNAVAILABLE'],
      ['demo/medium', true, undefined],
    ]);
    expect(ctx.usage).toEqual({ inputTokens: 62, outputTokens: 7, cachedInputTokens: 0 });
    // openai/gpt-5-mini: 54 x $0.25 = 13.5; demo/medium: 8 x $3 + 7 x $15 = 129; 142.5 micro-dollars, rounded up
    // (all 62 at demo/medium's price would be 291).
    expect(ctx.costMicroUsd).toBe(143);
  });

  it("does not fail over when the reservation cannot cover what a failed attempt consumed and the next model's worst case", async () => {
    // Reserved: 54 + 50. Consumed by the cut attempt: 54; demo/medium may take 54 + 16 more.
    openai.failNext({ kind: 'cut', afterWords: 0 });
    const ctx = await reserved({}, { onText: () => {} });
    const err = await refusal(dispatch(ctx, recordingNext()));

    expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    expect(ctx.attempts.map((a) => [a.model, a.ok, a.errorCode])).toEqual([['openai/gpt-5-mini', false, 'PROVIDER_UNAVAILABLE']]);
    expect(ctx.usage).toEqual({ inputTokens: 54, outputTokens: 0 });
    expect(ctx.served).toBeUndefined();
  });

  it('does not fail over once text has reached the caller, and keeps the tokens the cut stream consumed', async () => {
    openai.failNext({ kind: 'cut', afterWords: 2 });
    const deltas: string[] = [];
    const ctx = await reserved({}, { onText: (delta) => void deltas.push(delta) });
    const err = await refusal(dispatch(ctx, recordingNext()));

    expect(err).toEqual({
      code: 'PROVIDER_UNAVAILABLE',
      message: 'Provider openai failed (connection_lost): the connection closed mid-answer',
      details: { provider: 'openai', upstreamType: 'connection_lost', usage: { inputTokens: 54, outputTokens: 12 } },
    });
    expect(deltas.join('')).toBe('fake openai ');
    expect(ctx.attempts.map((a) => [a.model, a.ok, a.errorCode])).toEqual([['openai/gpt-5-mini', false, 'PROVIDER_UNAVAILABLE']]);
    // The stream never reported usage: the adapter charges the input reserved for the call (the
    // bound: 30 bytes + 8 + 16 framing tokens), and the output's: one token per UTF-8 byte of
    // 'fake openai ' (a delta may carry many tokens).
    expect(ctx.usage).toEqual({ inputTokens: 54, outputTokens: 12 });
    // 54 x $0.25 + 12 x $2 per million tokens = 37.5 micro-dollars, rounded up.
    expect(ctx.costMicroUsd).toBe(38);
    expect(ctx.served).toBeUndefined();
  });
});
