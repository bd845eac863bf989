import { createClient } from '@keyv/redis';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createStore, settingsFromEnv } from '../../src/main.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine, QuotaStore } from '../../src/quota/store.js';
import { deleteKeys, startPrivateRedis, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';
import { journalBodies } from './journal-helpers.js';
import { quotaStoreContract } from './store-contract.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;
const silent = pino({ level: 'silent' });

describe('RedisQuotaStore', () => {
  let redis: TestRedis;
  const root = uniquePrefix('store');
  let n = 0;

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await deleteKeys(redis.url, root);
    await redis.stop();
  });

  // Each open() is its own replica: a separate client on the same Redis. Each test has its own
  // store prefix (so its own journal), the one its lines carry.
  let current = root;
  quotaStoreContract({
    open: (now, count) => Array.from({ length: count }, () => new RedisQuotaStore({ url: redis.url, prefix: current, now, logger: silent, sweepIntervalMs: 0 })),
    prefix: () => (current = `${root}${++n}:`),
    journal: () => journalBodies({ url: redis.url }, current),
  });

  it('answers exactly like the memory store over random sequences of calls', async () => {
    type Op =
      | { kind: 'reserve'; id: number; amounts: [number, number] }
      | { kind: 'settle'; id: number; amounts: [number, number] }
      | { kind: 'release'; id: number }
      | { kind: 'tick'; ms: number }
      | { kind: 'read' };
    const id = fc.integer({ min: 0, max: 4 });
    // Round amounts, so sums often land exactly on a limit (100 and 150).
    const amount = fc.constantFrom(0, 5, 25, 50, 75, 100, 150);
    const amounts = fc.tuple(amount, amount);
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('reserve' as const), id, amounts }),
      fc.record({ kind: fc.constant('settle' as const), id, amounts }),
      fc.record({ kind: fc.constant('release' as const), id }),
      fc.record({ kind: fc.constant('tick' as const), ms: fc.constantFrom(1000, 2000) }),
      fc.record({ kind: fc.constant('read' as const) }),
    );
    // Which lines every call of one run is charged to: one line, or both.
    const shape = fc.constantFrom([0], [1], [0, 1]);

    let clock = Date.now();
    const now = () => clock;
    const redisStore = new RedisQuotaStore({ url: redis.url, prefix: root, now, logger: silent });
    try {
      await fc.assert(
        fc.asyncProperty(shape, fc.array(op, { maxLength: 25 }), async (which, ops) => {
          // A run's own prefix, for its lines and its request ids: on a single node the settled
          // marker is one per request id under the store's prefix, shared by every run here.
          const prefix = `${root}${++n}:`;
          const memory = new MemoryQuotaStore(now);
          const start = Math.floor(clock / HOUR) * HOUR;
          const lines = (a: [number, number]): LedgerLine[] =>
            which.map((i) => ({
              budgetId: i === 0 ? 'alpha' : 'beta',
              subject: 'ada',
              limit: i === 0 ? 100 : 150,
              amount: a[i]!,
              expiresAt: start + 2 * HOUR,
              ...lineKeys(prefix, i === 0 ? 'alpha' : 'beta', 'ada', [start], start),
            }));
          const apply = async (store: QuotaStore, o: Op): Promise<unknown> => {
            switch (o.kind) {
              case 'reserve':
                return store.reserve(`${prefix}q${o.id}`, lines(o.amounts), 3000);
              case 'settle':
                return store.settle(`${prefix}q${o.id}`, lines(o.amounts));
              case 'release':
                return store.release(`${prefix}q${o.id}`);
              case 'read':
                return store.read(lines([0, 0]));
              case 'tick':
                return undefined;
            }
          };
          for (const o of ops) {
            if (o.kind === 'tick') clock += o.ms;
            expect(await apply(redisStore, o)).toEqual(await apply(memory, o));
          }
          expect(await redisStore.read(lines([0, 0]))).toEqual(await memory.read(lines([0, 0])));
        }),
        { numRuns: 60 },
      );
    } finally {
      await redisStore.close();
    }
  });

  describe('on the wire', () => {
    let prefix: string;
    let raw: ReturnType<typeof createClient>;
    const stores: RedisQuotaStore[] = [];
    const open = () => {
      // The test's own prefix: request ids (r1, r2) repeat from test to test, and on a single node
      // their settled markers live under the store's prefix.
      const store = new RedisQuotaStore({ url: redis.url, prefix, logger: silent });
      stores.push(store);
      return store;
    };
    const line = (amount: number, subject = 'ada'): LedgerLine => {
      const start = Math.floor(Date.now() / HOUR) * HOUR;
      return { budgetId: 'weekly', subject, limit: 1000, amount, expiresAt: Date.now() + 2 * HOUR, ...lineKeys(prefix, 'weekly', subject, [start], start) };
    };

    beforeEach(async () => {
      prefix = `${root}${++n}:`;
      raw = createClient({ url: redis.url });
      await raw.connect();
    });

    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close()));
      raw.destroy();
    });

    it('keeps a line\'s reservation and usage under its hash tag and one settled marker per call beside the journal, with their TTLs', async () => {
      const store = open();
      const l = line(10);
      await store.reserve('r1', [l], 60_000);
      await store.settle('r1', [{ ...l, amount: 7 }]);
      await store.reserve('r2', [{ ...l, amount: 5 }], 60_000);

      const tag = `${prefix}{weekly|ada}`;
      const keys: string[] = [];
      for await (const batch of raw.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) keys.push(...batch);
      // R:i holds what recovery needs of r2's reservation, R:p the recovery profile the calls share.
      expect(keys.filter((k) => k.startsWith(tag)).sort()).toEqual([`${tag}:r`, `${tag}:r:i`, `${tag}:r:p`, `${tag}:r:x`, l.usageKey].sort());
      // On a single node the settled marker is one per call, beside the journal.
      expect(keys.filter((k) => k.includes(':s:'))).toEqual([`${prefix}{journal}:s:r1`]);
      expect(await raw.get(l.usageKey)).toBe('7');
      // r2's reservation, and the line's tally of what it holds: sum and count.
      expect(await raw.hGetAll(`${tag}:r`)).toEqual({ r2: '5', '=': '5 1' });
      expect(Math.abs((await raw.pTTL(l.usageKey)) - (l.expiresAt - Date.now()))).toBeLessThan(5000);
      expect(await raw.pTTL(`${prefix}{journal}:s:r1`)).toBeGreaterThan(DAY - 5000);
      expect(await raw.pTTL(`${tag}:r`)).toBeGreaterThan(60_000);
      expect(await raw.pTTL(`${tag}:r:i`)).toBeGreaterThan(60_000);
      // One profile for both calls (same caller, lines and policy), kept two days from its write.
      expect(await raw.hLen(`${tag}:r:p`)).toBe(1);
      expect(await raw.pTTL(`${tag}:r:p`)).toBeGreaterThan(2 * DAY - 5000);
    });

    it('keeps a line\'s reserved total in one field, through reservations, settlements, releases and expiry', async () => {
      let now = Date.now();
      const store = new RedisQuotaStore({ url: redis.url, prefix, logger: silent, now: () => now, sweepIntervalMs: 0 });
      stores.push(store);
      const R = `${prefix}{weekly|ada}:r`;
      await store.reserve('r1', [line(100)], 60_000);
      await store.reserve('r2', [line(200)], 60_000);
      await store.reserve('r3', [line(300)], 120_000);
      expect(await raw.hGet(R, '=')).toBe('600 3');
      await store.settle('r2', [line(150)]);
      expect(await raw.hGet(R, '=')).toBe('400 2');
      // r1 expires (recovery releases it: never dispatched); r3 is left.
      now += 90_000;
      expect(await store.read([line(0)])).toEqual([{ used: 150, reserved: 300 }]);
      expect(await raw.hGet(R, '=')).toBe('300 1');
      await store.release('r3');
      expect(await raw.exists(R)).toBe(0);
    });

    it('reads one field, not every reservation open on the line, to reserve', async () => {
      const own = await startPrivateRedis();
      const store = new RedisQuotaStore({ url: own.url, prefix, logger: silent, sweepIntervalMs: 0 });
      stores.push(store);
      const counted = createClient({ url: own.url });
      await counted.connect();
      try {
        for (let i = 0; i < 50; i++) await store.reserve(`open${i}`, [line(1)], 60_000);
        const reads = async () => {
          const stats = await counted.info('commandstats');
          return ['hvals', 'hgetall'].map((c) => Number(new RegExp(`cmdstat_${c}:calls=(\\d+)`).exec(stats)?.[1] ?? 0));
        };
        const before = await reads();
        expect(await store.reserve('one-more', [line(1)], 60_000)).toEqual({ ok: true });
        expect(await reads()).toEqual(before);
        expect(await counted.hGet(`${prefix}{weekly|ada}:r`, '=')).toBe('51 51');
      } finally {
        counted.destroy();
        await store.close();
        await own.stop();
      }
    });

    it('counts a line whole when its tally is missing or no longer matches what it holds', async () => {
      const store = open();
      const R = `${prefix}{weekly|ada}:r`;
      const X = `${prefix}{weekly|ada}:r:x`;
      const later = Date.now() + 60_000;
      // A line written before tallies existed: a reservation and no '='.
      await raw.hSet(R, 'old1', '500');
      await raw.zAdd(X, { score: later, value: 'old1' });
      expect(await store.reserve('r1', [line(600)], 60_000)).toMatchObject({ ok: false, reserved: 500 });
      expect(await store.reserve('r1', [line(400)], 60_000)).toEqual({ ok: true });
      expect(await raw.hGet(R, '=')).toBe('900 2');
      // What a script that does not keep the tally leaves: a reservation gone behind its back.
      await raw.hDel(R, 'old1');
      await raw.zRem(X, 'old1');
      expect(await store.reserve('r2', [line(700)], 60_000)).toMatchObject({ ok: false, reserved: 400 });
      expect(await store.reserve('r2', [line(600)], 60_000)).toEqual({ ok: true });
      expect(await raw.hGet(R, '=')).toBe('1000 2');
      expect(await store.read([line(0)])).toEqual([{ used: 0, reserved: 1000 }]);
    });

    it('makes a script that sums a tallied line the old way fail rather than miss reservations', async () => {
      // The pre-tally reservedSum, as an older replica runs it during a rolling upgrade: it must
      // not be able to reserve on a line whose tally would not count its reservation.
      const store = open();
      await store.reserve('r1', [line(100)], 60_000);
      const oldSum = "local t = 0 for _, v in ipairs(redis.call('HVALS', KEYS[1])) do t = t + tonumber(v) end return t";
      await expect(raw.eval(oldSum, { keys: [`${prefix}{weekly|ada}:r`] })).rejects.toThrow(/arithmetic/);
    });

    it('releases from another replica, which finds the request\'s lines in the Keyv record', async () => {
      const [a, b] = [open(), open()];
      await a.reserve('r1', [line(40), line(40, 'bob')], 60_000);
      await b.release('r1');
      expect(await a.read([line(0), line(0, 'bob')])).toEqual([
        { used: 0, reserved: 0 },
        { used: 0, reserved: 0 },
      ]);
    });

    it('keeps the record of what a request holds through a repeated reserve, and leaves none for a refusal or a settled request', async () => {
      const [a, b] = [open(), open()];
      // The Keyv record of a request is the one key under the store's `kv` namespace naming it.
      const record = async (id: string) => (await raw.keys(`${root}kv*req:${id}`)).length;
      await a.reserve('rep1', [line(40), line(40, 'bob')], 60_000);
      // The repeat asks for one line only; the request still holds two, and the record says so.
      await a.reserve('rep1', [line(40)], 60_000);
      await b.release('rep1');
      expect(await a.read([line(0), line(0, 'bob')])).toEqual([
        { used: 0, reserved: 0 },
        { used: 0, reserved: 0 },
      ]);
      // A refused reservation leaves no record behind, nor does a settled request's repeat.
      expect(await a.reserve('rep2', [line(2000)], 60_000)).toMatchObject({ ok: false });
      await a.reserve('rep3', [line(5)], 60_000);
      await a.settle('rep3', [line(5)]);
      expect(await a.reserve('rep3', [line(5)], 60_000)).toEqual({ ok: true });
      // Both records are deleted after the call returns (not awaited): wait for the deletions to land.
      await vi.waitFor(async () => expect([await record('rep2'), await record('rep3')]).toEqual([0, 0]), { timeout: 5000, interval: 20 });
    });

    it('applies an admin credit and debit to a usage counter', async () => {
      const store = open();
      const l = line(50);
      await store.settle('r1', [l]);
      expect(await store.adjust(l.usageKey, -20, l.expiresAt)).toBe(30);
      expect(await store.adjust(l.usageKey, 5, l.expiresAt)).toBe(35);
      expect(await store.read([l])).toEqual([{ used: 35, reserved: 0 }]);
    });

    it('lists settled usage of every subject of a budget', async () => {
      const store = open();
      const [ada, bob] = [line(12), line(30, 'bob')];
      await store.settle('r1', [ada]);
      await store.settle('r2', [bob]);
      await store.reserve('r3', [line(5, 'cy')], 60_000);
      expect(await store.listUsage(`${prefix}{weekly|*}:u:*`)).toEqual([
        { key: ada.usageKey, used: 12 },
        { key: bob.usageKey, used: 30 },
      ]);
    });

    it('bounds each journal stream to about TOLLGATE_JOURNAL_MAXLEN entries in the store the gateway builds', async () => {
      const store = await createStore(settingsFromEnv({ REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_JOURNAL_MAXLEN: '20' }), undefined, silent);
      stores.push(store as RedisQuotaStore);
      for (let i = 0; i < 300; i++) await store.record({ 'request.id': `x${i}`, outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' });
      const length = await raw.xLen(`${prefix}{journal}:j`);
      expect(length).toBeGreaterThanOrEqual(20);
      expect(length).toBeLessThan(300);
      expect((await (store as RedisQuotaStore).verify()).ok).toBe(true);
    });

    it('settles a line whose window has already ended without creating a counter', async () => {
      const store = open();
      const l = { ...line(9), expiresAt: Date.now() - 1000 };
      await store.settle('late', [l]);
      expect(await raw.exists(l.usageKey)).toBe(0);
    });
  });
});
