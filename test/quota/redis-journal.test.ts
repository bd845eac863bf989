/**
 * The journal of the Redis ledger on a single node: entries chained in one stream in the same
 * script as the counters, listeners after the commit, recovery of expired reservations (charged
 * when dispatched, released otherwise) exactly once across replicas, rollups, retention, and the
 * audit naming the first entry that fails after each kind of tampering.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@keyv/redis';
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { pinoSink } from '../../src/metering/sink.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { bodyHash, canonicalJson, chainLink, GENESIS, recoveryEvent, verifyChain, type JournalEntry } from '../../src/quota/journal.js';
import { RedisQuotaStore, type RedisQuotaStoreOptions } from '../../src/quota/redis.js';
import fc from 'fast-check';
import { dayOf, entryText } from '../../src/quota/redisJournal.js';
import { rollupFields } from '../../src/quota/rollups.js';
import { SHA256 } from '../../src/quota/redisScripts.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { onRedisDay, startPrivateRedis } from '../helpers/redis.js';
import { redisSuite } from '../helpers/redisSuite.js';
import { startReplyCutter, type ReplyCutter } from '../helpers/replyCutter.js';
import { journalOf } from './journal-helpers.js';

const HOUR = 3600_000;
const TTL = 60_000;
const silent = pino({ level: 'silent' });

describe('RedisQuotaStore journal (single node)', () => {
  const suite = redisSuite<RedisQuotaStore>('journal');
  let clock: number;
  const now = () => clock;
  const open = (opts: Partial<RedisQuotaStoreOptions> = {}) => {
    const store = new RedisQuotaStore({ url: suite.redis.url, prefix: suite.prefix, now, logger: silent, sweepIntervalMs: 0, ...opts });
    suite.stores.push(store);
    return store;
  };
  const line = (budgetId: string, amount: number, subject = 'ada', limit = 1000): LedgerLine => {
    const start = Math.floor(clock / HOUR) * HOUR;
    return { budgetId, subject, limit, amount, expiresAt: start + 2 * HOUR, ...lineKeys(suite.prefix, budgetId, subject, [start], start) };
  };
  const entryLine = (l: LedgerLine) => ({ budgetId: l.budgetId, subject: l.subject, usageKey: l.usageKey, reservedKey: l.reservedKey, amount: l.amount, expiresAt: l.expiresAt });
  const stream = () => `${suite.prefix}{journal}:j`;
  const headLink = async () => {
    const head = (await suite.raw.get(`${suite.prefix}{journal}:jh`))!;
    return head.slice(head.indexOf(' ') + 1);
  };
  const entries = async () => (await journalOf({ url: suite.redis.url }, suite.prefix)).map((e) => e.entry);
  const callEvent = (id: string, extra: DecisionRecord = {}): DecisionRecord => ({
    event: 'tollgate.decision',
    'request.id': id,
    outcome: 'success',
    'user.id': 'ada',
    'user.teams': ['ml', 'data'],
    'user.cost_center': 'cc-42',
    'tollgate.model.served': 'openai/gpt-5-mini',
    'tollgate.tier.served': 'standard',
    'gen_ai.usage.input_tokens': 120,
    'gen_ai.usage.output_tokens': 30,
    'tollgate.cost_usd': 0.00042,
    ...extra,
  });

  beforeEach(() => {
    clock = Date.parse('2026-11-25T10:00:00Z') + suite.n * 1000;
  });

  it('computes SHA-256 in Lua exactly as node:crypto does', async () => {
    const messages = ['', 'a', 'x'.repeat(55), 'x'.repeat(56), 'x'.repeat(63), 'x'.repeat(64), 'x'.repeat(65), 'y'.repeat(119), 'é€😀 tollgate', 'z'.repeat(5000)];
    for (const m of messages) {
      const lua = await suite.raw.eval(SHA256.source, { arguments: [m] });
      expect(lua, `length ${m.length}`).toBe(createHash('sha256').update(m, 'utf8').digest('hex'));
    }
  });

  it('journals a call as one settle entry, its lines charged with its event, no reserve entry; a repeated settle appends nothing', async () => {
    const store = open();
    const [a, b] = [line('alpha', 40), line('beta', 50)];
    const event = callEvent('c1');
    await store.reserve('c1', [b, a], TTL, { user: 'ada' });
    await store.dispatch('c1');
    // The reservation and its dispatch mark are kept with the reservation, not journaled on their own.
    expect(await entries()).toEqual([]);
    await store.settle('c1', [{ ...a, amount: 12 }, { ...b, amount: 7 }], event);
    await store.settle('c1', [{ ...a, amount: 12 }, { ...b, amount: 7 }], event);

    const got = await entries();
    expect(got.map((e) => [e.seq, e.body.kind])).toEqual([[1, 'settle']]);
    expect(got[0]!.prev).toBe(GENESIS);
    expect(got[0]!.body).toEqual({ kind: 'settle', id: 'c1', at: clock, lines: [entryLine({ ...a, amount: 12 }), entryLine({ ...b, amount: 7 })], event, settledBy: 'call' });
    const stored = (await suite.raw.xRange(stream(), '-', '+')).map((e) => e.message as Record<string, string>);
    expect(got[0]!.h).toBe(bodyHash(stored[0]!.body!));
    expect(got[0]!.link).toBe(chainLink(got[0]!.prev, got[0]!.h));
    const head = (await suite.raw.get(`${suite.prefix}{journal}:jh`))!.split(' ');
    expect(verifyChain(got, { head: { seq: Number(head[0]), link: head[1]! } })).toBeUndefined();
    expect(head).toEqual(['1', got[0]!.link]);
  });

  it('leaves one entry per call: 20 settled calls, 20 entries, and a release without an event journals nothing', async () => {
    const store = open();
    for (let i = 0; i < 20; i++) {
      await store.reserve(`s${i}`, [line('alpha', 40), line('beta', 40)], TTL, { user: 'ada' }, { dispatching: true });
      await store.settle(`s${i}`, [line('alpha', 3), line('beta', 3)], callEvent(`s${i}`));
    }
    await store.reserve('r1', [line('alpha', 40)], TTL);
    await store.release('r1');
    expect(await suite.raw.xLen(stream())).toBe(20);
    expect(await store.read([line('alpha', 0)])).toEqual([{ used: 60, reserved: 0 }]);
    expect((await store.verify()).ok).toBe(true);
  });

  it('hands an event to the listeners once its entry is in the stream', async () => {
    const store = open();
    const seen: Promise<number>[] = [];
    // What the stream holds at the moment the listener runs (a command sent then runs after the script).
    store.onEvent(() => void seen.push(suite.raw.xLen(stream())));
    // Each length is read before the next write is sent: read on another connection, it could
    // otherwise run after that write too (it did once, on a loaded machine: [2, 2]).
    const heardBy = async (n: number) => {
      for (let i = 0; seen.length < n && i < 500; i++) await new Promise((r) => setTimeout(r, 2));
      expect(seen).toHaveLength(n);
      return seen[n - 1]!;
    };
    await store.reserve('c1', [line('alpha', 40)], TTL);
    await store.settle('c1', [line('alpha', 10)], callEvent('c1'));
    expect(await heardBy(1)).toBe(1);
    await store.record(callEvent('c2', { outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' }));
    expect(await heardBy(2)).toBe(2);
  });

  it('writes the event log line with the very text the journal stored for the event', async () => {
    const store = open();
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-eventlog-'));
    const sink = pinoSink(join(dir, 'events.jsonl'));
    store.onEvent((e) => sink.emit(e as never));
    await store.reserve('c1', [line('alpha', 40)], TTL);
    await store.settle('c1', [line('alpha', 10)], callEvent('c1', { 'user.id': 'ädä "q"' }));
    await sink.close!();
    const body = (await suite.raw.xRange(stream(), '-', '+'))[0]!.message.body!;
    const text = body.slice(body.indexOf('"event":') + 8, body.lastIndexOf(',"settledBy"'));
    expect(readFileSync(join(dir, 'events.jsonl'), 'utf8')).toBe(`{"level":30,${text.slice(1)}\n`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('charges an expired dispatched reservation at its reservation, once across replicas, and a late settle adds nothing', async () => {
    const [a, b] = [open(), open()];
    const heard: DecisionRecord[] = [];
    a.onEvent((e) => heard.push(e));
    b.onEvent((e) => heard.push(e));
    const [l1, l2] = [line('alpha', 40), line('beta', 50)];
    await a.reserve('c1', [l1, l2], 1000, { user: 'ada', teams: ['data'], model: 'openai/gpt-5-mini', tier: 'standard', transport: 'http' });
    await a.dispatch('c1');
    clock += 1001;

    // Both replicas sweep and read at once: each line is recovered by whichever script gets there first.
    const [, , ra, rb] = await Promise.all([a.sweep(), b.sweep(), a.read([l1, l2]), b.read([l2, l1])]);
    expect(ra).toEqual([
      { used: 40, reserved: 0 },
      { used: 50, reserved: 0 },
    ]);
    expect(rb).toEqual([
      { used: 50, reserved: 0 },
      { used: 40, reserved: 0 },
    ]);
    const recovered = (await entries()).filter((e) => e.body.kind === 'recover');
    expect(recovered.map((e) => e.body.lines)).toEqual(expect.arrayContaining([[entryLine(l1)], [entryLine(l2)]]));
    expect(recovered).toHaveLength(2);
    expect(recovered.every((e) => e.body.settledBy === 'recovery' && e.body.at === clock)).toBe(true);
    // The event goes with the first line (in reservedKey order) and is heard once, by the replica that wrote it.
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatchObject({
      'request.id': 'c1',
      outcome: 'success',
      'tollgate.settled_by': 'recovery',
      'user.id': 'ada',
      'tollgate.charged': [
        { budget: 'alpha', subject: 'ada', amount: 40 },
        { budget: 'beta', subject: 'ada', amount: 50 },
      ],
    });
    expect(recovered.find((e) => e.body.lines![0]!.budgetId === 'alpha')!.body.event).toEqual(heard[0]);
    // The Lua builds the event recoveryEvent() describes, to the byte.
    const meta = { user: 'ada', teams: ['data'], model: 'openai/gpt-5-mini', tier: 'standard', transport: 'http' };
    expect(canonicalJson(heard[0])).toBe(canonicalJson(recoveryEvent('c1', { lines: [entryLine(l1), entryLine(l2)], meta, dispatched: true }, clock)));

    await a.settle('c1', [{ ...l1, amount: 5 }, { ...l2, amount: 5 }], callEvent('c1'));
    expect(await a.read([l1, l2])).toEqual([
      { used: 40, reserved: 0 },
      { used: 50, reserved: 0 },
    ]);
    expect(heard).toHaveLength(1);
    expect((await a.verify()).ok).toBe(true);
  });

  it("lists a recovered reservation's rate-limit lines under tollgate.limits_charged, in their units, apart from its budgets", async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    // 'zeta' (a budget in micro-dollars) sorts after the limits: the event's lists do not follow the key order.
    const [budget, rpm, tpm, cap, usd] = [line('alpha', 40), line('rpm', 1), line('tpm', 90), line('cap', 1), line('zeta', 700)];
    const meta = { user: 'ada', model: 'openai/gpt-5-mini', tier: 'standard', transport: 'http', units: { alpha: 'tokens', zeta: 'micro_usd' }, limits: { rpm: 'requests', tpm: 'tokens', cap: 'calls_in_flight' } };
    await store.reserve('c1', [budget, usd, rpm, tpm, cap], 1000, meta, { dispatching: true });
    clock += 1001;
    await store.sweep();
    expect(heard).toHaveLength(1);
    expect(heard[0]!['tollgate.charged']).toEqual([
      { budget: 'alpha', subject: 'ada', amount: 40, unit: 'tokens' },
      { budget: 'zeta', subject: 'ada', amount: 700, unit: 'micro_usd' },
    ]);
    expect(heard[0]!['tollgate.limits_charged']).toEqual([
      { limit: 'cap', subject: 'ada', amount: 0, unit: 'calls_in_flight' },
      { limit: 'rpm', subject: 'ada', amount: 1, unit: 'requests' },
      { limit: 'tpm', subject: 'ada', amount: 90, unit: 'tokens' },
    ]);
    // The Lua builds the event recoveryEvent() describes, to the byte (lines in the store's order).
    const ordered = [budget, cap, rpm, tpm, usd].map(entryLine);
    expect(canonicalJson(heard[0])).toBe(canonicalJson(recoveryEvent('c1', { lines: ordered, meta, dispatched: true }, clock)));
    expect((await store.verify()).ok).toBe(true);
  });

  it('releases an expired reservation that never reached a provider, with a release entry and a failed event', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    const l = line('alpha', 40);
    await store.reserve('c1', [l], 1000, { user: 'ada' });
    clock += 1000;
    expect(await store.read([l])).toEqual([{ used: 0, reserved: 0 }]);
    const last = (await entries()).at(-1)!;
    expect(last.body).toMatchObject({ kind: 'release', id: 'c1', at: clock, lines: [entryLine(l)] });
    expect(heard).toEqual([last.body.event]);
    expect(heard[0]).toMatchObject({ outcome: 'failed', 'error.code': 'INTERNAL', 'tollgate.settled_by': 'recovery' });
    expect(canonicalJson(heard[0])).toBe(canonicalJson(recoveryEvent('c1', { lines: [entryLine(l)], meta: { user: 'ada' }, dispatched: false }, clock)));
    // Released, not settled: the same id may reserve again.
    expect(await store.reserve('c1', [l], TTL)).toEqual({ ok: true });
    expect(await store.read([l])).toEqual([{ used: 0, reserved: 40 }]);
  });

  /** A store that talks to Redis through a proxy able to lose a reply, and the events its sinks hear. */
  const throughCutter = async (test: (t: { cutter: ReplyCutter; store: RedisQuotaStore; heard: DecisionRecord[]; heardAtLeast: (n: number) => Promise<void> }) => Promise<void>) => {
    const target = new URL(suite.redis.url);
    const cutter = await startReplyCutter({ host: target.hostname, port: Number(target.port) });
    try {
      const store = open({ url: cutter.url, commandTimeoutMs: 2000 });
      const heard: DecisionRecord[] = [];
      store.onEvent((e) => heard.push(e));
      // The store replays a write once it is connected again.
      const heardAtLeast = async (n: number) => {
        const deadline = Date.now() + 10_000;
        while (heard.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      };
      await test({ cutter, store, heard, heardAtLeast });
    } finally {
      await cutter.close();
    }
  };

  it('hears a settlement whose reply was lost once Redis had applied it: the replay finds it settled by the call and hands its event to the sinks', () =>
    throughCutter(async ({ cutter, store, heard, heardAtLeast }) => {
      const l1 = line('alpha', 40);
      expect(await store.reserve('lost', [l1], TTL, { user: 'ada' }, { dispatching: true })).toEqual({ ok: true });
      cutter.cutNextReply();
      await store.settle('lost', [{ ...l1, amount: 25 }], callEvent('lost'));
      expect(cutter.cut).toBe(1);
      await heardAtLeast(1);
      expect(heard.map((e) => e['request.id'])).toEqual(['lost']);
      const settles = (await entries()).filter((e) => e.body.kind === 'settle');
      expect(settles.map((e) => e.body.id)).toEqual(['lost']);
      expect(await suite.raw.get(l1.usageKey)).toBe('25');
      expect((await store.verify()).ok).toBe(true);
    }));

  it('journals a refusal and a release whose replies were lost once each, and the sinks hear each once', () =>
    throughCutter(async ({ cutter, store, heard, heardAtLeast }) => {
      cutter.cutNextReply();
      await store.record(callEvent('refused', { outcome: 'refused', 'error.code': 'BUDGET_EXCEEDED' }));
      await heardAtLeast(1);
      const l1 = line('alpha', 40);
      expect(await store.reserve('failed', [l1], TTL, { user: 'ada' })).toEqual({ ok: true });
      cutter.cutNextReply();
      await store.release('failed', callEvent('failed', { outcome: 'failed', 'error.code': 'PROVIDER_UNAVAILABLE' }));
      await heardAtLeast(2);
      await new Promise((r) => setTimeout(r, 300));
      expect(cutter.cut).toBe(2);
      expect(heard.map((e) => e['request.id'])).toEqual(['refused', 'failed']);
      const closing = (await entries()).filter((e) => e.body.kind === 'refuse' || e.body.kind === 'release');
      expect(closing.map((e) => [e.body.kind, e.body.id])).toEqual([
        ['refuse', 'refused'],
        ['release', 'failed'],
      ]);
      expect((await store.verify()).ok).toBe(true);
    }));

  it('leaves recovery to the gateways when opened without it: a reader with no event sinks (the CLI) never takes a recovery event from them', async () => {
    const gateway = open();
    const heard: DecisionRecord[] = [];
    gateway.onEvent((e) => heard.push(e));
    const reader = open({ recover: false });
    const l1 = line('alpha', 40);
    const meta = { user: 'ada', model: 'openai/gpt-5-mini', tier: 'standard', transport: 'http' };
    expect(await gateway.reserve('sent', [l1], 1000, meta, { dispatching: true })).toEqual({ ok: true });
    clock += 1001;
    // The reader sees the expired reservation as still held (nobody has closed it yet) and closes nothing.
    expect(await reader.read([l1])).toEqual([{ used: 0, reserved: 40 }]);
    expect((await entries()).filter((e) => e.body.kind === 'recover')).toEqual([]);
    // The gateway's sweep closes it, and the gateway's sinks hear it.
    await gateway.sweep();
    expect(heard.map((e) => [e['request.id'], e['tollgate.settled_by']])).toEqual([['sent', 'recovery']]);
    expect(await reader.read([l1])).toEqual([{ used: 40, reserved: 0 }]);
    expect((await gateway.verify()).ok).toBe(true);
  });

  it('tells a call reserved with dispatching (the mark written with the reservation) from one never dispatched: recovery charges the first and releases the second', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    const [l1, l2] = [line('alpha', 40), line('beta', 30)];
    const meta = { user: 'ada', model: 'openai/gpt-5-mini', tier: 'standard', transport: 'http' };
    expect(await store.reserve('sent', [l1], 1000, meta, { dispatching: true })).toEqual({ ok: true });
    expect(await store.reserve('kept', [l2], 1000, meta)).toEqual({ ok: true });
    // With the mark already written, dispatch() has nothing to send for 'sent'.
    await store.dispatch('sent');
    clock += 1000;
    expect(await store.read([l1, l2])).toEqual([
      { used: 40, reserved: 0 },
      { used: 0, reserved: 0 },
    ]);
    const closing = (await entries()).filter((e) => e.body.kind === 'recover' || e.body.kind === 'release');
    expect(closing.map((e) => [e.body.kind, e.body.id, e.body.settledBy])).toEqual([
      ['recover', 'sent', 'recovery'],
      ['release', 'kept', undefined],
    ]);
    expect(heard.map((e) => [e['request.id'], e.outcome, e['tollgate.settled_by']])).toEqual([
      ['sent', 'success', 'recovery'],
      ['kept', 'failed', 'recovery'],
    ]);
    expect((await store.verify()).ok).toBe(true);
  });

  it('a call reserved with dispatching and settled is charged what it consumed, and its expiry afterwards recovers nothing', async () => {
    const store = open();
    const l = line('alpha', 40);
    await store.reserve('c1', [l], 1000, { user: 'ada' }, { dispatching: true });
    await store.dispatch('c1');
    await store.settle('c1', [{ ...l, amount: 9 }], callEvent('c1'));
    clock += 5000;
    expect(await store.read([l])).toEqual([{ used: 9, reserved: 0 }]);
    expect((await entries()).map((e) => e.body.kind)).toEqual(['settle']);
  });

  it('sweeps lines no call touches, and forgets a line once it holds nothing', async () => {
    const store = open();
    const l = line('alpha', 40);
    await store.reserve('c1', [l], 1000);
    await store.dispatch('c1');
    expect(await store.sweep()).toEqual({ lines: 0, closed: 0 });
    clock += 5000;
    expect(await store.sweep()).toEqual({ lines: 1, closed: 1 });
    expect(await suite.raw.get(l.usageKey)).toBe('40');
    expect(await suite.raw.zCard(`${suite.prefix}{journal}:open`)).toBe(0);
    expect(await store.sweep()).toEqual({ lines: 0, closed: 0 });
  });

  it('rolls up tokens, cost, calls, refusals and failures per day, user, teams, cost centre, model and tier', async () => {
    const store = open();
    await store.reserve('c1', [line('alpha', 400)], TTL);
    await store.settle('c1', [line('alpha', 150)], callEvent('c1'));
    await store.reserve('c2', [line('alpha', 400)], TTL);
    await store.settle('c2', [line('alpha', 10)], callEvent('c2', { 'gen_ai.usage.input_tokens': 6, 'gen_ai.usage.output_tokens': 4, 'tollgate.cost_usd': 0.00001 }));
    await store.record(callEvent('c3', { outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED', 'tollgate.model.served': undefined, 'tollgate.tier.served': undefined, 'gen_ai.request.model': 'openai/gpt-5', 'gen_ai.usage.input_tokens': 0, 'gen_ai.usage.output_tokens': 0, 'tollgate.cost_usd': 0 }));
    await store.reserve('c4', [line('alpha', 400)], TTL);
    await store.release('c4', callEvent('c4', { outcome: 'failed', 'error.code': 'PROVIDER_ERROR', 'gen_ai.usage.input_tokens': 0, 'gen_ai.usage.output_tokens': 0, 'tollgate.cost_usd': 0 }));

    const day = dayOf(clock);
    const rows = await store.rollups(day, day);
    const base = { day, user: 'ada', teams: ['data', 'ml'], costCenter: 'cc-42', recovered: 0 };
    expect(rows).toEqual([
      { ...base, model: 'openai/gpt-5-mini', tier: 'standard', calls: 3, inputTokens: 126, outputTokens: 34, costMicroUsd: 430, refused: {}, failed: { PROVIDER_ERROR: 1 } },
      { ...base, model: 'openai/gpt-5', tier: '', calls: 1, inputTokens: 0, outputTokens: 0, costMicroUsd: 0, refused: { BUDGET_EXHAUSTED: 1 }, failed: {} },
    ]);
    expect(await store.rollups('2020-01-01', '2020-01-31')).toEqual([]);
    // The day's hash gets its lifetime (400 days by default) when its first field is made.
    expect(await suite.raw.pTTL(`${suite.prefix}{journal}:roll:${day}`)).toBeGreaterThan(399 * 86_400_000);
    // The rollups are what the journal's events add up to.
    const report = await store.verify();
    expect(report.rollups).toEqual({ checked: 1, mismatches: [] });
    expect(report.ok).toBe(true);
  });

  describe('verify', () => {
    /** A journal of 7 entries, one per call: four settled calls, two refusals, a release. */
    const history = async () => {
      const store = open();
      await store.reserve('c1', [line('alpha', 40), line('beta', 40)], TTL, { user: 'ada' });
      await store.dispatch('c1');
      await store.settle('c1', [line('alpha', 12), line('beta', 13)], callEvent('c1'));
      await store.record(callEvent('c2', { outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' }));
      await store.reserve('c3', [line('alpha', 40)], TTL, { user: 'ada' });
      await store.settle('c3', [line('alpha', 5)], callEvent('c3'));
      await store.reserve('c4', [line('alpha', 40)], TTL);
      await store.release('c4', callEvent('c4', { outcome: 'failed', 'error.code': 'PROVIDER_ERROR' }));
      await store.reserve('c5', [line('alpha', 40)], TTL, { user: 'ada' }, { dispatching: true });
      await store.settle('c5', [line('alpha', 2)], callEvent('c5'));
      await store.record(callEvent('c6', { outcome: 'refused', 'error.code': 'RATE_LIMITED' }));
      await store.reserve('c7', [line('alpha', 40)], TTL, { user: 'ada' }, { dispatching: true });
      await store.settle('c7', [line('alpha', 1)], callEvent('c7'));
      return store;
    };
    const streamEntries = async () => (await suite.raw.xRange(stream(), '-', '+')).map((e) => ({ id: String(e.id), message: e.message as Record<string, string> }));
    /** Replaces the stream with `rows` (fields as given), as a forger with write access would. */
    const rewrite = async (rows: Record<string, string>[]) => {
      await suite.raw.del(stream());
      for (const m of rows) await suite.raw.xAdd(stream(), '*', m);
    };

    it('passes on an untouched journal, with the counters equal to the charges', async () => {
      const store = await history();
      const report = await store.verify();
      expect(report.streams).toEqual([{ stream: stream(), entries: 7, firstSeq: 1, lastSeq: 7, trimmed: false }]);
      expect(report.counters).toEqual({ checked: 2, skipped: 0, mismatches: [] });
      expect(report.events).toEqual({ charges: 4, missing: [], pending: [] });
      expect(report.ok).toBe(true);
    });

    it('names an edited entry', async () => {
      const store = await history();
      const rows = (await streamEntries()).map((e) => e.message);
      const body = JSON.parse(rows[2]!.body!) as { lines: { amount: number }[] };
      body.lines[0]!.amount = 1;
      rows[2]!.body = JSON.stringify(body);
      await rewrite(rows);
      const report = await store.verify();
      expect(report.ok).toBe(false);
      expect(report.streams[0]!.fault).toMatchObject({ seq: 3, reason: expect.stringContaining('altered') });
    });

    it('names a deleted entry', async () => {
      const store = await history();
      const victim = (await streamEntries())[4]!;
      await suite.raw.xDel(stream(), victim.id);
      expect((await store.verify()).streams[0]!.fault).toMatchObject({ seq: 5, reason: expect.stringContaining('missing') });
    });

    it('names reordered entries', async () => {
      const store = await history();
      const rows = (await streamEntries()).map((e) => e.message);
      [rows[5], rows[6]] = [rows[6]!, rows[5]!];
      await rewrite(rows);
      expect((await store.verify()).streams[0]!.fault).toMatchObject({ seq: 6, reason: expect.stringContaining('out of order') });
    });

    it('sees entries trimmed from the beginning when no retention is configured, and from the end against the head', async () => {
      const store = await history();
      await suite.raw.xTrim(stream(), 'MAXLEN', 4);
      expect((await store.verify()).streams[0]!.fault).toMatchObject({ seq: 1, reason: expect.stringContaining('missing') });
      // With retention, a trimmed start is expected: verification starts from the first kept entry's prev.
      expect((await store.verify({ trimmed: true })).streams[0]).toMatchObject({ trimmed: true, firstSeq: 4, lastSeq: 7 });
      expect((await store.verify({ trimmed: true })).streams[0]!.fault).toBeUndefined();

      const last = (await streamEntries()).at(-1)!;
      await suite.raw.xDel(stream(), last.id);
      expect((await store.verify({ trimmed: true })).streams[0]!.fault).toMatchObject({ seq: 7, reason: expect.stringContaining('removed from the end') });
    });

    it('finds a counter changed outside the journal, and a charge whose event was removed with a rebuilt chain', async () => {
      const store = await history();
      await suite.raw.incrBy(line('beta', 0).usageKey, 5);
      let report = await store.verify();
      expect(report.counters.mismatches).toEqual([{ usageKey: line('beta', 0).usageKey, counter: 18, journal: 13 }]);

      // A forger who drops the event and recomputes every hash and link passes the chain check, not the event check.
      const rows = (await streamEntries()).map((e) => e.message);
      let prev = GENESIS;
      const forged: Record<string, string>[] = rows.map((m, i) => {
        const body = JSON.parse(m.body!) as Record<string, unknown>;
        if (i === 0) delete body.event;
        const text = canonicalJson(body);
        const h = bodyHash(text);
        const link = chainLink(prev, h);
        const out = { seq: m.seq!, h, prev, link, body: text };
        prev = link;
        return out;
      });
      await rewrite(forged);
      await suite.raw.set(`${suite.prefix}{journal}:jh`, `${forged.length} ${prev}`);
      report = await store.verify();
      expect(report.streams[0]!.fault).toBeUndefined();
      expect(report.events.missing).toEqual([{ id: 'c1', stream: stream(), seq: 1 }]);
      expect(report.rollups.mismatches.length).toBeGreaterThan(0);
      expect(report.ok).toBe(false);
    });
  });

  it('waits for an event the entry of another line names (eventLine) while that line is still reserved, and reports it missing once it is not', async () => {
    const store = open();
    const [carrier, other] = [line('alpha', 40), line('beta', 40)];
    // What a cluster writes when the line that carries the event has not settled yet: the other
    // line's settle entry, naming the carrier, and the carrier still holding the reservation.
    const body = entryText({ kind: 'settle', id: 'c1', at: clock, lines: [entryLine({ ...other, amount: 7 })], settledBy: 'call', eventLine: carrier.reservedKey });
    const h = bodyHash(body);
    const link = chainLink(GENESIS, h);
    await suite.raw.xAdd(stream(), '*', { seq: '1', h, prev: GENESIS, link, body });
    await suite.raw.set(`${suite.prefix}{journal}:jh`, `1 ${link}`);
    await suite.raw.incrBy(other.usageKey, 7);
    await suite.raw.hSet(carrier.reservedKey, 'c1', '40');
    let report = await store.verify();
    expect(report.events).toEqual({ charges: 1, missing: [], pending: ['c1'] });
    expect(report.ok).toBe(true);
    await suite.raw.hDel(carrier.reservedKey, 'c1');
    report = await store.verify();
    expect(report.events).toEqual({ charges: 1, missing: [{ id: 'c1', stream: stream(), seq: 1 }], pending: [] });
    expect(report.ok).toBe(false);
  });

  it('trims the stream to about maxLen entries, and verifies from the first kept entry', async () => {
    const store = open({ journal: { maxLen: 10 } });
    for (let i = 0; i < 250; i++) await store.record(callEvent(`x${i}`, { outcome: 'refused', 'error.code': 'BUDGET_EXHAUSTED' }));
    const length = await suite.raw.xLen(stream());
    // Approximate trimming drops whole macro-nodes (at most 100 entries or 4 KB each): fewer than 250, at least 10.
    expect(length).toBeGreaterThanOrEqual(10);
    expect(length).toBeLessThan(250);
    const report = await store.verify();
    expect(report.streams[0]).toMatchObject({ trimmed: true, lastSeq: 250, entries: length, firstSeq: 251 - length });
    expect(report.ok).toBe(true);
  });

  it('trims entries older than maxAgeMs by Redis time (MINID)', async () => {
    const store = open({ journal: { maxAgeMs: 200 } });
    const redisMs = async () => {
      const [s, us] = await suite.raw.time();
      return Number(s) * 1000 + Math.floor(Number(us) / 1000);
    };
    for (let i = 0; i < 120; i++) await store.record(callEvent(`old${i}`, { outcome: 'refused', 'error.code': 'X' }));
    // Stream ids are Redis's clock: let it pass the age before the next entry.
    const from = await redisMs();
    while ((await redisMs()) - from < 250) await new Promise((r) => setTimeout(r, 20));
    await store.record(callEvent('new', { outcome: 'refused', 'error.code': 'X' }));
    const kept = (await entries()).map((e) => e.body.id);
    // Approximate trimming drops whole macro-nodes (at most 100 entries or 4 KB each): the newest
    // node stays whole, so some old entries may stay with the new one.
    expect(kept).toContain('new');
    expect(kept.length).toBeLessThan(121);
    expect(kept.at(-1)).toBe('new');
    expect((await store.verify()).ok).toBe(true);
  });

  it('journals an admin adjustment so that the counters still equal the journal', async () => {
    const store = open();
    const l = line('alpha', 50);
    await store.settle('c1', [l], callEvent('c1'));
    expect(await store.adjust(l.usageKey, -20, l.expiresAt, { by: 'ops', reason: 'refund' })).toBe(30);
    const last = (await entries()).at(-1)!;
    expect(last.body).toMatchObject({ kind: 'admin', lines: [{ usageKey: l.usageKey, amount: -20 }], meta: { by: 'ops', reason: 'refund' } });
    expect((await store.verify()).counters).toEqual({ checked: 1, skipped: 0, mismatches: [] });
  });

  it('names a rollup hash once, by the entry that made it: later writes of the same day leave its version as it was, and the audit checks that name', async () => {
    clock = await onRedisDay(suite.raw);
    const store = open();
    const day = dayOf(clock);
    const roll = `${suite.prefix}{journal}:roll:${day}`;
    await store.reserve('c1', [line('alpha', 400)], TTL);
    await store.settle('c1', [line('alpha', 150)], callEvent('c1'));
    const made = await headLink();
    expect(await suite.raw.hGet(roll, '#')).toBe(made);
    expect(await suite.raw.pTTL(roll)).toBeGreaterThan(399 * 86_400_000);
    // The same row again, a new row (another user), an entry that adds no rollup (a console action).
    await store.record(callEvent('c2', { outcome: 'refused', 'error.code': 'POLICY_DENIED' }));
    await store.settle('c3', [line('alpha', 10, 'bob')], callEvent('c3', { 'user.id': 'bob' }));
    await store.recordAction('v1', { action: 'view' });
    expect(await suite.raw.hGet(roll, '#')).toBe(made);
    expect((await store.rollups(day, day)).map((r) => [r.user, r.calls])).toEqual([['ada', 2], ['bob', 1]]);
    expect((await store.verify()).ok).toBe(true);

    await suite.raw.hSet(roll, '#', 'f'.repeat(40));
    const report = await store.verify();
    expect(report.rollups.mismatches).toEqual([{ key: roll, field: '#', rollup: 'f'.repeat(40), journal: (await entries()).at(-2)!.link }]);
    expect(report.ok).toBe(false);
  });

  it('names a past day\'s rollup hash anew on every write into it (a gateway clock a day behind Redis\'s)', async () => {
    clock = (await onRedisDay(suite.raw)) - 86_400_000;
    const store = open();
    const roll = `${suite.prefix}{journal}:roll:${dayOf(clock)}`;
    await store.record(callEvent('p1', { outcome: 'refused', 'error.code': 'POLICY_DENIED' }));
    const first = await headLink();
    expect(await suite.raw.hGet(roll, '#')).toBe(first);
    await store.settle('p2', [line('alpha', 20)], callEvent('p2'));
    const second = await headLink();
    expect(second).not.toBe(first);
    expect(await suite.raw.hGet(roll, '#')).toBe(second);
    expect(await suite.raw.pTTL(roll)).toBeGreaterThan(399 * 86_400_000);
    expect((await store.verify()).ok).toBe(true);
    // The version names an entry that added to the hash, not just any entry of the journal.
    await store.recordAction('v1', { action: 'view' });
    await suite.raw.hSet(roll, '#', await headLink());
    expect((await store.verify()).rollups.mismatches.map((m) => m.field)).toEqual(['#']);
  });

  it('writes no version on a write into today\'s hash once the hash and the row exist: one TIME in place of the HSET', async () => {
    const own = await startPrivateRedis();
    const client = createClient({ url: own.url });
    await client.connect();
    const store = new RedisQuotaStore({ url: own.url, prefix: suite.prefix, now: () => clock, logger: silent, sweepIntervalMs: 0 });
    try {
      clock = await onRedisDay(client);
      const refused = (id: string) => callEvent(id, { outcome: 'refused', 'error.code': 'POLICY_DENIED' });
      await store.record(refused('m0'));
      await client.configResetStat();
      for (let i = 1; i <= 5; i++) await store.record(refused(`m${i}`));
      const calls = (cmd: string, info: string) => Number(new RegExp(`^cmdstat_${cmd}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
      const info = await client.info('commandstats');
      expect(['hincrby', 'time', 'hset', 'hsetnx', 'pttl', 'pexpire'].map((c) => calls(c, info))).toEqual([25, 5, 0, 0, 0, 0]);
    } finally {
      await store.close();
      client.destroy();
      await own.stop();
    }
  });

  it('builds in Lua the recovery event and rollups recoveryEvent() and rollupFields() describe, whatever the meta holds', async () => {
    const text = fc.oneof(fc.string(), fc.constantFrom('a/b', 'quote " and \\ back', 'tab\tnl\n', 'ünïcødé €', '😀', '\u0001'));
    const meta = fc.record(
      { user: text, teams: fc.array(text, { maxLength: 3 }), costCenter: text, model: text, tier: text, transport: text, policyVersion: text, units: fc.constant({ alpha: 'micro_usd' }) },
      { requiredKeys: [] },
    );
    let k = 0;
    await fc.assert(
      fc.asyncProperty(meta, fc.boolean(), fc.integer({ min: 0, max: 400 * 86_400_000 }), async (m, dispatched, shift) => {
        const store = open();
        const heard: DecisionRecord[] = [];
        store.onEvent((e) => heard.push(e));
        const id = `p${++k}`;
        const lines = [line('alpha', 40, 'x y'), line('beta', 5)];
        await store.reserve(id, lines, 1000, m);
        if (dispatched) await store.dispatch(id);
        clock += 1000 + shift;
        await store.read(lines);
        const expected = recoveryEvent(id, { lines: lines.map(entryLine).sort((a, b) => (a.reservedKey < b.reservedKey ? -1 : 1)), meta: m, dispatched }, clock);
        expect(heard).toHaveLength(1);
        expect(canonicalJson(heard[0])).toBe(canonicalJson(expected));
        const day = dayOf(clock);
        const rolled = await suite.raw.hGetAll(`${suite.prefix}{journal}:roll:${day}`);
        const want = rollupFields(expected);
        for (let i = 0; i < want.length; i += 2) expect(Number(rolled[want[i] as string])).toBeGreaterThanOrEqual(want[i + 1] as number);
        expect((await store.verify()).ok).toBe(true);
        clock -= shift;
      }),
      { numRuns: 25 },
    );
  });

  it('stores every entry body as JSON text that hashes to its h, in the documented key order', async () => {
    const store = open();
    await store.reserve('c1', [line('alpha', 40)], TTL, { user: 'ädä', note: 'a/b "q"' });
    await store.dispatch('c1');
    clock += TTL;
    await store.read([line('alpha', 0)]);
    await store.reserve('c2', [line('alpha', 40)], TTL);
    await store.settle('c2', [line('alpha', 7)], callEvent('c2', { 'user.id': 'ädä "q" a/b' }));
    const stored = (await suite.raw.xRange(stream(), '-', '+')).map((e) => e.message as Record<string, string>);
    for (const m of stored) expect(bodyHash(m.body!)).toBe(m.h);
    const bodies = stored.map((m) => JSON.parse(m.body!) as JournalEntry['body']);
    expect(bodies.map((b) => b.kind)).toEqual(['recover', 'settle']);
    expect(Object.keys(bodies[1]!)).toEqual(['kind', 'id', 'at', 'lines', 'event', 'settledBy']);
    expect(Object.keys(bodies[1]!.lines![0]!)).toEqual(['budgetId', 'subject', 'usageKey', 'reservedKey', 'amount', 'expiresAt']);
    expect((await store.verify()).ok).toBe(true);
  });

  it('writes every field an entry body holds, known or not, as JSON that reads back the same', () => {
    const value = fc.jsonValue().filter((v) => v !== null);
    fc.assert(
      fc.property(fc.string(), fc.integer(), fc.dictionary(fc.string(), value), (id, at, extra) => {
        const body = { ...extra, kind: 'alert', id, at, settledBy: undefined } as unknown as JournalEntry['body'];
        const { settledBy: _, ...want } = body;
        expect(JSON.parse(entryText(body))).toEqual(JSON.parse(JSON.stringify(want)));
      }),
      { numRuns: 500 },
    );
  });

  it('verifies a journal written in the earlier canonical form, and sees one edited byte even where the JSON means the same', async () => {
    const store = open();
    const l = line('alpha', 40);
    // Entries as tollgate wrote them before the body text was kept as written: canonical JSON, the
    // reserve entry with its meta.
    const bodies = [
      { kind: 'reserve' as const, id: 'old', at: clock, expiresAt: clock + TTL, lines: [entryLine(l)], meta: { user: 'ada' } },
      { kind: 'settle' as const, id: 'old', at: clock, lines: [entryLine({ ...l, amount: 12 })], event: callEvent('old'), settledBy: 'call' as const },
    ];
    let prev = GENESIS;
    for (const [i, body] of bodies.entries()) {
      const text = canonicalJson(body);
      const h = bodyHash(text);
      const link = chainLink(prev, h);
      await suite.raw.xAdd(stream(), '*', { seq: String(i + 1), h, prev, link, body: text });
      prev = link;
    }
    await suite.raw.set(`${suite.prefix}{journal}:jh`, `2 ${prev}`);
    await suite.raw.incrBy(l.usageKey, 12);
    await suite.raw.hSet(`${suite.prefix}{journal}:roll:${dayOf(clock)}`, Object.fromEntries(chunk(rollupFields(callEvent('old')))));
    expect((await store.verify()).ok).toBe(true);

    // The same JSON with a space added is another text: its hash no longer matches.
    const [first, second] = (await suite.raw.xRange(stream(), '-', '+')).map((e) => ({ id: String(e.id), m: e.message as Record<string, string> }));
    await suite.raw.del(stream());
    await suite.raw.xAdd(stream(), '*', first!.m);
    await suite.raw.xAdd(stream(), '*', { ...second!.m, body: second!.m.body!.replace('"kind":', '"kind": ') });
    expect((await store.verify()).streams[0]!.fault).toMatchObject({ seq: 2, reason: expect.stringContaining('altered') });
  });
});

function chunk(flat: (string | number)[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([String(flat[i]), String(flat[i + 1])]);
  return out;
}
