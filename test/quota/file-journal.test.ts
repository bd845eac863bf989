/**
 * The embedded store's journal: a restart (even after a kill, without close) brings back used and
 * reserved amounts exactly, recovery charges a dispatched call at its reservation and releases one
 * that never reached a provider, a torn last line is dropped, and segments chain across a change.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { FileJournal, readHead, readSegment, segmentFiles, segmentName } from '../../src/quota/fileJournal.js';
import { canonicalJson, chained, eventJson, GENESIS, recoveryEvent, verifyChain, type EntryBody, type JournalEntry } from '../../src/quota/journal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const DAY = 86_400_000;

function line(subject: string, amount: number, limit = 1000): LedgerLine {
  const tag = `t:{weekly|${subject}}`;
  return { budgetId: 'weekly', subject, usageKey: `${tag}:u:1`, readKeys: [`${tag}:u:1`], reservedKey: `${tag}:r`, limit, amount, expiresAt: NOW + 7 * DAY };
}

let dir: string;
let clock = NOW;
const now = () => clock;

/** A store on the journal in `dir`, as `tollgate serve` builds it after a start. */
function open(opts: { maxSegmentBytes?: number } = {}) {
  const { journal, replay } = FileJournal.open({ dir, now, ...opts });
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  const events: DecisionRecord[] = [];
  store.onEvent((e) => events.push(e));
  return { store, journal, events };
}

function allEntries(): JournalEntry[] {
  return segmentFiles(dir).flatMap((f) => readSegment(f).entries);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-journal-'));
  clock = NOW;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('embedded journal', () => {
  it('brings back used and reserved amounts exactly after the process is gone without closing', async () => {
    const first = open();
    await first.store.reserve('a', [line('alice', 100)], 60_000);
    await first.store.settle('a', [line('alice', 42)], { 'request.id': 'a' });
    await first.store.reserve('b', [line('alice', 300)], 60_000);
    // No close: a killed process leaves the lock and whatever fsync had not covered yet.
    const second = open();
    expect(await second.store.read([line('alice', 0)])).toEqual([{ used: 42, reserved: 300 }]);
    await second.journal.close();
  });

  it('charges a dispatched call at its reservation on recovery, and releases one that never reached a provider', async () => {
    const first = open();
    await first.store.reserve('sent', [line('alice', 120)], 60_000, { user: 'alice', transport: 'openai' });
    await first.store.dispatch('sent');
    await first.store.reserve('unsent', [line('alice', 200)], 60_000, { user: 'alice' });
    const second = open();
    const report = second.store.recover((id, r) => ({ 'request.id': id, dispatched: r.dispatched, 'tollgate.settled_by': 'recovery' }));
    expect(report).toEqual({ charged: [{ id: 'sent', lines: [expect.objectContaining({ amount: 120 })] }], released: ['unsent'] });
    expect(await second.store.read([line('alice', 0)])).toEqual([{ used: 120, reserved: 0 }]);
    expect(second.events).toEqual([
      { 'request.id': 'sent', dispatched: true, 'tollgate.settled_by': 'recovery' },
      { 'request.id': 'unsent', dispatched: false, 'tollgate.settled_by': 'recovery' },
    ]);
    // Recovery is journaled: a third start finds nothing open and the same counters.
    const third = open();
    expect(third.store.recover(() => ({})).charged).toEqual([]);
    expect(await third.store.read([line('alice', 0)])).toEqual([{ used: 120, reserved: 0 }]);
    expect(allEntries().map((e) => e.body.kind)).toEqual(['reserve', 'dispatch', 'reserve', 'recover', 'release']);
  });

  it('writes a reservation made as its call is dispatched as one entry, which a restart after a kill charges', async () => {
    const first = open();
    await first.store.reserve('sent', [line('alice', 120)], 60_000, { user: 'alice' }, { dispatching: true });
    // The dispatch step still calls dispatch: the mark is written already.
    await first.store.dispatch('sent');
    expect(allEntries().map((e) => [e.body.kind, e.body.dispatched])).toEqual([['reserve', true]]);
    // No close: the process is killed with the call at the provider.
    const second = open();
    const report = second.store.recover((id, r) => ({ 'request.id': id, dispatched: r.dispatched }));
    expect(report).toEqual({ charged: [{ id: 'sent', lines: [expect.objectContaining({ amount: 120 })] }], released: [] });
    expect(await second.store.read([line('alice', 0)])).toEqual([{ used: 120, reserved: 0 }]);
    expect(allEntries().map((e) => e.body.kind)).toEqual(['reserve', 'recover']);
  });

  it('keeps the mark of a one-entry reservation open across a segment change, and the journal verifies', async () => {
    const first = open();
    await first.store.reserve('a', [line('alice', 50)], 60_000, { user: 'alice' }, { dispatching: true });
    await first.store.settle('a', [line('alice', 30)], { 'request.id': 'a', outcome: 'success', 'tollgate.charged': [{ budget: 'weekly', subject: 'alice', amount: 30, unit: 'tokens' }] });
    await first.store.reserve('b', [line('alice', 40)], 60_000, { user: 'alice' }, { dispatching: true });
    clock = NOW + DAY;
    await first.store.reserve('c', [line('alice', 10)], 60_000, { user: 'alice' });
    expect(readSegment(join(dir, 'journal.jsonl')).entries[0]!.body.state).toMatchObject({ reservations: { b: { dispatched: true } } });
    // Killed with b at the provider and c not yet sent: b is charged, c released.
    const second = open();
    const report = second.store.recover((id, r) => recoveryEvent(id, r, clock, 'stopped'));
    expect(report).toEqual({ charged: [{ id: 'b', lines: [expect.objectContaining({ amount: 40 })] }], released: ['c'] });
    await second.journal.close();
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true, snapshots: 1, charges: 2 });
  });

  it('replays a journal written with a dispatch entry of its own after each reservation', async () => {
    // As versions before the one-entry reservation wrote it.
    const bodies: EntryBody[] = [
      { kind: 'reserve', id: 'sent', at: NOW, lines: [{ ...line('alice', 120), readKeys: undefined, limit: undefined } as never], expiresAt: NOW + 60_000, meta: { user: 'alice' } },
      { kind: 'dispatch', id: 'sent', at: NOW },
      { kind: 'reserve', id: 'unsent', at: NOW, lines: [{ ...line('alice', 200), readKeys: undefined, limit: undefined } as never], expiresAt: NOW + 60_000, meta: { user: 'alice' } },
    ];
    let prev = GENESIS;
    const text = bodies
      .map((b, i) => {
        const e = chained(i + 1, prev, JSON.parse(JSON.stringify(b)) as EntryBody);
        prev = e.link;
        return `${JSON.stringify(e)}\n`;
      })
      .join('');
    writeFileSync(join(dir, 'journal.jsonl'), text);
    const { store, journal } = open();
    expect(await store.read([line('alice', 0)])).toEqual([{ used: 0, reserved: 320 }]);
    const report = store.recover((id, r) => recoveryEvent(id, r, clock, 'stopped'));
    expect(report).toEqual({ charged: [{ id: 'sent', lines: [expect.objectContaining({ amount: 120 })] }], released: ['unsent'] });
    await journal.close();
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true, charges: 1 });
  });

  it('commits a charge and its event in one entry', async () => {
    const { store } = open();
    await store.reserve('c', [line('bob', 50)], 60_000);
    await store.settle('c', [line('bob', 30)], { 'request.id': 'c', effect: 'allow' });
    const settle = allEntries().find((e) => e.body.kind === 'settle')!;
    expect(settle.body).toMatchObject({ id: 'c', lines: [{ subject: 'bob', amount: 30 }], event: { 'request.id': 'c', effect: 'allow' }, settledBy: 'call' });
  });

  it('drops a torn last line at start and keeps the chain whole', async () => {
    const first = open();
    await first.store.reserve('a', [line('alice', 10)], 60_000);
    await first.store.settle('a', [line('alice', 10)]);
    appendFileSync(join(dir, 'journal.jsonl'), '{"seq":3,"h":"ab');
    const second = open();
    expect(await second.store.read([line('alice', 0)])).toEqual([{ used: 10, reserved: 0 }]);
    await second.store.reserve('b', [line('alice', 5)], 60_000);
    expect(verifyChain(allEntries())).toBeUndefined();
    expect(allEntries().map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it('starts a new segment with a snapshot when the day ends, and replays only that segment', async () => {
    const first = open();
    await first.store.reserve('a', [line('alice', 10)], 60_000);
    await first.store.settle('a', [line('alice', 7)]);
    clock = NOW + DAY;
    await first.store.reserve('b', [line('alice', 20)], 60_000);
    expect(segmentFiles(dir).map((f) => f.slice(dir.length + 1))).toEqual(['journal-000000000001.jsonl', 'journal.jsonl']);
    expect(readSegment(join(dir, 'journal.jsonl')).entries.map((e) => e.body.kind)).toEqual(['snapshot', 'reserve']);
    expect(verifyChain(allEntries())).toBeUndefined();
    const second = open();
    expect(await second.store.read([line('alice', 0)])).toEqual([{ used: 7, reserved: 20 }]);
  });

  it('keeps settled ids in the snapshot a segment starts with, flat and oldest first, so a settle repeated after a restart is not charged twice', async () => {
    // A limit of one byte: every append after the first starts a new segment.
    const first = open({ maxSegmentBytes: 1 });
    await first.store.reserve('a', [line('alice', 10)], 60_000);
    await first.store.settle('a', [line('alice', 7)]);
    clock += 1000;
    await first.store.settle('b', [line('alice', 3)]);
    await first.store.reserve('c', [line('alice', 20)], 60_000);
    expect(readSegment(join(dir, 'journal.jsonl')).entries[0]!.body.state).toMatchObject({ settled: ['a', NOW + 15 * 60_000, 'b', NOW + 1000 + 15 * 60_000] });
    const second = open();
    await second.store.settle('a', [line('alice', 7)]);
    expect(await second.store.read([line('alice', 0)])).toEqual([{ used: 10, reserved: 20 }]);
    await second.journal.close();
  });

  it('restores the settled ids of a snapshot written before they were listed flat (an object keyed by id)', async () => {
    const l = line('alice', 7);
    const state = { counters: { [l.usageKey]: { value: 7, expiresAt: l.expiresAt } }, reservations: {}, settled: { a: NOW + 15 * 60_000 }, alertMarks: {} };
    const e = chained(1, GENESIS, { kind: 'snapshot', id: 'snapshot-1', at: NOW, state });
    writeFileSync(join(dir, 'journal.jsonl'), `${JSON.stringify(e)}\n`);
    const { store, journal } = open();
    await store.settle('a', [l]);
    expect(await store.read([l])).toEqual([{ used: 7, reserved: 0 }]);
    await journal.close();
  });

  it('starts a new segment once one passes its size limit', async () => {
    const first = open({ maxSegmentBytes: 2000 });
    for (let i = 0; i < 20; i++) {
      await first.store.reserve(`r${i}`, [line('carol', 1, 1_000_000)], 60_000);
      await first.store.settle(`r${i}`, [line('carol', 1, 1_000_000)], { 'request.id': `r${i}` });
    }
    expect(segmentFiles(dir).length).toBeGreaterThan(2);
    expect(verifyChain(allEntries())).toBeUndefined();
    const second = open({ maxSegmentBytes: 2000 });
    expect(await second.store.read([line('carol', 0)])).toEqual([{ used: 20, reserved: 0 }]);
  });

  it('names each ended segment by its first entry, also when a restart came midway through it', async () => {
    const first = open({ maxSegmentBytes: 2000 });
    for (let i = 0; i < 7; i++) await first.store.reserve(`r${i}`, [line('carol', 1, 1_000_000)], 60_000);
    const second = open({ maxSegmentBytes: 2000 });
    for (let i = 7; i < 20; i++) await second.store.reserve(`r${i}`, [line('carol', 1, 1_000_000)], 60_000);
    const ended = segmentFiles(dir).slice(0, -1);
    expect(ended.length).toBeGreaterThan(1);
    for (const f of ended) expect(f.slice(dir.length + 1)).toBe(segmentName(readSegment(f).entries[0]!.seq));
    expect(verifyChain(allEntries())).toBeUndefined();
  });

  it('hashes each new entry as its line holds the body, so `h` checks against the line itself', async () => {
    const { store, journal, events } = open();
    await store.reserve('w', [line('dora', 12)], 60_000, { user: 'dora', note: 'é"\u2028' });
    await store.settle('w', [line('dora', 9)], { 'request.id': 'w', effect: 'allow', reason: 'z before a', 'tollgate.charged': [{ budget: 'weekly', subject: 'dora', amount: 9 }] });
    await journal.close();
    const lines = readFileSync(join(dir, 'journal.jsonl'), 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const raw of lines) {
      // The body is the line's last field: everything after the first `"body":` but the closing brace.
      const text = raw.slice(raw.indexOf('"body":') + '"body":'.length, -1);
      const entry = JSON.parse(raw) as JournalEntry;
      expect(entry.v).toBe(2);
      expect(createHash('sha256').update(text).digest('hex')).toBe(entry.h);
      expect(text).toBe(JSON.stringify(entry.body));
    }
    // The settle's event is the body's last field, as the text the event log writes for it (eventJson).
    expect(lines[1]!.endsWith(`,"event":${eventJson(events[0]!)}}}`)).toBe(true);
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true, charges: 1 });
  });

  it('returns entries that verify as they are, as they verify read back', async () => {
    const { journal } = FileJournal.open({ dir, now });
    const event = { 'request.id': 'q', effect: 'allow', 'tollgate.charged': [{ budget: 'weekly', subject: 'fay', amount: 2 }] };
    const appended = [
      journal.append({ kind: 'reserve', id: 'q', at: NOW, lines: [{ ...line('fay', 3), readKeys: undefined, limit: undefined } as never], expiresAt: NOW + 60_000, dispatched: true }),
      journal.append({ kind: 'settle', id: 'q', at: NOW, lines: [{ ...line('fay', 2), readKeys: undefined, limit: undefined } as never], event, settledBy: 'call' }),
    ];
    await journal.close();
    expect(verifyChain(appended)).toBeUndefined();
    expect(appended).toEqual(allEntries());
  });

  it('verifies a journal that goes on in the new form after entries in the canonical form, and catches an edit in either', async () => {
    const old = chained(1, GENESIS, { kind: 'reserve', id: 'o', at: NOW, lines: [{ ...line('erin', 5), readKeys: undefined, limit: undefined } as never], expiresAt: NOW + 60_000, dispatched: true });
    writeFileSync(join(dir, 'journal.jsonl'), `${JSON.stringify(old)}\n`);
    const { store, journal } = open();
    await store.settle('o', [line('erin', 4)], { 'request.id': 'o', effect: 'allow', 'tollgate.charged': [{ budget: 'weekly', subject: 'erin', amount: 4 }] });
    await store.reserve('n', [line('erin', 6)], 60_000);
    await journal.close();
    expect(allEntries().map((e) => e.v)).toEqual([undefined, 2, 2]);
    expect(verifyChain(allEntries())).toBeUndefined();
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true, charges: 1 });
    const file = join(dir, 'journal.jsonl');
    const intact = readFileSync(file, 'utf8');
    // A charge changed in a new-form entry, then the form mark taken off one: both break its h.
    writeFileSync(file, intact.replace('"amount":4,', '"amount":3,'));
    expect(verifyChain(allEntries())).toEqual({ seq: 2, reason: 'entry 2 was altered: its body does not hash to its h' });
    writeFileSync(file, intact.replace('"seq":2,"v":2,', '"seq":2,'));
    expect(verifyChain(allEntries())).toEqual({ seq: 2, reason: 'entry 2 was altered: its body does not hash to its h' });
    writeFileSync(file, intact.replace('"amount":5,', '"amount":50,'));
    expect(verifyChain(allEntries())).toEqual({ seq: 1, reason: 'entry 1 was altered: its body does not hash to its h' });
  });

  it('hashes entries in the canonical form journals on disk were written with', () => {
    // Sorted keys at every level (integer-like keys sorted as text), undefined fields left out,
    // undefined array items as null: a change here would fail every journal written before it.
    const body = { kind: 'settle', id: 'r1', at: 5, lines: [{ subject: 'é"x', budgetId: 'b', amount: 2.5 }], event: { 'user.teams': ['t2', undefined], reason: undefined, '10': -0, '9': null, z: { b: [], a: {} } } };
    expect(canonicalJson(body)).toBe('{"at":5,"event":{"10":0,"9":null,"user.teams":["t2",null],"z":{"a":{},"b":[]}},"id":"r1","kind":"settle","lines":[{"amount":2.5,"budgetId":"b","subject":"é\\"x"}]}');
  });

  it('writes an array of plain values as JSON.stringify does, and one holding objects value by value with sorted keys', () => {
    // A snapshot's settled ids are one such array (200,000 ids and times): one JSON.stringify, not one call per value.
    expect(canonicalJson(['r1', NOW, null, undefined, true, -0, 2.5, 'é"x'])).toBe(`["r1",${NOW},null,null,true,0,2.5,"é\\"x"]`);
    expect(canonicalJson(['r1', { b: 1, a: [2, { d: 1, c: undefined }] }, [3]])).toBe('["r1",{"a":[2,{"d":1}],"b":1},[3]]');
  });

  it('reads a segment of many lines in one pass, counting the bytes of the whole ones exactly', () => {
    // 20,000 lines of about 1 KB with a multi-byte character each, then a torn line.
    const body = { kind: 'refuse', id: 'x', at: NOW, event: { reason: `é${'x'.repeat(1000)}` } };
    const whole = Array.from({ length: 20_000 }, (_, i) => `${JSON.stringify({ seq: i + 1, h: 'h', prev: 'p', link: 'l', body })}\n`).join('');
    const file = join(dir, 'big.jsonl');
    writeFileSync(file, `${whole}{"seq":20001,"h`);
    const t0 = performance.now();
    const read = readSegment(file);
    // Measuring the text up to each line, as it once did, took minutes here.
    expect(performance.now() - t0).toBeLessThan(5000);
    expect([read.entries.length, read.torn, read.goodBytes]).toEqual([20_000, true, Buffer.byteLength(whole, 'utf8')]);
  });

  it('keeps a head beside the journal once fsync has run, naming the last entry', async () => {
    const { store, journal } = open();
    await store.reserve('a', [line('alice', 10)], 60_000);
    await journal.flush();
    const last = allEntries().at(-1)!;
    expect(readHead(dir)).toEqual({ seq: last.seq, link: last.link });
    expect(JSON.parse(readFileSync(join(dir, 'journal.lock'), 'utf8'))).toBe(process.pid);
    await journal.close();
  });
});
