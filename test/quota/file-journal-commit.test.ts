/**
 * The embedded journal's group commit runs off the event loop (fdatasync on libuv's thread pool)
 * and keeps what it promised when it ran on it: an entry is in the file when append returns, one
 * fsync at a time, the head names only fsync'd entries, a flush resolves only once the fsync that
 * covers its entry is over, a failed fsync is warned and retried, and a segment change or close
 * with an fsync in flight neither closes the fd under it nor writes the head after close.
 *
 * The fsync is the journal's own `datasync` option, held by the test until it lets it go; once let
 * go it runs the real fdatasync on the fd it was given, and fails if that fd was closed meanwhile
 * (EBADF, or, when the number went to a file opened since, a different inode).
 */
import { existsSync, fdatasyncSync, fstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileJournal, readHead, readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { verifyChain, type EntryBody } from '../../src/quota/journal.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const DAY = 86_400_000;

let dir: string;
let clock = NOW;

/** fsyncs the test lets go one by one, in the order the journal asked for them. */
class HeldSync {
  readonly asked: { fd: number; release: (err?: Error) => void }[] = [];
  /** The fsyncs that were asked for and have not finished. */
  running = 0;
  /** The most that ran at once. */
  most = 0;
  readonly datasync = (fd: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const ino = fstatSync(fd).ino;
      this.running += 1;
      this.most = Math.max(this.most, this.running);
      this.asked.push({
        fd,
        release: (err) => {
          this.running -= 1;
          if (err) return reject(err);
          try {
            if (fstatSync(fd).ino !== ino) throw new Error(`fd ${fd} was closed and reused while its fsync ran`);
            fdatasyncSync(fd);
            resolve();
          } catch (e) {
            reject(e as Error);
          }
        },
      });
    });

  /** Resolves once the journal has asked for its `n`th fsync. */
  async asks(n: number): Promise<void> {
    for (let waited = 0; this.asked.length < n; waited += 2) {
      if (waited > 5000) throw new Error(`the journal asked for ${this.asked.length} fsyncs, not ${n}`);
      await sleep(2);
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function openWith(held: HeldSync, warnings: string[] = [], opts: { maxSegmentBytes?: number } = {}) {
  const { journal } = FileJournal.open({ dir, now: () => clock, fsyncIntervalMs: 1, datasync: held.datasync, warn: (m) => warnings.push(m), ...opts });
  journal.snapshotSource = () => ({ counters: {} });
  return journal;
}

const body = (id: string): EntryBody => ({ kind: 'refuse', id, at: clock, event: { 'request.id': id } });

/** Whether a promise has settled by the time the event loop has turned a few times. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await sleep(5);
  return done;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-commit-'));
  clock = NOW;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('embedded journal group commit', () => {
  it('has an entry in the file as append returns, while an fsync is in flight', async () => {
    const held = new HeldSync();
    const journal = openWith(held);
    journal.append(body('a'));
    await held.asks(1);
    journal.append(body('b'));
    expect(readSegment(join(dir, 'journal.jsonl')).entries.map((e) => e.body.id)).toEqual(['a', 'b']);
    held.asked[0]!.release();
    await held.asks(2);
    held.asked[1]!.release();
    await journal.close();
  });

  it('resolves a flush only after the fsync that covers its entry, and names an entry in the head only once it is fsync\'d', async () => {
    const held = new HeldSync();
    const journal = openWith(held);
    const a = journal.append(body('a'));
    const flushA = journal.flush();
    await held.asks(1);
    expect(await settled(flushA)).toBe(false);
    expect(readHead(dir)).toBeUndefined();

    // Written while the first fsync runs: that fsync does not cover it.
    const b = journal.append(body('b'));
    const flushB = journal.flush();
    held.asked[0]!.release();
    await flushA;
    expect(readHead(dir)).toEqual({ seq: a.seq, link: a.link });
    expect(await settled(flushB)).toBe(false);

    await held.asks(2);
    held.asked[1]!.release();
    await flushB;
    expect(readHead(dir)).toEqual({ seq: b.seq, link: b.link });
    await journal.close();
  });

  it('runs one fsync at a time however much is appended while one runs', async () => {
    const held = new HeldSync();
    const journal = openWith(held);
    journal.append(body('a'));
    await held.asks(1);
    for (let i = 0; i < 20; i++) {
      journal.append(body(`x${i}`));
      await sleep(2);
    }
    expect([held.asked.length, held.most]).toEqual([1, 1]);
    held.asked[0]!.release();
    await held.asks(2);
    held.asked[1]!.release();
    await journal.flush();
    expect(held.most).toBe(1);
    expect(readHead(dir)?.seq).toBe(21);
    await journal.close();
  });

  it('warns of a failed fsync and retries it; the flush waits for the retry', async () => {
    const held = new HeldSync();
    const warnings: string[] = [];
    const journal = openWith(held, warnings);
    const a = journal.append(body('a'));
    const flushed = journal.flush();
    await held.asks(1);
    held.asked[0]!.release(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await held.asks(2);
    expect(warnings).toEqual(['journal: fsync failed; will retry']);
    expect(await settled(flushed)).toBe(false);
    expect(readHead(dir)).toBeUndefined();
    held.asked[1]!.release();
    await flushed;
    expect(readHead(dir)).toEqual({ seq: a.seq, link: a.link });
    await journal.close();
  });

  it('close waits for the fsync in flight, then fsyncs what came after it before the fd is closed', async () => {
    const held = new HeldSync();
    const warnings: string[] = [];
    const journal = openWith(held, warnings);
    journal.append(body('a'));
    await held.asks(1);
    const b = journal.append(body('b'));
    const closed = journal.close();
    expect(() => journal.append(body('late'))).toThrow('the journal is closed');
    expect(await settled(closed)).toBe(false);

    held.asked[0]!.release();
    await held.asks(2);
    expect(await settled(closed)).toBe(false);
    held.asked[1]!.release();
    await closed;
    // Both fsyncs ran on an open fd (a closed one fails the real fdatasync with EBADF).
    expect(warnings).toEqual([]);
    expect(held.most).toBe(1);
    expect(readHead(dir)).toEqual({ seq: b.seq, link: b.link });
    expect(existsSync(join(dir, 'journal.lock'))).toBe(false);
    // Nothing writes the head after close.
    await sleep(20);
    expect(readHead(dir)).toEqual({ seq: b.seq, link: b.link });
    expect(held.asked).toHaveLength(2);
  });

  it('changes segment while an fsync runs without closing the fd under it, and the chain and head stay whole', async () => {
    const held = new HeldSync();
    const warnings: string[] = [];
    const journal = openWith(held, warnings);
    journal.append(body('a'));
    const flushA = journal.flush();
    await held.asks(1);
    clock = NOW + DAY;
    const c = journal.append(body('c'));
    expect(segmentFiles(dir).map((f) => f.slice(dir.length + 1))).toEqual(['journal-000000000001.jsonl', 'journal.jsonl']);

    held.asked[0]!.release();
    await flushA;
    const flushC = journal.flush();
    await held.asks(2);
    held.asked[1]!.release();
    await flushC;
    expect(warnings).toEqual([]);
    expect(held.most).toBe(1);
    const all = segmentFiles(dir).flatMap((f) => readSegment(f).entries);
    expect(all.map((e) => e.body.kind)).toEqual(['refuse', 'snapshot', 'refuse']);
    expect(verifyChain(all)).toBeUndefined();
    expect(readHead(dir)).toEqual({ seq: c.seq, link: c.link });
    await journal.close();
  });

  it('close says so when its last fsync keeps failing, rejects the flushes waiting on it, and still lets the directory go', async () => {
    const warnings: string[] = [];
    const failing = { datasync: (): Promise<void> => Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })) };
    const { journal } = FileJournal.open({ dir, now: () => clock, fsyncIntervalMs: 1, datasync: failing.datasync, warn: (m) => warnings.push(m) });
    journal.append(body('a'));
    const flushed = journal.flush();
    const closed = journal.close();
    await expect(closed).rejects.toThrow("journal: entries after 0 (up to 1) could not be fsync'd at close: EIO: i/o error, fdatasync");
    await expect(flushed).rejects.toThrow('could not be fsync');
    expect(warnings.length).toBeGreaterThanOrEqual(3);
    expect(new Set(warnings)).toEqual(new Set(['journal: fsync failed; will retry']));
    expect(readHead(dir)).toBeUndefined();
    expect(existsSync(join(dir, 'journal.lock'))).toBe(false);
    // The entry is in the file: the next start replays it.
    expect(readSegment(join(dir, 'journal.jsonl')).entries.map((e) => e.body.id)).toEqual(['a']);
  });

  it('closes at once when nothing is left to fsync', async () => {
    const held = new HeldSync();
    const journal = openWith(held);
    journal.append(body('a'));
    await held.asks(1);
    held.asked[0]!.release();
    await journal.flush();
    await journal.close();
    expect(held.asked).toHaveLength(1);
  });
});
