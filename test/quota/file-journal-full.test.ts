/**
 * The embedded journal on a disk that fills up. Seen on a 256 KB tmpfs before this test: a write cut
 * short by ENOSPC left half a line in the middle of journal.jsonl once space came back, so `audit
 * verify` failed there and the next start refused to open the journal (exit 1); meanwhile every
 * call failed as INTERNAL, a settlement that could not be written left its reservation pinned, and
 * its event was never written anywhere.
 *
 * The journal's `write` option stands in for fs.writeSync, so a test can make the disk full: a write
 * that takes part of its bytes and then fails, as the kernel does at the end of the space.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { GatewayError } from '../../src/errors.js';
import { FileJournal, readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { Disk } from '../helpers/fullDisk.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const DAY = 86_400_000;

function line(subject: string, amount: number, limit = 1000): LedgerLine {
  const tag = `t:{weekly|${subject}}`;
  return { budgetId: 'weekly', subject, usageKey: `${tag}:u:1`, readKeys: [`${tag}:u:1`], reservedKey: `${tag}:r`, limit, amount, expiresAt: NOW + 7 * DAY };
}

let dir: string;
const clock = NOW;
const now = () => clock;

function open(disk: Disk) {
  const warnings: string[] = [];
  const { journal, replay } = FileJournal.open({ dir, now, write: disk.write, warn: (m) => warnings.push(m) });
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  const events: DecisionRecord[] = [];
  store.onEvent((e) => events.push(e));
  return { store, journal, events, warnings };
}

const file = () => join(dir, 'journal.jsonl');

async function refusal(p: Promise<unknown>): Promise<GatewayError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-journal-full-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('embedded journal on a full disk', () => {
  it('leaves no half line when a write is cut short, and takes appends again once there is space', async () => {
    const disk = new Disk();
    const { store, journal } = open(disk);
    await store.reserve('a', [line('alice', 100)], 60_000);
    const size = statSync(file()).size;
    disk.space = 40;
    const err = await refusal(store.reserve('b', [line('alice', 100)], 60_000));
    expect(err.code).toBe('QUOTA_STORE_UNAVAILABLE');
    expect(err.message).toContain('ENOSPC');
    expect(statSync(file()).size).toBe(size);
    expect(readFileSync(file(), 'utf8').endsWith('\n')).toBe(true);
    // Refused before anything was held: the budget is as it was.
    expect(await store.read([line('alice', 0)])).toEqual([{ used: 0, reserved: 100 }]);
    disk.space = Infinity;
    expect((await store.reserve('c', [line('alice', 100)], 60_000)).ok).toBe(true);
    await journal.close();
    expect(readSegment(file()).entries.map((e) => [e.seq, e.body.id])).toEqual([
      [1, 'a'],
      [2, 'c'],
    ]);
    expect(verifyJournalDir(dir).ok).toBe(true);
  });

  it('keeps a settlement it cannot write: charged at once, its entry and event written when space comes back, in order', async () => {
    const disk = new Disk();
    const { store, journal, events } = open(disk);
    await store.reserve('a', [line('alice', 100)], 60_000, undefined, { dispatching: true });
    disk.space = 0;
    // The provider answered; the settlement cannot be written. It is not lost and does not fail the call.
    await store.settle('a', [line('alice', 42)], { 'request.id': 'a', outcome: 'success', 'tollgate.charged': [{ budget: 'weekly', subject: 'alice', amount: 42, unit: 'tokens' }] });
    expect(await store.read([line('alice', 0)])).toEqual([{ used: 42, reserved: 0 }]);
    expect(events).toEqual([]);
    // A refusal's event is kept the same way.
    await store.record({ 'request.id': 'r', outcome: 'refused', 'error.code': 'QUOTA_STORE_UNAVAILABLE' });
    // A new reservation must not be written before what is kept, and cannot be: refused.
    expect((await refusal(store.reserve('b', [line('alice', 10)], 60_000))).code).toBe('QUOTA_STORE_UNAVAILABLE');
    disk.space = Infinity;
    expect((await store.reserve('b', [line('alice', 10)], 60_000)).ok).toBe(true);
    expect(events.map((e) => e['request.id'])).toEqual(['a', 'r']);
    await journal.close();
    expect(readSegment(file()).entries.map((e) => [e.body.kind, e.body.id])).toEqual([
      ['reserve', 'a'],
      ['settle', 'a'],
      ['refuse', 'r'],
      ['reserve', 'b'],
    ]);
    expect(verifyJournalDir(dir).fault).toBeUndefined();
    // A restart finds what the running process had.
    const again = open(new Disk());
    expect(await again.store.read([line('alice', 0)])).toEqual([{ used: 42, reserved: 10 }]);
    await again.journal.close();
  });

  it('ends a segment only once what it kept is written, so a snapshot never holds a charge whose entry is not', async () => {
    const disk = new Disk();
    const warnings: string[] = [];
    const { journal, replay } = FileJournal.open({ dir, now, write: disk.write, warn: (m) => warnings.push(m), maxSegmentBytes: 1 });
    const store = new MemoryQuotaStore(now, journal);
    store.restore(replay);
    journal.snapshotSource = () => store.snapshot();
    await store.reserve('a', [line('alice', 100)], 60_000, undefined, { dispatching: true });
    disk.space = 0;
    await store.settle('a', [line('alice', 42)], { 'request.id': 'a', 'tollgate.charged': [{ budget: 'weekly', subject: 'alice', amount: 42, unit: 'tokens' }] });
    disk.space = Infinity;
    expect((await store.reserve('b', [line('alice', 10)], 60_000)).ok).toBe(true);
    await journal.close();
    expect(verifyJournalDir(dir).fault).toBeUndefined();
    const kinds = segmentFiles(dir).map((f) => readSegment(f).entries.map((e) => e.body.kind));
    // The settle's first try could not end the first segment either (the disk had no room for the
    // next one's snapshot: the segment goes on); written later, it ends that segment, and the next
    // append starts the second with a snapshot that holds it.
    expect(kinds).toEqual([['reserve', 'settle'], ['snapshot', 'reserve']]);
    const again = open(new Disk());
    expect(await again.store.read([line('alice', 0)])).toEqual([{ used: 42, reserved: 10 }]);
    await again.journal.close();
  });

  it('writes what it kept without waiting for another call, once space comes back', async () => {
    const disk = new Disk();
    const { store, journal, events } = open(disk);
    await store.reserve('a', [line('alice', 100)], 60_000, undefined, { dispatching: true });
    disk.space = 0;
    await store.settle('a', [line('alice', 42)], { 'request.id': 'a' });
    disk.space = Infinity;
    const deadline = Date.now() + 5000;
    while (events.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(events.map((e) => e['request.id'])).toEqual(['a']);
    await journal.close();
    expect(readSegment(file()).entries.map((e) => e.body.kind)).toEqual(['reserve', 'settle']);
  });

  it('refuses a dispatch mark it cannot write (a recovery could not charge the call), before the provider', async () => {
    const disk = new Disk();
    const { store, journal } = open(disk);
    await store.reserve('a', [line('alice', 100)], 60_000);
    disk.space = 0;
    expect((await refusal(store.dispatch('a'))).code).toBe('QUOTA_STORE_UNAVAILABLE');
    disk.space = Infinity;
    await journal.close();
  });

  it('says once that the disk is full, not on every commit', async () => {
    const disk = new Disk();
    const { store, journal, warnings } = open(disk);
    await store.reserve('a', [line('alice', 100)], 60_000, undefined, { dispatching: true });
    disk.space = 0;
    for (let i = 0; i < 20; i++) await store.record({ 'request.id': `r${i}`, outcome: 'refused' });
    await new Promise((r) => setTimeout(r, 300));
    expect(warnings.filter((w) => w.includes('cannot be written')).length).toBe(1);
    disk.space = Infinity;
    await journal.close();
  });

  it('names at close what it could not write', async () => {
    const disk = new Disk();
    const { store, warnings } = open(disk);
    await store.reserve('a', [line('alice', 100)], 60_000, undefined, { dispatching: true });
    disk.space = 0;
    await store.settle('a', [line('alice', 42)], { 'request.id': 'a' });
    await expect(store.close()).rejects.toThrow(/1 entr.* could not be written/);
    expect(warnings.some((w) => w.includes('could not be written'))).toBe(true);
  });
});
