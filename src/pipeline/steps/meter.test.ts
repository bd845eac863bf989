/**
 * The meter step alone, committing through a real Ledger over a MemoryQuotaStore whose committed
 * decision events the test listens to. Reads: the whole context once the steps below are done
 * (through the decision event), purpose, reservation (and the store holding it), charged, and
 * limits.settleBeforeReply. Writes: error; the journal write of the call (the event alone, or the
 * charge or release with its event). Calls next once; commits exactly one event for a completion
 * and one for a refused edge authentication; rethrows what it caught as a GatewayError.
 */
import { describe, expect, it } from 'vitest';
import { basicPolicy, KEYS } from '../../../test/fixtures/policies.js';
import { callContext, capturingLogger, NOW, recordingNext, refusal, testLedger, testPolicy, withLimits } from '../../../test/helpers/callContext.js';
import { keyPrincipal } from '../../../test/helpers/principal.js';
import { GatewayError } from '../../errors.js';
import type { Policy } from '../../policy/load.js';
import { MemoryQuotaStore } from '../../quota/memory.js';
import type { DecisionRecord } from '../../quota/store.js';
import { compose } from '../compose.js';
import type { CallContext } from '../context.js';
import { enforcePolicy } from './decide.js';
import { meter } from './meter.js';
import { reserveAndSettle } from './reserve.js';

const policy = testPolicy(basicPolicy());
const alice = keyPrincipal({ policy }, KEYS.alice);

/** The meter step as the gateway builds it, committing through a real ledger; the test moves the clock and sees the work handed to the background. */
function metered() {
  let now = NOW;
  const clock = () => now;
  const store = new MemoryQuotaStore(clock);
  const ledger = testLedger(store, clock);
  const events: DecisionRecord[] = [];
  store.onEvent((event) => events.push(event));
  const background: Promise<void>[] = [];
  const step = meter({ commit: (ctx, event, settled) => ledger.commit(ctx, event, settled), now: clock, background: (work) => void background.push(work) });
  /** The steps below the meter as the pipeline runs them: decide and reserve, then `served` (what dispatch would leave). */
  const below = (ctx: CallContext, served: () => void = () => {}) =>
    compose<CallContext>([enforcePolicy({ ledger, now: clock }), reserveAndSettle({ ledger, providerFor: () => undefined }), async () => served()])(ctx);
  const held = (p: Policy = policy) => store.read(ledger.linesFor(p, alice).map((l) => l.line));
  return { step, events, background, below, held, setNow: (t: number) => void (now = t) };
}

const ask = { messages: [{ role: 'user' as const, content: 'Summarise the report' }], maxTokens: 200 };

describe('meter step', () => {
  it('calls next once and, after it returns, commits one event with what the steps below left in the context', async () => {
    const m = metered();
    const ctx = callContext(policy);
    const next = recordingNext(
      () => m.events.length,
      () => {
        ctx.usage = { inputTokens: 12, outputTokens: 30 };
        ctx.costMicroUsd = 486;
        m.setNow(NOW + 250);
      },
    );
    await m.step(ctx, next);

    expect(next.calls).toEqual([0]);
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({
      event: 'tollgate.decision',
      'request.id': 'call-1',
      transport: 'http',
      time: '2025-01-15T12:00:00.000Z',
      outcome: 'success',
      'error.code': undefined,
      'gen_ai.usage.input_tokens': 12,
      'gen_ai.usage.output_tokens': 30,
      'tollgate.cost_usd': 0.000486,
      'tollgate.latency_ms': 250,
    });
    expect(ctx.error).toBeUndefined();
    expect(m.background).toEqual([]);
  });

  it('records a refusal from below on the context, commits one refused event before it rethrows the very same error', async () => {
    const m = metered();
    const ctx = callContext(policy);
    const denied = new GatewayError('POLICY_DENIED', 'Contractors may use standard and economy models only.', { ruleId: 'contractors-no-premium' });

    const thrown = await m.step(ctx, recordingNext(undefined, () => Promise.reject(denied))).catch((e: unknown) => e);

    expect(thrown).toBe(denied);
    expect(ctx.error).toBe(denied);
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'refused', 'error.code': 'POLICY_DENIED', reason: 'Contractors may use standard and economy models only.' });
    expect(m.background).toEqual([]);
  });

  it('turns an error that is not a GatewayError into INTERNAL, logs the original, and keeps its text out of the answer and the event', async () => {
    const m = metered();
    const { log, lines } = capturingLogger();
    const ctx = callContext(policy, { log });
    const bug = new TypeError('cannot read properties of undefined (reading "secret")');

    const thrown = await m.step(ctx, recordingNext(undefined, () => Promise.reject(bug))).catch((e: unknown) => e);

    expect(thrown).toBeInstanceOf(GatewayError);
    expect((thrown as GatewayError).toJSON()).toEqual({ code: 'INTERNAL', message: 'Internal error in tollgate; see the gateway log.', details: {} });
    expect((thrown as GatewayError).cause).toBe(bug);
    expect(ctx.error).toBe(thrown);
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'failed', 'error.code': 'INTERNAL', reason: 'Internal error in tollgate; see the gateway log.' });
    expect(lines.map((l) => ({ level: l.level, msg: l.msg, err: (l.err as { message: string }).message }))).toEqual([
      { level: 50, msg: 'internal error', err: 'cannot read properties of undefined (reading "secret")' },
    ]);
  });

  it('records an INTERNAL refusal handed in whose fault is in the log already (the A2A SDK\'s 500), without logging it again', async () => {
    const m = metered();
    const { log, lines } = capturingLogger();
    const answered = new GatewayError('INTERNAL', 'Refused by the A2A endpoint: JSON-RPC -32603: boom');
    const ctx = callContext(policy, { log, args: { raw: undefined, rejected: answered, rejectedLogged: true } });

    const thrown = await m.step(ctx, recordingNext(undefined, () => Promise.reject(answered))).catch((e: unknown) => e);

    expect(thrown).toBe(answered);
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'failed', 'error.code': 'INTERNAL', reason: 'Refused by the A2A endpoint: JSON-RPC -32603: boom' });
    expect(lines).toEqual([]);
  });

  it('logs an INTERNAL refusal handed in that no one logged, and an INTERNAL error from below one that was', async () => {
    const m = metered();
    const answered = new GatewayError('INTERNAL', 'Refused by the A2A endpoint: JSON-RPC -32603: boom');
    const unlogged = capturingLogger();
    await m.step(callContext(policy, { log: unlogged.log, args: { raw: undefined, rejected: answered } }), recordingNext(undefined, () => Promise.reject(answered))).catch(() => undefined);
    const other = capturingLogger();
    const bug = new TypeError('x is undefined');
    await m.step(callContext(policy, { log: other.log, args: { raw: undefined, rejected: answered, rejectedLogged: true } }), recordingNext(undefined, () => Promise.reject(bug))).catch(() => undefined);

    expect(unlogged.lines.map((l) => [l.level, l.msg, (l.err as { message: string }).message])).toEqual([[50, 'internal error', 'Refused by the A2A endpoint: JSON-RPC -32603: boom']]);
    expect(other.lines.map((l) => [l.level, l.msg, (l.err as { message: string }).message])).toEqual([[50, 'internal error', 'x is undefined']]);
    expect(m.events.map((e) => e['error.code'])).toEqual(['INTERNAL', 'INTERNAL']);
  });

  it('commits nothing for an edge authentication that succeeds', async () => {
    const m = metered();
    const next = recordingNext();
    await m.step(callContext(policy, { purpose: 'authenticate' }), next);
    expect(next.calls).toHaveLength(1);
    expect(m.events).toEqual([]);
  });

  it('commits one event for an edge authentication that is refused, naming the kind and a short fingerprint (sha256 prefix) of what was presented', async () => {
    const m = metered();
    const ctx = callContext(policy, { purpose: 'authenticate', credential: { secret: 'key-nobody' } });
    const refused = new GatewayError('AUTH_INVALID', 'The API key is not recognised (unknown, revoked or disabled).');

    expect(await refusal(m.step(ctx, recordingNext(undefined, () => Promise.reject(refused))))).toEqual({
      code: 'AUTH_INVALID',
      message: 'The API key is not recognised (unknown, revoked or disabled).',
      details: {},
    });
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({
      outcome: 'refused',
      'error.code': 'AUTH_INVALID',
      'user.id': undefined,
      'auth.credential.kind': 'api_key',
      'auth.credential.fingerprint': '716fbdb08eac',
    });
  });

  it('answers a call that holds a reservation before its journal write (settleBeforeReply false), which then charges it and commits its event together', async () => {
    const m = metered();
    const ctx = callContext(policy, { principal: alice, request: ask });
    await m.step(ctx, recordingNext(undefined, () => m.below(ctx, () => void (ctx.usage = { inputTokens: 6, outputTokens: 40 }))));

    expect(m.background).toHaveLength(1);
    await m.background[0];
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'success', 'tollgate.charged': [{ budget: 'user-weekly', subject: 'alice', amount: 46, unit: 'tokens' }] });
    expect(await m.held()).toEqual([{ used: 46, reserved: 0 }]);
  });

  it('writes the charge and the event before it answers when the policy sets settleBeforeReply', async () => {
    const m = metered();
    const strict = testPolicy(withLimits(basicPolicy(), { settleBeforeReply: true }));
    const ctx = callContext(strict, { principal: alice, request: ask });
    await m.step(ctx, recordingNext(undefined, () => m.below(ctx, () => void (ctx.usage = { inputTokens: 6, outputTokens: 40 }))));

    expect(m.background).toEqual([]);
    expect(m.events).toHaveLength(1);
    expect(await m.held(strict)).toEqual([{ used: 46, reserved: 0 }]);
  });

  it('releases the reservation with the event when the steps below consumed nothing', async () => {
    const m = metered();
    const ctx = callContext(policy, { principal: alice, request: ask });
    await m.step(ctx, recordingNext(undefined, () => m.below(ctx)));
    await Promise.all(m.background);

    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'success', 'tollgate.charged': undefined });
    expect(await m.held()).toEqual([{ used: 0, reserved: 0 }]);
  });

  it('commits a refusal made before anything was reserved before the caller hears of it, even when calls answer before their write', async () => {
    const m = metered();
    const ctx = callContext(policy, { principal: alice, request: { ...ask, model: 'demo/huge' } });
    expect((await refusal(m.step(ctx, recordingNext(undefined, () => m.below(ctx))))).code).toBe('UNKNOWN_MODEL');

    expect(m.background).toEqual([]);
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'failed', 'error.code': 'UNKNOWN_MODEL' });
  });
});
