/**
 * A rolling window's reset time is when its oldest counted bucket drops out: the end of the current
 * bucket. It was the end of the oldest bucket, a time already past whenever the window had more
 * than two buckets, and refusals, budget headers and `my_budget` said a spent budget had reset.
 */
import { describe, expect, it } from 'vitest';
import { resolveWindow } from '../../src/quota/windows.js';

const iso = (ms: number) => new Date(ms).toISOString();

describe('a rolling window', () => {
  it.each([
    [{ hours: 24 }, 24, '2026-12-03T10:29:00Z', '2026-12-02T11:00:00.000Z', '2026-12-03T11:00:00.000Z'],
    [{ hours: 1 }, 12, '2026-12-03T10:21:00Z', '2026-12-03T09:25:00.000Z', '2026-12-03T10:25:00.000Z'],
    [{ days: 7 }, 7, '2026-12-03T10:21:00Z', '2026-11-27T00:00:00.000Z', '2026-12-04T00:00:00.000Z'],
  ])('of %o in %i buckets at %s reads from %s and frees its oldest bucket at %s, after now', (rolling, buckets, at, oldest, resets) => {
    const now = Date.parse(at);
    const w = resolveWindow({ rolling, buckets }, now);
    expect([iso(w.readStarts[0]!), iso(w.resetsAt)]).toEqual([oldest, resets]);
    expect(w.resetsAt).toBeGreaterThan(now);
    expect(w.readStarts).toHaveLength(buckets);
  });
});
