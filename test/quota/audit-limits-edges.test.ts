/**
 * Trying to beat a sliding window at its bucket edges, on the memory store and on Redis shared by
 * two replicas: a call's limit lines are resolved when its limits are found (the decide step) and
 * reserved later (the reserve step); the window a call is checked against must be the one of the
 * moment it is reserved, or calls charged in a bucket its lines do not read go unseen.
 */
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/principal.js';
import { applicableLimits, candidateLimits, ledgerLine } from '../../src/policy/limits.js';
import { compileLimit } from '../../src/policy/load.js';
import type { RateLimitConfig } from '../../src/policy/schema.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { QuotaStore } from '../../src/quota/store.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const silent = pino({ level: 'silent' });
const TTL = 60_000;
/** 4.999 s into a 5 s bucket of a per-minute limit. */
const BUCKET_END = Date.parse('2026-11-25T10:00:04.999Z');
const ada: Principal = { user: 'ada', teams: [], groups: [], roles: [], authMethod: 'api_key', credentialId: 'k-ada' };
const rpm = (n: number) => compileLimit({ id: 'rpm', scope: 'user', requestsPerMinute: n, retryAfterMs: 1000, failMode: 'closed' } as RateLimitConfig);
const rps = (n: number, buckets?: number) => compileLimit({ id: 'rps', scope: 'user', requestsPerSecond: n, buckets, retryAfterMs: 1000, failMode: 'closed' } as RateLimitConfig);

interface Harness {
  name: string;
  open(now: () => number, count: number): QuotaStore[];
  prefix(): string;
}

let redis: TestRedis;
const root = uniquePrefix('audit-edges');
let n = 0;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await deleteKeys(redis.url, root);
  await redis.stop();
});

const harnesses: Harness[] = [
  {
    name: 'memory store',
    open: (now, count) => {
      const store = new MemoryQuotaStore(now);
      return Array.from({ length: count }, () => store);
    },
    prefix: () => `audit-edges-mem${++n}:`,
  },
  {
    name: 'Redis, two replicas',
    open: (now, count) => Array.from({ length: count }, () => new RedisQuotaStore({ url: redis.url, prefix: root, now, logger: silent, sweepIntervalMs: 0 })),
    prefix: () => `${root}${++n}:`,
  },
];

describe.each(harnesses)('a sliding window at its bucket edges ($name)', (harness) => {
  let clock: number;
  let opened: QuotaStore[] = [];
  const open = (count: number) => {
    const stores = harness.open(() => clock, count);
    opened.push(...stores);
    return stores;
  };

  afterEach(async () => {
    await Promise.all([...new Set(opened)].map((s) => s.close()));
    opened = [];
  });

  /** Reserves and settles one request at `clock` on `store`, its limits found at `foundAt`; true when admitted. */
  async function call(store: QuotaStore, id: string, limit: ReturnType<typeof rpm>, prefix: string, foundAt = clock): Promise<boolean> {
    const limits = applicableLimits([limit], ada, foundAt, prefix);
    const [line] = candidateLimits(limits, 'standard', 'openai/mini', clock, prefix);
    const outcome = await store.reserve(id, [ledgerLine(line!, 1)], TTL);
    if (outcome.ok) await store.settle(id, [ledgerLine(line!, 1)]);
    return outcome.ok;
  }

  it('refuses a call whose limits were found in the bucket before the one it is reserved in, once the window is full', async () => {
    const prefix = harness.prefix();
    const [a, b] = open(2);
    const limit = rpm(5);
    clock = BUCKET_END;
    // Found just before the edge (the decide step), reserved 2 ms later, after 5 calls were admitted in the new bucket.
    const foundAt = clock;
    clock += 2;
    const fresh = await Promise.all(Array.from({ length: 200 }, (_, i) => call(i % 2 ? a! : b!, `fresh${i}`, limit, prefix)));
    expect(fresh.filter(Boolean)).toHaveLength(5);
    expect(await call(b!, 'late', limit, prefix, foundAt)).toBe(false);
  });

  it('admits at most 5 in any window of 10 whole buckets against 5 a second, calls found up to a bucket before they are reserved', async () => {
    const prefix = harness.prefix();
    const [a, b] = open(2);
    const limit = rps(5);
    const admittedAt: number[] = [];
    // A fixed pseudo-random schedule (no flake): bursts of 1 to 40 calls every 1 to 60 ms for 3 s,
    // each call's limits found 0 to 120 ms before it is reserved.
    let seed = 7;
    const next = (m: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % m;
    let k = 0;
    for (let t = Date.parse('2026-11-25T10:00:00Z'); t < Date.parse('2026-11-25T10:00:03Z'); t += 1 + next(60)) {
      clock = t;
      const burst = Array.from({ length: 1 + next(40) }, () => t - next(121));
      const ok = await Promise.all(burst.map((foundAt, i) => call(i % 2 ? a! : b!, `c${k++}`, limit, prefix, foundAt)));
      for (const admitted of ok) if (admitted) admittedAt.push(t);
    }
    expect(admittedAt.length).toBeGreaterThan(10);
    const most = Math.max(...admittedAt.map((t) => Math.floor(t / 100) * 100).map((from) => admittedAt.filter((t) => t >= from && t < from + 1000).length));
    expect(most).toBe(5);
  });

  it('keeps a whole second in the window of a per-second limit whose buckets do not divide it (60 buckets)', async () => {
    const prefix = harness.prefix();
    const [a, b] = open(2);
    const limit = rps(5, 60);
    const start = Date.parse('2026-11-25T10:00:00Z');
    clock = start;
    const first = await Promise.all(Array.from({ length: 100 }, (_, i) => call(i % 2 ? a! : b!, `s${i}`, limit, prefix)));
    expect(first.filter(Boolean)).toHaveLength(5);
    // 960 ms on: within the second of the first five, and within the docs' bound of a window less
    // one bucket (1000 - 1000 / 60 ms): nothing more may be admitted.
    clock = start + 960;
    const second = await Promise.all(Array.from({ length: 100 }, (_, i) => call(i % 2 ? a! : b!, `t${i}`, limit, prefix)));
    expect(second.filter(Boolean)).toHaveLength(0);
  });
});
