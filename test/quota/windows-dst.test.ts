/**
 * Calendar windows in a timezone whose clocks jump forward at midnight (America/Santiago on
 * 2025-09-07, America/Havana on 2025-03-09, Atlantic/Azores on 2025-03-30): that local midnight
 * never happens, so the day begins at the jump (01:00 local). The day before ends there too; a
 * window that ended an hour early left `now` outside its own window for that hour.
 */
import { describe, expect, it } from 'vitest';
import { resolveWindow } from '../../src/quota/windows.js';

const iso = (ms: number) => new Date(ms).toISOString();

describe('a calendar day in a timezone whose clocks jump forward at midnight', () => {
  it.each([
    ['America/Santiago', '2025-09-07T03:30:00Z', '2025-09-06T04:00:00.000Z', '2025-09-07T04:00:00.000Z'],
    ['America/Havana', '2025-03-09T04:30:00Z', '2025-03-08T05:00:00.000Z', '2025-03-09T05:00:00.000Z'],
    ['Atlantic/Azores', '2025-03-30T00:30:00Z', '2025-03-29T01:00:00.000Z', '2025-03-30T01:00:00.000Z'],
  ])('in %s, the day before the jump ends at the jump, and holds its last hour', (timezone, at, start, end) => {
    const now = Date.parse(at);
    const w = resolveWindow({ calendar: 'day', timezone }, now);
    expect([iso(w.start), iso(w.resetsAt)]).toEqual([start, end]);
    expect(w.start <= now && now < w.resetsAt).toBe(true);
  });

  it('starts the day of the jump at the jump, and the month around it at its own midnight', () => {
    const now = Date.parse('2025-09-07T12:00:00Z');
    expect(iso(resolveWindow({ calendar: 'day', timezone: 'America/Santiago' }, now).start)).toBe('2025-09-07T04:00:00.000Z');
    expect(iso(resolveWindow({ calendar: 'month', timezone: 'America/Santiago' }, now).start)).toBe('2025-09-01T04:00:00.000Z');
  });

  it('leaves an ordinary midnight where it was', () => {
    const w = resolveWindow({ calendar: 'day', timezone: 'Europe/Paris' }, Date.parse('2025-03-30T12:00:00Z'));
    expect([iso(w.start), iso(w.resetsAt)]).toEqual(['2025-03-29T23:00:00.000Z', '2025-03-30T22:00:00.000Z']);
  });
});
