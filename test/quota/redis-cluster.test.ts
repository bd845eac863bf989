/**
 * The Redis ledger on a real Redis Cluster: a private cluster of three masters per suite (killed
 * afterwards, never flushed), so lines of one call land on different shards.
 */
import { createClient } from '@keyv/redis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createStore, settingsFromEnv } from '../../src/main.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine } from '../../src/quota/store.js';
import { hasRedisCli, onRedisDay, startPrivateCluster, uniquePrefix, type PrivateCluster } from '../helpers/redis.js';
import { canonicalJson, recoveryEvent, verifyChain } from '../../src/quota/journal.js';
import { journalBodies, journalOf } from './journal-helpers.js';
import { quotaStoreContract } from './store-contract.js';

const HOUR = 3600_000;
const TTL = 60_000;
const silent = pino({ level: 'silent' });
const cliPresent = hasRedisCli();
if (!cliPresent) console.warn('Skipping the Redis Cluster tests: redis-cli (needed to create the cluster) is not installed.');

/** Which master (by port) serves each key, asked of the cluster itself with CLUSTER KEYSLOT and CLUSTER SLOTS. */
async function ownersOf(cluster: PrivateCluster, keys: string[]): Promise<number[]> {
  const raw = createClient({ url: cluster.nodes[0] });
  await raw.connect();
  try {
    const ranges = await raw.clusterSlots();
    return await Promise.all(
      keys.map(async (key) => {
        const slot = await raw.clusterKeySlot(key);
        const range = ranges.find((r) => r.from <= slot && slot <= r.to);
        if (!range) throw new Error(`slot ${slot} of ${key} is not served`);
        return range.master.port;
      }),
    );
  } finally {
    raw.destroy();
  }
}

describe.skipIf(!cliPresent)('RedisQuotaStore on Redis Cluster', () => {
  let cluster: PrivateCluster;
  const root = uniquePrefix('cluster');
  let n = 0;

  beforeAll(async () => {
    cluster = await startPrivateCluster(3);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  // Each open() is its own replica: a separate cluster client on the same cluster. Each test has
  // its own store prefix (so its own journal streams), the one its lines carry.
  let current = root;
  quotaStoreContract({
    open: (now, count) => Array.from({ length: count }, () => new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix: current, now, logger: silent, sweepIntervalMs: 0 })),
    prefix: () => (current = `${root}${++n}:`),
    journal: () => journalBodies({ clusterNodes: cluster.nodes }, current),
  });

  describe('across shards', () => {
    let prefix: string;
    const stores: RedisQuotaStore[] = [];
    const open = () => {
      const store = new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix: root, logger: silent });
      stores.push(store);
      return store;
    };
    const line = (budgetId: string, limit: number, amount: number, subject = 'ada'): LedgerLine => {
      const start = Math.floor(Date.now() / HOUR) * HOUR;
      return { budgetId, subject, limit, amount, expiresAt: start + 2 * HOUR, ...lineKeys(prefix, budgetId, subject, [start], start) };
    };
    /** Two budget ids whose lines (for `subject`) are served by different masters. */
    const onTwoMasters = async (subject = 'ada'): Promise<[string, string]> => {
      const ids = Array.from({ length: 12 }, (_, i) => `budget${i}`);
      const owners = await ownersOf(cluster, ids.map((id) => line(id, 0, 0, subject).reservedKey));
      const other = owners.findIndex((o) => o !== owners[0]);
      expect(other).toBeGreaterThan(0);
      return [ids[0]!, ids[other]!];
    };

    beforeEach(() => {
      prefix = `${root}${++n}:`;
    });

    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    });

    it('reserves nothing when a line on another master refuses, and both lines when both fit', async () => {
      const store = open();
      const [x, y] = await onTwoMasters();
      const [ownerX, ownerY] = await ownersOf(cluster, [line(x, 0, 0).reservedKey, line(y, 0, 0).reservedKey]);
      expect(ownerX).not.toBe(ownerY);

      expect(await store.reserve('r1', [line(x, 100, 30), line(y, 40, 45)], TTL)).toEqual({
        ok: false,
        budgetId: y,
        subject: 'ada',
        used: 0,
        reserved: 0,
        limit: 40,
        requested: 45,
        // The refusing line's counters (one for a calendar window), as every store reports them.
        buckets: [0],
      });
      expect(await store.read([line(x, 100, 0), line(y, 40, 0)])).toEqual([
        { used: 0, reserved: 0 },
        { used: 0, reserved: 0 },
      ]);

      expect(await store.reserve('r2', [line(x, 100, 30), line(y, 40, 35)], TTL)).toEqual({ ok: true });
      // Each line's reservation really sits on its own master.
      const hashOn = async (port: number, key: string) => cluster.cli(port, 'hget', key, 'r2');
      expect(await hashOn(ownerX!, line(x, 0, 0).reservedKey)).toBe('30');
      expect(await hashOn(ownerY!, line(y, 0, 0).reservedKey)).toBe('35');
    });

    it('allows exactly N of 200 concurrent calls over two replicas when the limit fits N', async () => {
      const [a, b] = [open(), open()];
      const [team, org] = await onTwoMasters();
      // 37 calls of 10 fit the team line; the org line has room for all of them.
      const lines = [line(team, 370, 10), line(org, 5000, 10)];
      const outcomes = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).reserve(`c${i}`, lines, TTL)));
      expect(outcomes.filter((o) => o.ok)).toHaveLength(37);
      expect(await a.read(lines)).toEqual([
        { used: 0, reserved: 370 },
        { used: 0, reserved: 370 },
      ]);

      const admitted = outcomes.flatMap((o, i) => (o.ok ? [`c${i}`] : []));
      await Promise.all(admitted.map((id, i) => (i % 2 === 0 ? b : a).settle(id, lines.map((l) => ({ ...l, amount: 7 })))));
      expect(await b.read(lines)).toEqual([
        { used: 37 * 7, reserved: 0 },
        { used: 37 * 7, reserved: 0 },
      ]);
    });

    it('lists settled usage held by every master', async () => {
      const store = open();
      const subjects = Array.from({ length: 24 }, (_, i) => `user${i}`);
      const lines = subjects.map((s, i) => line('weekly', 1000, i + 1, s));
      expect(new Set(await ownersOf(cluster, lines.map((l) => l.usageKey))).size).toBe(3);

      await Promise.all(lines.map((l, i) => store.settle(`s${i}`, [l])));
      await store.reserve('pending', [line('weekly', 1000, 5, 'someone-else')], TTL);
      const expected = lines.map((l, i) => ({ key: l.usageKey, used: i + 1 })).sort((p, q) => (p.key < q.key ? -1 : 1));
      expect(await store.listUsage(`${prefix}{weekly|*}:u:*`)).toEqual(expected);
    });

    it('runs its scripts again after every master has forgotten them (EVAL on NOSCRIPT)', async () => {
      const store = open();
      const [x, y] = await onTwoMasters();
      expect(await store.reserve('r1', [line(x, 100, 10), line(y, 100, 10)], TTL)).toEqual({ ok: true });
      await Promise.all(cluster.ports.map((p) => cluster.cli(p, 'script', 'flush')));

      expect(await store.reserve('r2', [line(x, 100, 20), line(y, 100, 20)], TTL)).toEqual({ ok: true });
      await store.settle('r1', [line(x, 100, 4), line(y, 100, 4)]);
      expect(await store.read([line(x, 100, 0), line(y, 100, 0)])).toEqual([
        { used: 4, reserved: 20 },
        { used: 4, reserved: 20 },
      ]);
    });

    it('is the ledger the gateway builds when REDIS_CLUSTER_NODES lists the cluster', async () => {
      const settings = settingsFromEnv({ REDIS_CLUSTER_NODES: cluster.nodes.join(', '), TOLLGATE_KEY_PREFIX: root });
      const store = await createStore(settings, undefined, silent);
      stores.push(store as RedisQuotaStore);
      const [x, y] = await onTwoMasters();
      expect(store.kind).toBe('redis');
      expect(await store.reserve('r1', [line(x, 100, 60), line(y, 100, 70)], TTL)).toEqual({ ok: true });
      expect(await open().read([line(x, 100, 0), line(y, 100, 0)])).toEqual([
        { used: 0, reserved: 60 },
        { used: 0, reserved: 70 },
      ]);
    });

    it('journals each line in the stream of its own hash tag, the event with the first line, refusals in {journal}; verify passes', async () => {
      const store = new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix, logger: silent, sweepIntervalMs: 0 });
      stores.push(store);
      const [x, y] = await onTwoMasters();
      const [lx, ly] = [line(x, 100, 30), line(y, 100, 40)];
      const event = { event: 'tollgate.decision', 'request.id': 'j1', outcome: 'success', 'user.id': 'ada', 'gen_ai.usage.input_tokens': 9, 'gen_ai.usage.output_tokens': 3 };
      await store.reserve('j1', [ly, lx], TTL, { user: 'ada' });
      await store.dispatch('j1');
      await store.settle('j1', [{ ...lx, amount: 12 }, { ...ly, amount: 12 }], event);
      await store.record({ event: 'tollgate.decision', 'request.id': 'j2', outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' });

      const all = await journalOf({ clusterNodes: cluster.nodes }, prefix);
      const byStream = (key: string) => all.filter((e) => e.stream === key).map((e) => e.entry);
      const [first, second] = [lx, ly].sort((a, b) => (a.reservedKey < b.reservedKey ? -1 : 1));
      // Each line's stream lives with its line (same slot, so on the line's master) and chains on its own.
      expect([...new Set(all.map((e) => e.stream))].sort()).toEqual([`${first!.reservedKey}:j`, `${second!.reservedKey}:j`, `${prefix}{journal}:j`].sort());
      expect(await ownersOf(cluster, [`${lx.reservedKey}:j`])).toEqual(await ownersOf(cluster, [lx.reservedKey]));
      for (const l of [first!, second!]) {
        const entries = byStream(`${l.reservedKey}:j`);
        // One entry per call on each line: the settle (the reservation is journaled by it).
        expect(entries.map((e) => [e.seq, e.body.kind, e.body.lines?.map((m) => m.reservedKey)])).toEqual([[1, 'settle', [l.reservedKey]]]);
        expect(verifyChain(entries)).toBeUndefined();
      }
      expect(byStream(`${first!.reservedKey}:j`)[0]!.body.event).toEqual(event);
      expect(byStream(`${first!.reservedKey}:j`)[0]!.body.eventLine).toBeUndefined();
      // The other line's entry names the line whose entry carries the event.
      expect(byStream(`${second!.reservedKey}:j`)[0]!.body.event).toBeUndefined();
      expect(byStream(`${second!.reservedKey}:j`)[0]!.body.eventLine).toBe(first!.reservedKey);
      expect(byStream(`${prefix}{journal}:j`).map((e) => [e.body.kind, e.body.id])).toEqual([['refuse', 'j2']]);

      const report = await store.verify();
      expect(report.streams.map((s) => s.fault)).toEqual([undefined, undefined, undefined]);
      expect(report.counters).toEqual({ checked: 2, skipped: 0, mismatches: [] });
      expect(report.events).toEqual({ charges: 2, missing: [], pending: [] });
      expect(report.ok).toBe(true);
      const day = new Date().toISOString().slice(0, 10);
      const rows = await store.rollups(day, day);
      expect(rows.map((r) => [r.user, r.calls, r.inputTokens, r.outputTokens, r.refused])).toEqual([
        ['ada', 1, 9, 3, {}],
        ['', 1, 0, 0, { BUDGET_EXHAUSTED: 1 }],
      ]);
    });

    it('recovers an expired dispatched reservation line by line on each master, the event once, with the first line', async () => {
      let clock = Date.now();
      const at = () => clock;
      const [a, b] = [0, 1].map(() => new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix, now: at, logger: silent, sweepIntervalMs: 0 }));
      stores.push(a!, b!);
      const heard: Record<string, unknown>[] = [];
      a!.onEvent((e) => heard.push(e));
      b!.onEvent((e) => heard.push(e));
      const [x, y] = await onTwoMasters();
      const [lx, ly] = [line(x, 100, 30), line(y, 100, 40)];
      await a!.reserve('k1', [lx, ly], 1000, { user: 'ada' });
      await a!.dispatch('k1');
      clock += 1000;
      await Promise.all([a!.sweep(), b!.sweep(), b!.read([ly]), a!.read([lx])]);
      expect(await a!.read([lx, ly])).toEqual([
        { used: 30, reserved: 0 },
        { used: 40, reserved: 0 },
      ]);
      expect(heard).toHaveLength(1);
      expect(heard[0]).toMatchObject({ 'request.id': 'k1', 'tollgate.settled_by': 'recovery', 'user.id': 'ada' });
      const recovered = (await journalOf({ clusterNodes: cluster.nodes }, prefix)).filter((e) => e.entry.body.kind === 'recover' && e.entry.body.id === 'k1');
      expect(recovered.map((e) => e.stream).sort()).toEqual([`${lx.reservedKey}:j`, `${ly.reservedKey}:j`].sort());
      expect((await a!.verify()).ok).toBe(true);
    });

    it('reserves once on every master after the event line\'s master lost its recovery profiles, and recovers that call whole', async () => {
      let clock = Date.now();
      const at = () => clock;
      const store = new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix, now: at, logger: silent, sweepIntervalMs: 0 });
      stores.push(store);
      const heard: Record<string, unknown>[] = [];
      store.onEvent((e) => heard.push(e));
      const meta = { user: 'ada', teams: ['ml'], model: 'openai/gpt-5-mini', tier: 'standard', transport: 'http', policyVersion: 'v3' };
      const [x, y] = await onTwoMasters();
      const [lx, ly] = [line(x, 100, 30), line(y, 100, 40)].sort((p, q) => (p.reservedKey < q.reservedKey ? -1 : 1)) as [LedgerLine, LedgerLine];
      await store.reserve('p1', [lx, ly], TTL, meta);
      await store.release('p1');
      const [owner] = await ownersOf(cluster, [lx.reservedKey]);
      expect(await cluster.cli(owner!, 'del', `${lx.reservedKey}:p`)).toBe('1');

      expect(await store.reserve('p2', [lx, ly], 1000, meta)).toEqual({ ok: true });
      expect(await store.read([lx, ly])).toEqual([
        { used: 0, reserved: 30 },
        { used: 0, reserved: 40 },
      ]);
      expect(await cluster.cli(owner!, 'hlen', `${lx.reservedKey}:p`)).toBe('1');
      await store.dispatch('p2');
      clock += 1001;
      await store.read([lx, ly]);
      const lines = [lx, ly].map((l) => ({ budgetId: l.budgetId, subject: l.subject, usageKey: l.usageKey, reservedKey: l.reservedKey, amount: l.amount, expiresAt: l.expiresAt }));
      expect(heard).toHaveLength(1);
      expect(canonicalJson(heard[0])).toBe(canonicalJson(recoveryEvent('p2', { lines, meta, dispatched: true }, clock)));
      expect((await store.verify()).ok).toBe(true);
    });

    it("names a line's rollup hash once on the day Redis calls today, and anew on every write into a past day", async () => {
      const node = createClient({ url: cluster.nodes[0] });
      await node.connect();
      let clock = await onRedisDay(node);
      node.destroy();
      const store = new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix, now: () => clock, logger: silent, sweepIntervalMs: 0 });
      stores.push(store);
      const settle = (id: string) => store.settle(id, [line('budget0', 1000, 5)], { event: 'tollgate.decision', 'request.id': id, outcome: 'success', 'user.id': 'ada' });
      const versions = async (day: string) => store.rollupVersions(await store.rollupKeys(day, day));
      const today = new Date(clock).toISOString().slice(0, 10);
      await settle('t1');
      const made = await versions(today);
      expect(made).toHaveLength(1);
      expect(made[0]).toMatch(/^[0-9a-f]{40}$/);
      await settle('t2');
      await settle('t3');
      expect(await versions(today)).toEqual(made);

      clock -= 86_400_000;
      const yesterday = new Date(clock).toISOString().slice(0, 10);
      await settle('p1');
      const first = await versions(yesterday);
      await settle('p2');
      const second = await versions(yesterday);
      expect(second).toHaveLength(1);
      expect(second).not.toEqual(first);
      expect((await store.rollups(yesterday, today)).map((r) => [r.day, r.calls])).toEqual([[yesterday, 2], [today, 3]]);
      expect((await store.verify()).ok).toBe(true);
    });

    it('releases from another replica, which finds the request\'s lines in the Keyv record on any shard', async () => {
      const [a, b] = [open(), open()];
      const [x, y] = await onTwoMasters();
      await a.reserve('r1', [line(x, 100, 40), line(y, 100, 40)], TTL);
      await b.release('r1');
      expect(await a.read([line(x, 100, 0), line(y, 100, 0)])).toEqual([
        { used: 0, reserved: 0 },
        { used: 0, reserved: 0 },
      ]);
    });
  });
});

describe.skipIf(!cliPresent)('RedisQuotaStore when a Redis Cluster master fails over', () => {
  let cluster: PrivateCluster;
  const prefix = uniquePrefix('failover');
  const stores: RedisQuotaStore[] = [];
  const open = (nodes = cluster.nodes) => {
    const store = new RedisQuotaStore({ clusterNodes: nodes, prefix, logger: silent, commandTimeoutMs: 500 });
    stores.push(store);
    return store;
  };
  const line = (budgetId: string, amount: number): LedgerLine => {
    const start = Math.floor(Date.now() / HOUR) * HOUR;
    return { budgetId, subject: 'ada', limit: 1000, amount, expiresAt: start + 2 * HOUR, ...lineKeys(prefix, budgetId, 'ada', [start], start) };
  };
  /** Retries `attempt` until it stops failing as QUOTA_STORE_UNAVAILABLE (a failover takes a few seconds). */
  const once = async <T>(attempt: () => Promise<T>, timeoutMs = 20_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await attempt();
      } catch (err) {
        if ((err as { code?: string }).code !== 'QUOTA_STORE_UNAVAILABLE' || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  beforeAll(async () => {
    cluster = await startPrivateCluster(3, { replicas: 1 });
  });

  afterAll(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await cluster?.stop();
  });

  it('connects through whichever seed node answers', async () => {
    const store = open(['redis://127.0.0.1:1', ...cluster.nodes.slice(0, 1)]);
    expect(await store.reserve('seed', [line('seeded', 1)], TTL)).toEqual({ ok: true });
  });

  /** A line whose master has a replica in sync, so it can fail over. */
  const failoverable = async (): Promise<LedgerLine> => {
    // A replica is only promoted once it holds the master's data: wait for its initial sync.
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      for (let i = 0; i < 40; i++) {
        const l = line(`budget${i}`, 10);
        const [owner] = await ownersOf(cluster, [l.reservedKey]);
        if (/slave0:.*state=online/.test(await cluster.cli(owner!, 'info', 'replication'))) return l;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error('no master with a replica in sync');
  };

  it('refuses while a master is down, then follows the promoted replica, replaying a queued settlement once', async () => {
    const store = open();
    const l = await failoverable();
    expect(await store.reserve('r1', [l], TTL)).toEqual({ ok: true });
    await store.settle('r1', [{ ...l, amount: 6 }]);
    expect(await store.reserve('r2', [l], TTL)).toEqual({ ok: true });
    // Let the replica copy what the master holds before the master dies.
    const [owner] = await ownersOf(cluster, [l.reservedKey]);
    await cluster.cli(owner!, 'wait', '1', '2000');

    await cluster.kill(owner!);
    const started = Date.now();
    await expect(store.reserve('r3', [l], TTL)).rejects.toMatchObject({ code: 'QUOTA_STORE_UNAVAILABLE' });
    expect(Date.now() - started).toBeLessThan(1500);
    await store.settle('r2', [{ ...l, amount: 4 }]);
    expect(store.pendingReplays()).toBe(1);

    // The replica takes over the slot; the store finds it without a restart and replays by itself.
    await once(() => store.read([l]));
    await expect.poll(() => store.pendingReplays(), { timeout: 5000 }).toBe(0);
    expect(await store.read([l])).toEqual([{ used: 10, reserved: 0 }]);
    await store.settle('r2', [{ ...l, amount: 4 }]);
    expect(await store.read([l])).toEqual([{ used: 10, reserved: 0 }]);
    expect(await store.reserve('r4', [l], TTL)).toEqual({ ok: true });
    expect(await open().read([l])).toEqual([{ used: 10, reserved: 10 }]);
  });

  it('follows a failover away from a hung master, which reports no error at all', async () => {
    const store = open();
    const l = await failoverable();
    expect(await store.reserve('h1', [l], TTL)).toEqual({ ok: true });
    const [owner] = await ownersOf(cluster, [l.reservedKey]);
    await cluster.cli(owner!, 'wait', '1', '2000');

    cluster.freeze(owner!);
    try {
      await expect(store.reserve('h2', [l], TTL)).rejects.toMatchObject({ code: 'QUOTA_STORE_UNAVAILABLE' });
      expect(await once(() => store.reserve('h3', [l], TTL))).toEqual({ ok: true });
      expect(await store.read([l])).toEqual([{ used: 0, reserved: 20 }]);
    } finally {
      cluster.thaw(owner!);
    }
  });

  it('keeps what a half-written settlement wrote (the event with its line) and replays only the line whose master was down', async () => {
    const store = open();
    const heard: Record<string, unknown>[] = [];
    store.onEvent((e) => heard.push(e));
    const down = await failoverable();
    const [downOwner] = await ownersOf(cluster, [down.reservedKey]);
    // A line on another master, sorted before the one that goes down, so it carries the event.
    let up: LedgerLine | undefined;
    for (let i = 0; i < 60 && !up; i++) {
      const l = line(`a${i}`, 10);
      if (l.reservedKey < down.reservedKey && (await ownersOf(cluster, [l.reservedKey]))[0] !== downOwner) up = l;
    }
    expect(up).toBeDefined();
    // The earlier tests may have left reservations or usage on the line that goes down.
    const [base] = await store.read([down]);
    expect(await store.reserve('p1', [up!, down], TTL)).toEqual({ ok: true });
    await cluster.cli(downOwner!, 'wait', '1', '2000');

    // Last in this suite: the master stays down (it may be the node ownersOf asks).
    await cluster.kill(downOwner!);
    const event = { 'request.id': 'p1', outcome: 'success' };
    await store.settle('p1', [{ ...up!, amount: 3 }, { ...down, amount: 4 }], event);
    // The line that answered is charged with the event, which the listeners hear now; the other waits.
    expect(heard).toEqual([event]);
    expect(store.pendingSettlements()).toEqual([{ requestId: 'p1', lines: [{ budgetId: down.budgetId, subject: 'ada', amount: 4 }] }]);

    await once(() => store.read([down]));
    await expect.poll(() => store.pendingReplays(), { timeout: 5000 }).toBe(0);
    expect(await store.read([up!, down])).toEqual([
      { used: 3, reserved: 0 },
      { used: base!.used + 4, reserved: base!.reserved },
    ]);
    expect(heard).toEqual([event]);
    const settles = (await journalOf({ clusterNodes: cluster.nodes }, prefix)).filter((e) => e.entry.body.kind === 'settle' && e.entry.body.id === 'p1');
    expect(settles.map((e) => [e.stream, e.entry.body.event !== undefined]).sort()).toEqual([
      [`${down.reservedKey}:j`, false],
      [`${up!.reservedKey}:j`, true],
    ].sort());
  });
});

describe.skipIf(!cliPresent)('RedisQuotaStore when the whole Redis Cluster is down', () => {
  let cluster: PrivateCluster;
  const prefix = uniquePrefix('clusterdown');

  beforeAll(async () => {
    cluster = await startPrivateCluster(3);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('starts while no node answers, refuses quickly, and connects by itself once the cluster is back', async () => {
    await Promise.all(cluster.ports.map((p) => cluster.kill(p)));
    const store = new RedisQuotaStore({ clusterNodes: cluster.nodes, prefix, logger: silent, commandTimeoutMs: 500 });
    try {
      const start = Math.floor(Date.now() / HOUR) * HOUR;
      const l: LedgerLine = { budgetId: 'weekly', subject: 'ada', limit: 100, amount: 10, expiresAt: start + 2 * HOUR, ...lineKeys(prefix, 'weekly', 'ada', [start], start) };
      const started = Date.now();
      await expect(store.reserve('r1', [l], TTL)).rejects.toMatchObject({ code: 'QUOTA_STORE_UNAVAILABLE' });
      expect(Date.now() - started).toBeLessThan(1500);

      for (const p of cluster.ports) await cluster.restart(p);
      await cluster.waitUntilOk();
      await expect.poll(() => store.reserve('r1', [l], TTL).catch((err: { code?: string }) => err.code), { timeout: 10_000, interval: 200 }).toEqual({ ok: true });
      expect(await store.read([l])).toEqual([{ used: 0, reserved: 10 }]);
    } finally {
      await store.close();
    }
  });
});
