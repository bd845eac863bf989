/**
 * The Redis store's replay queue kept on disk (src/quota/spill.ts): writes queued while Redis is
 * down are in the spill file before the write returns, a store opened later on the same directory
 * writes what an earlier one left, each once, and a store that is still open keeps its own file.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { readSpill } from '../../src/quota/spill.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { captureLog } from '../helpers/log.js';
import { hourLine, startPrivateRedis, uniquePrefix, untilReachable, type PrivateRedis } from '../helpers/redis.js';

const HOUR = 3600_000;
const TTL = 10 * 60_000;

describe('RedisQuotaStore with a replay spill', () => {
  let redis: PrivateRedis;
  let prefix: string;
  let dir: string;
  const stores: RedisQuotaStore[] = [];
  const open = (spillDir = dir, bounds: { maxPendingReplays?: number; maxSpilledReplays?: number } = {}) => {
    const { logger, entries } = captureLog();
    const store = new RedisQuotaStore({ url: redis.url, prefix, commandTimeoutMs: 300, logger, spillDir, sweepIntervalMs: 0, ...bounds });
    stores.push(store);
    return { store, lines: () => entries };
  };
  const line = (amount: number): LedgerLine => hourLine(prefix, amount, 10_000);
  /** Waits until the store answers again, without opening a new store. */
  const reachable = (store: RedisQuotaStore) => untilReachable(store, line(0));
  const files = () => readdirSync(dir).filter((f) => f.startsWith('spill-'));
  const pendingOnDisk = () => files().flatMap((f) => readSpill<{ requestId: string }>(readFileSync(join(dir, f), 'utf8')).entries.map((e) => e.requestId));
  /** A file name as a process now gone (pid 999999) would have written it for `keyPrefix`. */
  const orphan = (token: string, keyPrefix = prefix) => join(dir, `spill-${createHash('sha256').update(keyPrefix).digest('hex').slice(0, 12)}-999999-${token}.ndjson`);
  const event = (id: string): DecisionRecord => ({ 'request.id': id, outcome: 'refused' });

  beforeEach(async () => {
    redis = await startPrivateRedis({ appendonly: true });
    prefix = uniquePrefix('spill');
    dir = join(mkdtempSync(join(tmpdir(), 'tollgate-spill-')), 'redis-spill');
  });
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await redis.stop();
    rmSync(join(dir, '..'), { recursive: true, force: true });
  });

  it('writes nothing to disk while Redis answers', async () => {
    const { store } = open();
    await reachable(store);
    await store.record(event('r1'));
    expect(await store.reserve('c1', [line(100)], TTL)).toEqual({ ok: true });
    await store.settle('c1', [line(40)], { 'request.id': 'c1', outcome: 'success' });
    expect(() => readdirSync(dir)).toThrow(/ENOENT/);
  });

  it('has each queued write on disk when the write returns, and empties the file once they are written', async () => {
    const { store } = open();
    const heard: unknown[] = [];
    store.onEvent((e) => heard.push(e['request.id']));
    await reachable(store);
    expect(await store.reserve('c1', [line(100)], TTL)).toEqual({ ok: true });
    await redis.kill();
    await store.record(event('r1'));
    expect(pendingOnDisk()).toEqual(['r1']);
    await store.settle('c1', [line(30)], { 'request.id': 'c1', outcome: 'success' });
    expect(pendingOnDisk()).toEqual(['r1', 'c1']);

    await redis.restart();
    await reachable(store);
    await store.flushReplays();
    expect(heard).toEqual(['r1', 'c1']);
    expect(await store.read([line(0)])).toEqual([{ used: 30, reserved: 0 }]);
    await store.record(event('settled-after')); // the file's writes are in order with the truncation
    await new Promise((r) => setTimeout(r, 100));
    expect(files().map((f) => readFileSync(join(dir, f), 'utf8'))).toEqual(['']);
    await store.close();
    expect(files()).toEqual([]);
  });

  it('leaves what it could not write for the next store on the directory, which writes each once', async () => {
    const first = open();
    await reachable(first.store);
    for (const id of ['c1', 'c2']) expect(await first.store.reserve(id, [line(100)], TTL)).toEqual({ ok: true });
    await redis.kill();
    await first.store.settle('c1', [line(25)], { 'request.id': 'c1', outcome: 'success' });
    await first.store.release('c2', { 'request.id': 'c2', outcome: 'failed' });
    await first.store.record(event('r1'));
    await first.store.close();
    expect(first.lines().map((l) => l.event)).toContain('quota_replay_spilled');
    expect(first.lines().map((l) => l.event)).not.toContain('quota_replay_lost');
    expect(pendingOnDisk()).toEqual(['c1', 'c2', 'r1']);

    await redis.restart();
    const second = open();
    const heard: unknown[] = [];
    second.store.onEvent((e) => heard.push(e['request.id']));
    expect(second.store.pendingReplays()).toBe(3);
    expect(second.lines().find((l) => l.event === 'quota_replay_restored')).toMatchObject({ writes: 3, files: 1 });
    await reachable(second.store);
    await second.store.flushReplays();
    expect(heard).toEqual(['c1', 'c2', 'r1']);
    expect(await second.store.read([line(0)])).toEqual([{ used: 25, reserved: 0 }]);
    // The file it took them from is gone once they were in its own; its own is empty now.
    expect(pendingOnDisk()).toEqual([]);

    // Written again by a third store (as if the second had died before noting them done): counted once.
    writeFileSync(orphan('abcdef'), `${JSON.stringify({ s: 1, w: { kind: 'settle', requestId: 'c1', lines: [line(25)], event: { 'request.id': 'c1', outcome: 'success' }, markerMs: 24 * HOUR, notAfter: Date.now() + HOUR } })}\n`);
    const third = open();
    const heardAgain: unknown[] = [];
    third.store.onEvent((e) => heardAgain.push(e['request.id']));
    await reachable(third.store);
    await third.store.flushReplays();
    expect(await third.store.read([line(0)])).toEqual([{ used: 25, reserved: 0 }]);
    // Its listeners hear the event again: a process that died after writing it may not have passed
    // it on, so a taken-over write reaches the sinks at least once (the journal holds it once).
    expect(heardAgain).toEqual(['c1']);
  });

  it('leaves a store that is still open its own file', async () => {
    const first = open();
    await reachable(first.store);
    await redis.kill();
    await first.store.record(event('r1'));
    const second = open();
    expect(second.store.pendingReplays()).toBe(0);
    expect(pendingOnDisk()).toEqual(['r1']);
  });

  it('skips a line cut short by a crash and writes the rest', async () => {
    const entry = (s: number, id: string) => JSON.stringify({ s, w: { kind: 'record', requestId: id, event: event(id) } });
    mkdirSync(dir, { recursive: true });
    writeFileSync(orphan('0a0b0c'), `${entry(1, 'r1')}\n${entry(2, 'r2')}\n{"d":1}\n${entry(3, 'r3').slice(0, 20)}`);
    const { store, lines } = open();
    expect(store.pendingReplays()).toBe(1);
    expect(lines().find((l) => l.event === 'quota_spill_torn')).toMatchObject({ lines: 1 });
    const heard: unknown[] = [];
    store.onEvent((e) => heard.push(e['request.id']));
    await reachable(store);
    await store.flushReplays();
    expect(heard).toEqual(['r2']);
  });

  it('keeps the queue in memory, and says so, when the directory cannot be made', async () => {
    // Under a regular file: no directory can be made there, whoever runs the test.
    const file = join(dir, '..', 'a-file');
    writeFileSync(file, '');
    const { store, lines } = open(join(file, 'redis-spill'));
    expect(lines().map((l) => l.event)).toContain('quota_spill_unreadable');
    await reachable(store);
    await redis.kill();
    await store.record(event('r1'));
    expect(store.pendingReplays()).toBe(1);
    expect(lines().map((l) => l.event)).toContain('quota_spill_failed');
    await store.close();
    expect(lines().map((l) => l.event)).toContain('quota_replay_lost');
  });

  it('keeps writes beyond the bound of the queue in memory on disk, and writes them all, in order, once Redis is back', async () => {
    const { store, lines } = open(dir, { maxPendingReplays: 3 });
    const heard: unknown[] = [];
    store.onEvent((e) => heard.push(e['request.id']));
    await reachable(store);
    await redis.kill();
    const ids = Array.from({ length: 10 }, (_, i) => `r${i}`);
    for (const id of ids) await store.record(event(id));
    expect(store.pendingReplays()).toBe(10);
    expect(store.droppedReplayCount()).toBe(0);
    expect(pendingOnDisk()).toEqual(ids);
    expect(lines().map((l) => l.event)).not.toContain('quota_replay_overflow');

    await redis.restart();
    await reachable(store);
    await store.flushReplays();
    expect(heard).toEqual(ids);
    expect(store.pendingReplays()).toBe(0);
    expect(pendingOnDisk()).toEqual([]);
  });

  it('hands writes kept on disk only to the next store when it closes first', async () => {
    const first = open(dir, { maxPendingReplays: 2 });
    await reachable(first.store);
    await redis.kill();
    const ids = Array.from({ length: 7 }, (_, i) => `r${i}`);
    for (const id of ids) await first.store.record(event(id));
    await first.store.close();
    expect(first.lines().find((l) => l.event === 'quota_replay_spilled')).toMatchObject({ pending: 7 });

    await redis.restart();
    const second = open(dir, { maxPendingReplays: 2 });
    const heard: unknown[] = [];
    second.store.onEvent((e) => heard.push(e['request.id']));
    expect(second.store.pendingReplays()).toBe(7);
    await reachable(second.store);
    await second.store.flushReplays();
    expect(heard).toEqual(ids);
  });

  it('drops the oldest in memory, and says so, only past both bounds', async () => {
    const { store, lines } = open(dir, { maxPendingReplays: 2, maxSpilledReplays: 3 });
    await reachable(store);
    await redis.kill();
    for (let i = 0; i < 7; i++) await store.record(event(`r${i}`));
    expect(store.pendingReplays()).toBe(5);
    expect(store.droppedReplayCount()).toBe(2);
    expect(lines().filter((l) => l.event === 'quota_replay_overflow').map((l) => l.requestId)).toEqual(['r0', 'r1']);
  });

  it('leaves a file written for another key prefix (another deployment, a drill) alone', async () => {
    mkdirSync(dir, { recursive: true });
    const foreign = orphan('0d0e0f', `${prefix}other:`);
    writeFileSync(foreign, `${JSON.stringify({ s: 1, w: { kind: 'record', requestId: 'theirs', event: event('theirs') } })}\n`);
    const { store } = open();
    expect(store.pendingReplays()).toBe(0);
    await reachable(store);
    await store.close();
    expect(existsSync(foreign)).toBe(true);
  });
});
