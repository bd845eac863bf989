import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ANSWER_GRACE_MS, idleGuard } from '../../src/providers/fetchSdk.js';

/**
 * The guard that aborts a stream gone quiet midway (a stalled stream would otherwise hold its
 * reservation). Fake timers and a fake performance.now: the times are exact, the test never waits.
 */
describe('idleGuard', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('does not fire while chunks keep coming, however long the stream', () => {
    const idle = idleGuard(1_000, undefined);
    idle.touch();
    for (let i = 0; i < 50; i++) {
      vi.advanceTimersByTime(900);
      idle.touch();
    }
    expect(idle.signal.aborted).toBe(false);
    expect(idle.fired).toBe(false);
    idle.stop();
  });

  it('fires once nothing has come for its time, and not before', () => {
    const idle = idleGuard(1_000, undefined);
    idle.touch();
    vi.advanceTimersByTime(600);
    idle.touch();
    vi.advanceTimersByTime(999);
    expect(idle.signal.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(idle.signal.aborted).toBe(true);
    expect(idle.fired).toBe(true);
  });

  it("forwards the caller's abort with its reason, which is not the guard firing", () => {
    const caller = new AbortController();
    const idle = idleGuard(1_000, caller.signal);
    idle.touch();
    const reason = new Error('left');
    caller.abort(reason);
    expect(idle.signal.aborted).toBe(true);
    expect(idle.signal.reason).toBe(reason);
    expect(idle.fired).toBe(false);
    idle.stop();
  });

  it("waits ANSWER_GRACE_MS and the next poll before forwarding an abort that comes before the stream's head was read", () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'performance'] });
    const caller = new AbortController();
    const idle = idleGuard(1_000, caller.signal);
    caller.abort();
    expect(idle.signal.aborted).toBe(false);
    vi.advanceTimersByTime(ANSWER_GRACE_MS);
    vi.runOnlyPendingTimers();
    expect(idle.signal.aborted).toBe(true);
    expect(idle.fired).toBe(false);
    idle.stop();
  });

  it('starts aborted when the caller had already left', () => {
    const caller = new AbortController();
    caller.abort();
    const idle = idleGuard(1_000, caller.signal);
    expect(idle.signal.aborted).toBe(true);
    expect(idle.fired).toBe(false);
  });

  it('once stopped, neither its timer nor the caller reaches it', () => {
    const caller = new AbortController();
    const idle = idleGuard(1_000, caller.signal);
    idle.touch();
    idle.stop();
    vi.advanceTimersByTime(5_000);
    caller.abort();
    expect(idle.signal.aborted).toBe(false);
    expect(idle.fired).toBe(false);
  });
});
