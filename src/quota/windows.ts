/**
 * Budget windows. Calendar windows (day, ISO week starting Monday, month) follow an IANA timezone,
 * so "weekly" resets at Monday 00:00 where the employee works, DST included. Rolling windows
 * (the last N hours or days) are split into buckets: usage is the sum of the buckets in range,
 * and each bucket expires on its own, so no reset job is needed.
 */
import { LRUCache } from 'lru-cache';

export type WindowSpec =
  | { calendar: 'day' | 'week' | 'month'; timezone: string }
  | { rolling: { hours?: number; days?: number }; buckets: number };

/** The concrete window for an instant: where usage is added and which buckets are read. */
export interface ResolvedWindow {
  /** Window (or current bucket) start, epoch ms; part of the counter key. */
  start: number;
  /** When the current window ends (calendar) or the oldest counted bucket drops out (rolling), epoch ms. */
  resetsAt: number;
  /** Start of every bucket counted against the limit; one entry for calendar windows. */
  readStarts: number[];
  /** When the counter written now may be forgotten, epoch ms. */
  expiresAt: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timezone: string): Intl.DateTimeFormat {
  let f = formatters.get(timezone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: timezone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timezone, f);
  }
  return f;
}

/** True when the runtime knows the IANA timezone name. */
export function isValidTimezone(timezone: string): boolean {
  try {
    formatter(timezone);
    return true;
  } catch {
    return false;
  }
}

interface LocalParts {
  year: number;
  month: number;
  day: number;
}

function localParts(epochMs: number, timezone: string): LocalParts & { offsetMs: number } {
  const parts: Record<string, number> = {};
  for (const p of formatter(timezone).formatToParts(new Date(epochMs))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  const asUtc = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
  return { year: parts.year!, month: parts.month!, day: parts.day!, offsetMs: asUtc - Math.floor(epochMs / 1000) * 1000 };
}

/**
 * Epoch ms of local midnight on the given local date in `timezone` (Date.UTC normalises overflowing
 * days/months). Where the clocks jump forward at midnight (America/Santiago, Havana, the Azores)
 * that midnight never happens and the day begins at the jump, which `first`, taken with the offset
 * before it, lands on; `second` would fall an hour early, on the day before.
 */
function localMidnight(year: number, month: number, day: number, timezone: string): number {
  const guess = Date.UTC(year, month - 1, day);
  const first = guess - localParts(guess, timezone).offsetMs;
  const second = guess - localParts(first, timezone).offsetMs;
  return localParts(second, timezone).day === new Date(guess).getUTCDate() ? second : first;
}

const HOUR = 3600_000;
/** Counters outlive their window by this much so a late settle still lands in the right window. */
const EXPIRY_SLACK_MS = 2 * HOUR;

/**
 * The last calendar window resolved per (calendar, timezone). Resolving one takes several
 * Intl.DateTimeFormat calls, and every call of every budget asks for it; the window stays the same
 * until its end, so it is reused while `now` lies inside it. Validity depends on the `now` asked
 * about (which may lie in the past, as `explain --now` does), not on elapsed time, so lru-cache
 * only bounds it here; the window check stays.
 */
const calendarCache = new LRUCache<string, ResolvedWindow>({ max: 1000 });

/** Resolves the window containing `now`. */
export function resolveWindow(spec: WindowSpec, now: number): ResolvedWindow {
  if ('calendar' in spec) {
    const key = `${spec.calendar}|${spec.timezone}`;
    const hit = calendarCache.get(key);
    if (hit && hit.start <= now && now < hit.resetsAt) return hit;
    const resolved = resolveCalendar(spec, now);
    calendarCache.set(key, resolved);
    return resolved;
  }
  return resolveRolling(spec, now);
}

function resolveCalendar(spec: Extract<WindowSpec, { calendar: string }>, now: number): ResolvedWindow {
  {
    const { year, month, day } = localParts(now, spec.timezone);
    let start: number;
    let end: number;
    if (spec.calendar === 'day') {
      start = localMidnight(year, month, day, spec.timezone);
      end = localMidnight(year, month, day + 1, spec.timezone);
    } else if (spec.calendar === 'week') {
      const sinceMonday = (new Date(Date.UTC(year, month - 1, day)).getUTCDay() + 6) % 7;
      start = localMidnight(year, month, day - sinceMonday, spec.timezone);
      end = localMidnight(year, month, day - sinceMonday + 7, spec.timezone);
    } else {
      start = localMidnight(year, month, 1, spec.timezone);
      end = localMidnight(year, month + 1, 1, spec.timezone);
    }
    return Object.freeze({ start, resetsAt: end, readStarts: Object.freeze([start]) as number[], expiresAt: end + EXPIRY_SLACK_MS });
  }
}

function resolveRolling(spec: Extract<WindowSpec, { rolling: unknown }>, now: number): ResolvedWindow {
  const spanMs = ((spec.rolling.days ?? 0) * 24 + (spec.rolling.hours ?? 0)) * HOUR;
  const bucketMs = Math.max(1000, Math.floor(spanMs / spec.buckets));
  const current = Math.floor(now / bucketMs) * bucketMs;
  const readStarts: number[] = [];
  for (let i = spec.buckets - 1; i >= 0; i--) readStarts.push(current - i * bucketMs);
  return {
    start: current,
    // The oldest bucket read drops out when the current one ends.
    resetsAt: current + bucketMs,
    readStarts,
    expiresAt: current + spanMs + EXPIRY_SLACK_MS,
  };
}

/**
 * The length of a sliding window's bucket: rounded up, so that `buckets` of them cover at least
 * `spanMs` when they do not divide it (60 buckets of a second are 17 ms, a window of 1,020 ms;
 * rounded down they were 16 ms, a window of 960, and a limit of 5 a second admitted 10 within 961 ms).
 */
function slidingBucketMs(spanMs: number, buckets: number): number {
  return Math.max(1, Math.ceil(spanMs / buckets));
}

/** The start of the bucket `now` falls in, for a sliding window of `buckets` over `spanMs`. */
export function slidingBucketStart(spanMs: number, buckets: number, now: number): number {
  const bucketMs = slidingBucketMs(spanMs, buckets);
  return Math.floor(now / bucketMs) * bucketMs;
}

/**
 * A sliding window of `buckets` buckets covering `spanMs` (rate limits), or a little more when they
 * do not divide it: usage is the sum of the buckets in range, the current one included. Bucket starts are multiples of the bucket length,
 * so every replica agrees on them. A bucket key lives a minute past the moment it leaves the
 * window, enough for replicas whose clocks differ a little.
 */
export function resolveSliding(spanMs: number, buckets: number, now: number): ResolvedWindow & { bucketMs: number; spanMs: number } {
  const bucketMs = slidingBucketMs(spanMs, buckets);
  const span = bucketMs * buckets;
  const current = slidingBucketStart(spanMs, buckets, now);
  const readStarts: number[] = [];
  for (let i = buckets - 1; i >= 0; i--) readStarts.push(current - i * bucketMs);
  return { start: current, resetsAt: readStarts[0]! + span, readStarts, expiresAt: current + span + 60_000, bucketMs, spanMs: span };
}
