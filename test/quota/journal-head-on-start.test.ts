/**
 * A start checks the embedded journal against head.json, the last entry the store fsync'd: when
 * the head names an entry the files no longer hold (the tail cut, the file emptied or deleted, an
 * older copy restored), another entry at its seq, or the seqs have a gap, the store refuses to
 * open and leaves head.json as it was, so `tollgate audit verify` still sees what is missing. What
 * a crash leaves (a torn line the head does not name, a head behind the file) starts as before, and
 * so does a journal without a head.
 */
import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { GatewayError } from '../../src/errors.js';
import { createStore, settingsFromEnv } from '../../src/main.js';
import { FileJournal, readHead, readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { LedgerLine } from '../../src/quota/store.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const DAY = 86_400_000;

function line(amount: number): LedgerLine {
  const tag = 't:{weekly|alice}';
  return { budgetId: 'weekly', subject: 'alice', usageKey: `${tag}:u:1`, readKeys: [`${tag}:u:1`], reservedKey: `${tag}:r`, limit: 1000, amount, expiresAt: NOW + 7 * DAY };
}

let dir: string;
let clock = NOW;
const now = () => clock;
const current = () => join(dir, 'journal.jsonl');
const head = () => join(dir, 'head.json');

/** A store on the journal in `dir`, as `tollgate serve` builds it. */
function open(warnings: string[] = []) {
  const { journal, replay } = FileJournal.open({ dir, now, warn: (m) => warnings.push(m) });
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  return { store, journal };
}

/** Three calls of 10 tokens, each a reserve and a settle with its event (entries 1 to 6), closed: head.json names entry 6. */
async function threeCalls(): Promise<void> {
  const { store, journal } = open();
  for (const id of ['a', 'b', 'c']) {
    await store.reserve(id, [line(100)], 60_000, {}, { dispatching: true });
    await store.settle(id, [line(10)], { 'request.id': id, 'tollgate.charged': [{ budget: 'weekly', subject: 'alice', amount: 10, unit: 'tokens' }], 'tollgate.settled_by': 'call' });
  }
  await journal.close();
}

function keepLines(n: number): void {
  const lines = readFileSync(current(), 'utf8').split('\n');
  writeFileSync(current(), lines.slice(0, n).map((l) => `${l}\n`).join(''));
}

function refusal(): Error {
  try {
    open();
  } catch (err) {
    return err as Error;
  }
  throw new Error('the journal opened');
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-head-start-'));
  clock = NOW;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('a start checks the journal against head.json', () => {
  it('refuses a journal whose last whole entries were cut, and leaves head.json naming them', async () => {
    await threeCalls();
    const named = readFileSync(head(), 'utf8');
    keepLines(2);
    expect(refusal().message).toBe(
      `the journal ends at entry 2 but head.json says entry 6 was written and fsync'd: entries 3 to 6 are missing (cut, emptied or deleted, or restored from an older copy). ` +
        `Restore the journal from a copy that holds them; \`tollgate audit verify --data-dir ${dir}\` says what the files hold. ` +
        `To start on what is left, losing what those entries charged, move head.json aside first.`,
    );
    expect(readFileSync(head(), 'utf8')).toBe(named);
    expect(readSegment(current()).entries.map((e) => e.seq)).toEqual([1, 2]);
    expect(verifyJournalDir(dir).fault?.reason).toBe("the journal ends at entry 2 but head.json says entry 6 was written: entries were removed from the end");
  });

  it('refuses an emptied journal, and a deleted one, while head.json names entries', async () => {
    await threeCalls();
    truncateSync(current(), 0);
    expect(refusal().message).toMatch(/^the journal ends at entry 0 but head\.json says entry 6 was written and fsync'd: entries 1 to 6 are missing/);
    rmSync(current());
    expect(refusal().message).toMatch(/^the journal ends at entry 0 but head\.json says entry 6 was written and fsync'd: entries 1 to 6 are missing/);
    expect(readHead(dir)?.seq).toBe(6);
  });

  it('refuses to carry the chain on from an ended segment when the current one was deleted', async () => {
    await threeCalls();
    clock = NOW + DAY;
    const next = open();
    await next.store.reserve('d', [line(100)], 60_000, {}, { dispatching: true });
    await next.journal.close();
    expect(segmentFiles(dir).map((f) => readSegment(f).entries.map((e) => e.seq))).toEqual([[1, 2, 3, 4, 5, 6], [7, 8]]);
    rmSync(current());
    expect(refusal().message).toMatch(/^journal\.jsonl is missing or empty beside the ended segments \(the last ends at entry 6\)/);
  });

  it('refuses a torn last line that head.json names as fsync\'d, and does not cut it', async () => {
    await threeCalls();
    const size = readFileSync(current()).length;
    truncateSync(current(), size - 20);
    expect(refusal().message).toMatch(/^the journal ends at entry 5 and a torn line but head\.json says entry 6 was written and fsync'd: entry 6 is missing/);
    expect(readFileSync(current()).length).toBe(size - 20);
  });

  it('refuses a journal with an entry missing from the middle', async () => {
    await threeCalls();
    const lines = readFileSync(current(), 'utf8').split('\n');
    writeFileSync(current(), [...lines.slice(0, 3), ...lines.slice(4)].join('\n'));
    expect(refusal().message).toBe(
      `entry 4 is missing from journal.jsonl (entry 5 follows entry 3): it was cut out or the file was pieced together. ` +
        `Restore the journal from a copy that holds it; \`tollgate audit verify --data-dir ${dir}\` names the first entry that fails.`,
    );
  });

  it('refuses a journal whose entry at the head\'s seq is not the one head.json names', async () => {
    await threeCalls();
    writeFileSync(head(), JSON.stringify({ seq: 4, link: 'f'.repeat(40) }));
    expect(refusal().message).toMatch(/^entry 4 is not the entry head\.json names \(its link differs\): the journal was replaced, or restored from a copy that went on differently\. Restore/);
  });

  it('says so through the gateway\'s store, naming the data directory', async () => {
    await threeCalls();
    keepLines(2);
    const err = await createStore(settingsFromEnv({ TOLLGATE_DATA_DIR: dir })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('QUOTA_STORE_UNAVAILABLE');
    expect((err as GatewayError).message).toMatch(new RegExp(`^The journal in ${dir} cannot be opened: the journal ends at entry 2 but head\\.json says entry 6`));
  });

  it('starts on what is left once head.json is moved aside, and writes a new head', async () => {
    await threeCalls();
    keepLines(2);
    renameSync(head(), join(dir, 'head.json.cut'));
    const { store, journal } = open();
    expect(await store.read([line(0)])).toEqual([{ used: 10, reserved: 0 }]);
    await journal.close();
    expect(readHead(dir)?.seq).toBe(2);
  });

  it('drops a torn last line that head.json does not name, as a crash mid-write leaves it', async () => {
    await threeCalls();
    appendFileSync(current(), '{"seq":7,"v":2,"h":"ab');
    const warnings: string[] = [];
    const { store, journal } = open(warnings);
    expect(await store.read([line(0)])).toEqual([{ used: 30, reserved: 0 }]);
    expect(warnings).toEqual(['journal: dropped a torn last line (the process died while writing it)']);
    await journal.close();
  });

  it('starts when head.json is behind the file, as a kill between fsyncs leaves it', async () => {
    await threeCalls();
    const fourth = readSegment(current()).entries[3]!;
    writeFileSync(head(), JSON.stringify({ seq: 4, link: fourth.link }));
    const { store, journal } = open();
    expect(await store.read([line(0)])).toEqual([{ used: 30, reserved: 0 }]);
    await journal.close();
  });

  it('starts when head.json cannot be read (a power loss can leave it empty), saying so', async () => {
    await threeCalls();
    writeFileSync(head(), '');
    const warnings: string[] = [];
    const { store, journal } = open(warnings);
    expect(await store.read([line(0)])).toEqual([{ used: 30, reserved: 0 }]);
    expect(warnings).toEqual(['journal: head.json cannot be read (it is not JSON); the journal is not checked against it at this start']);
    await journal.close();
  });
});

// Found by a re-probe of the start check.
describe('segment changes and the ended segments', () => {
  it('does not take a snapshot the disk cut short as the new segment: the segment goes on, and the journal starts again', async () => {
    await threeCalls();
    // The next segment's snapshot gets 100 bytes in, then the disk is full; the current segment's
    // writes (on the fd written first) go through.
    let currentFd: number | undefined;
    const write = (fd: number, data: Buffer, offset: number, length: number): number => {
      currentFd ??= fd;
      if (fd === currentFd) return writeSync(fd, data, offset, length);
      if (offset > 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return Math.min(length, 100);
    };
    const opened = FileJournal.open({ dir, now, write });
    const store = new MemoryQuotaStore(now, opened.journal);
    store.restore(opened.replay);
    opened.journal.snapshotSource = () => store.snapshot();
    await store.reserve('c2', [line(100)], 60_000, {}, { dispatching: true });
    await store.release('c2', { 'request.id': 'c2' });
    clock = NOW + DAY;
    await store.reserve('d', [line(100)], 60_000, {}, { dispatching: true });
    await store.settle('d', [line(10)], { 'request.id': 'd', 'tollgate.charged': [{ budget: 'weekly', subject: 'alice', amount: 10, unit: 'tokens' }], 'tollgate.settled_by': 'call' });
    await opened.journal.close();
    expect(segmentFiles(dir)).toEqual([current()]);
    const { store: again, journal } = open();
    expect(await again.read([line(0)])).toEqual([{ used: 40, reserved: 0 }]);
    await journal.close();
    expect(verifyJournalDir(dir).ok).toBe(true);
  });

  it('refuses a current segment older than an ended one (restored from a copy beside newer segments)', async () => {
    await threeCalls();
    const older = readFileSync(current());
    const olderHead = readFileSync(head());
    for (const day of [1, 2]) {
      clock = NOW + day * DAY;
      const next = open();
      await next.store.reserve(`d${day}`, [line(100)], 60_000, {}, { dispatching: true });
      await next.journal.close();
    }
    const ended = segmentFiles(dir).filter((f) => f !== current());
    expect(ended).toHaveLength(2);
    writeFileSync(current(), older);
    writeFileSync(head(), olderHead);
    expect(refusal().message).toMatch(/^journal-0+7\.jsonl, an ended segment, starts at entry 7, after entry 1, where journal\.jsonl starts: journal\.jsonl is older than the segments beside it \(restored from an older copy\)\. Restore/);
    expect(segmentFiles(dir).filter((f) => f !== current())).toEqual(ended);
  });

  it('refuses ended segments with no current one beside them, whatever head.json names', async () => {
    await threeCalls();
    clock = NOW + DAY;
    const next = open();
    await next.store.reserve('d', [line(100)], 60_000, {}, { dispatching: true });
    await next.journal.close();
    writeFileSync(head(), JSON.stringify({ seq: 6, link: readSegment(segmentFiles(dir)[0]!).entries[5]!.link }));
    rmSync(current());
    expect(refusal().message).toMatch(/^journal\.jsonl is missing or empty beside the ended segments \(the last ends at entry 6\): a segment change always leaves it its opening snapshot\. Restore/);
  });

  it('takes a head naming no entry (seq 0 or below) as unreadable, saying so', async () => {
    await threeCalls();
    writeFileSync(head(), JSON.stringify({ seq: 0, link: '0'.repeat(40) }));
    const warnings: string[] = [];
    const { journal } = open(warnings);
    expect(warnings).toEqual(["journal: head.json cannot be read (it does not name an entry's seq and link); the journal is not checked against it at this start"]);
    await journal.close();
  });

  it('refuses a first segment whose opening entries were cut, whatever head.json names', async () => {
    await threeCalls();
    const lines = readFileSync(current(), 'utf8').split('\n').filter(Boolean);
    writeFileSync(current(), lines.slice(2).map((l) => `${l}\n`).join(''));
    rmSync(head());
    expect(refusal().message).toMatch(
      /^journal\.jsonl starts at entry 3, which is not a segment's opening snapshot: the entries before it were cut \(the counters they charged would be lost\)\. Restore/,
    );
  });

  it('refuses a current segment whose opening snapshot was cut after a segment change', async () => {
    await threeCalls();
    clock = NOW + DAY;
    const next = open();
    for (const id of ['d', 'e']) await next.store.reserve(id, [line(100)], 60_000, {}, { dispatching: true });
    await next.journal.close();
    const lines = readFileSync(current(), 'utf8').split('\n').filter(Boolean);
    expect(JSON.parse(lines[0]!).body.kind).toBe('snapshot');
    writeFileSync(current(), lines.slice(1).map((l) => `${l}\n`).join(''));
    expect(refusal().message).toMatch(/^journal\.jsonl starts at entry 8, which is not a segment's opening snapshot: the entries before it were cut/);
    // Without the snapshot a start would hold the reservations only, not the 30 tokens charged before.
    writeFileSync(current(), lines.map((l) => `${l}\n`).join(''));
    const { store, journal } = open();
    expect(await store.read([line(0)])).toEqual([{ used: 30, reserved: 200 }]);
    await journal.close();
  });

  it('starts on a current segment that opens with its snapshot once the ended ones are archived', async () => {
    await threeCalls();
    clock = NOW + DAY;
    const next = open();
    await next.store.reserve('d', [line(100)], 60_000, {}, { dispatching: true });
    await next.journal.close();
    for (const f of segmentFiles(dir).filter((f) => f !== current())) rmSync(f);
    const { store, journal } = open();
    expect(await store.read([line(0)])).toEqual([{ used: 30, reserved: 100 }]);
    await journal.close();
  });

  it('names a line repeated as such, not as a missing entry', async () => {
    await threeCalls();
    const lines = readFileSync(current(), 'utf8').split('\n').filter(Boolean);
    writeFileSync(current(), [...lines, lines.at(-1)!].map((l) => `${l}\n`).join(''));
    expect(refusal().message).toMatch(/^entry 6 appears again after entry 6 in journal\.jsonl: the file was pieced together\. Restore/);
  });
});
