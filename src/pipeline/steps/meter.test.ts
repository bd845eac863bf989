/**
 * The meter step alone. Reads: the whole context once the steps below are done (through the
 * decision event), purpose, settling. Writes: error. Calls next once; emits exactly one event for a
 * completion and one for a refused edge authentication; rethrows what it caught as a GatewayError.
 */
import { describe, expect, it } from 'vitest';
import { basicPolicy } from '../../../test/fixtures/policies.js';
import { callContext, capturingLogger, NOW, recordingNext, refusal, testPolicy } from '../../../test/helpers/callContext.js';
import { GatewayError } from '../../errors.js';
import { memorySink } from '../../metering/sink.js';
import { meter } from './meter.js';

const policy = testPolicy(basicPolicy());

/** The meter step with an in-memory sink, a clock the test moves, and the background work it hands over. */
function metered() {
  const sink = memorySink();
  const background: Promise<void>[] = [];
  let now = NOW;
  const step = meter({ sink, now: () => now, background: (work) => void background.push(work) });
  return { step, events: sink.events, background, setNow: (t: number) => void (now = t) };
}

describe('meter step', () => {
  it('calls next once and, after it returns, emits one event with what the steps below left in the context', async () => {
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

  it('records a refusal from below on the context, emits one refused event and rethrows the very same error', async () => {
    const m = metered();
    const ctx = callContext(policy);
    const denied = new GatewayError('POLICY_DENIED', 'Contractors may use standard and economy models only.', { ruleId: 'contractors-no-premium' });

    const thrown = await m.step(ctx, recordingNext(undefined, () => Promise.reject(denied))).catch((e: unknown) => e);

    expect(thrown).toBe(denied);
    expect(ctx.error).toBe(denied);
    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ outcome: 'refused', 'error.code': 'POLICY_DENIED', reason: 'Contractors may use standard and economy models only.' });
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

  it('emits nothing for an edge authentication that succeeds', async () => {
    const m = metered();
    const next = recordingNext();
    await m.step(callContext(policy, { purpose: 'authenticate' }), next);
    expect(next.calls).toHaveLength(1);
    expect(m.events).toEqual([]);
  });

  it('emits one event for an edge authentication that is refused, naming the kind and a short fingerprint (sha256 prefix) of what was presented', async () => {
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

  it('waits for the ledger write still running (ctx.settling) before it emits, so the event shows its outcome, and keeps the latency the caller saw', async () => {
    const m = metered();
    const ctx = callContext(policy);
    let written!: () => void;
    const writing = new Promise<void>((resolve) => (written = resolve));
    await m.step(
      ctx,
      recordingNext(undefined, () => {
        ctx.settling = writing.then(() => void (ctx.storeError = 'settle_failed'));
        m.setNow(NOW + 80);
      }),
    );

    expect(m.events).toEqual([]);
    expect(m.background).toHaveLength(1);
    m.setNow(NOW + 5_000);
    written();
    await m.background[0];

    expect(m.events).toHaveLength(1);
    expect(m.events[0]).toMatchObject({ 'tollgate.latency_ms': 80, 'tollgate.store_error': 'settle_failed' });
  });
});
