import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { eitherSignal } from '../../src/signals.js';

describe('eitherSignal', () => {
  it('aborts with the reason of whichever source aborts first, and leaves no listener behind', () => {
    for (const first of [0, 1] as const) {
      const sources = [new AbortController(), new AbortController()];
      const either = eitherSignal(sources[0]!.signal, sources[1]!.signal);
      expect(either.aborted).toBe(false);
      let heard = 0;
      either.addEventListener('abort', () => (heard += 1));
      const reason = new Error(`source ${first}`);
      sources[first]!.abort(reason);
      expect(either.aborted).toBe(true);
      expect(either.reason).toBe(reason);
      sources[1 - first]!.abort(new Error('later'));
      expect(either.reason).toBe(reason);
      expect(heard).toBe(1);
      for (const s of sources) expect(getEventListeners(s.signal, 'abort')).toHaveLength(0);
    }
  });

  it('is an aborted source itself when one already is', () => {
    const done = AbortSignal.abort(new Error('gone'));
    const open = new AbortController().signal;
    expect(eitherSignal(done, open)).toBe(done);
    expect(eitherSignal(open, done)).toBe(done);
    expect(getEventListeners(open, 'abort')).toHaveLength(0);
  });

  it('holds one listener on each source while neither has aborted', () => {
    const a = new AbortController();
    const b = new AbortController();
    eitherSignal(a.signal, b.signal);
    expect(getEventListeners(a.signal, 'abort')).toHaveLength(1);
    expect(getEventListeners(b.signal, 'abort')).toHaveLength(1);
  });
});
