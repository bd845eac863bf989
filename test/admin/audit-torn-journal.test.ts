/**
 * The readers of the embedded journal (`audit verify`, `usage export|report|refusals`) on what a
 * crash or a damaged disk leaves: a torn tail, which the store's next start drops as never
 * written, is a note for the audit and a line the reports say they skipped; a line holding bytes
 * that are not UTF-8, which tollgate never writes, is named as such, at its line; and the store's
 * own recovery cuts a torn tail at the end of the last whole line even after such a line.
 */
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatAudit, verifyJournalDir } from '../../src/admin/audit.js';
import type { Decision } from '../../src/admin/journalReader.js';
import { decisionsOf } from '../../src/admin/sources.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { LedgerLine } from '../../src/quota/store.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const WEEK_END = Date.parse('2026-11-30T00:00:00Z');
const now = () => NOW;

let work: string;
let dir: string;

function line(subject: string, amount: number): LedgerLine {
  const key = `tollgate:{user-weekly|${subject}}:u:${Date.parse('2026-11-23T00:00:00Z')}`;
  return { budgetId: 'user-weekly', subject, usageKey: key, readKeys: [key], reservedKey: `tollgate:{user-weekly|${subject}}:r`, limit: 1_000_000, amount, expiresAt: WEEK_END };
}

/** Three calls charged, each a reserve and a settle: six lines in journal.jsonl. */
async function writeJournal(at: string): Promise<void> {
  const { journal, replay } = FileJournal.open({ dir: at, now });
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  for (const [id, user, amount] of [['a1', 'alice', 7], ['a2', 'alice', 9], ['b1', 'bob', 5]] as const) {
    const charged = [line(user, amount)];
    await store.reserve(id, [line(user, 100)], 60_000, { 'user.id': user }, { dispatching: true });
    await store.settle(id, charged, {
      event: 'tollgate.decision',
      'request.id': id,
      time: new Date(NOW).toISOString(),
      outcome: 'success',
      'user.id': user,
      'tollgate.charged': charged.map((l) => ({ budget: l.budgetId, subject: l.subject, amount: l.amount, unit: 'tokens' })),
      'tollgate.settled_by': 'call',
    });
  }
  await journal.close();
}

const current = () => join(dir, 'journal.jsonl');
const lines = () => readFileSync(current(), 'utf8').split('\n');

/** The decisions a report reads, and what it says it skipped. */
function read(): { ids: string[]; warnings: string[] } {
  const warnings: string[] = [];
  const ids = [...(decisionsOf({ kind: 'journal', dir }, (m) => warnings.push(m), {}) as Iterable<Decision>)].map((d) => d.event['request.id']);
  return { ids, warnings };
}

beforeEach(async () => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-audit-torn-'));
  dir = join(work, 'data');
  await writeJournal(dir);
});
afterEach(() => rmSync(work, { recursive: true, force: true }));

describe('a journal whose last line was torn by a crash', () => {
  it('is read by the reports up to the torn line, which they say they skipped', () => {
    appendFileSync(current(), '{"seq":7,"v":2,"h":"9833a9f5');
    expect(read()).toEqual({
      ids: ['a1', 'a2', 'b1'],
      warnings: [`${dir}: skipped journal.jsonl line 7, a partial entry after the last whole one (being written, or cut by a crash; the gateway drops it at its next start)`],
    });
  });

  it('is read without a warning when whole', () => {
    expect(read()).toEqual({ ids: ['a1', 'a2', 'b1'], warnings: [] });
  });

  it('verifies as the store recovers it: a line that is not JSON followed by a partial one are both dropped at the next start, and both are notes', async () => {
    appendFileSync(current(), '{"seq":7,"v":2,"h":"98\n{"seq":8,"v');
    const report = verifyJournalDir(dir);
    expect(report.ok).toBe(true);
    expect(report.notes).toEqual([
      'journal.jsonl line 7 is a partial entry after the last whole one (being written, or cut by a crash; the gateway drops it at its next start)',
      'journal.jsonl line 8 is a partial entry after the last whole one (being written, or cut by a crash; the gateway drops it at its next start)',
    ]);
    // The store's own recovery drops both, and the file ends with the last whole entry again.
    const { journal, replay } = FileJournal.open({ dir, now });
    expect(replay.map((b) => `${b.kind} ${b.id}`)).toEqual(['reserve a1', 'settle a1', 'reserve a2', 'settle a2', 'reserve b1', 'settle b1']);
    await journal.close();
    expect(lines().at(-1)).toBe('');
    expect(lines()).toHaveLength(7);
  });
});

describe('a journal line holding bytes that are not UTF-8', () => {
  /** Replaces the `l`th line's first "alice" with bytes that are not UTF-8 (0xff), keeping it JSON; returns where the 0xff is in the line. */
  function corrupt(l: number): number {
    const raw = readFileSync(current());
    const parts: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] !== 0x0a) continue;
      parts.push(raw.subarray(start, i + 1));
      start = i + 1;
    }
    const target = parts[l - 1]!;
    const at = target.indexOf('alice');
    parts[l - 1] = Buffer.concat([target.subarray(0, at), Buffer.from([0x61, 0x6c, 0xff, 0x63, 0x65]), target.subarray(at + 5)]);
    writeFileSync(current(), Buffer.concat([...parts, raw.subarray(start)]));
    return at + 2;
  }

  it('fails the audit at that line, saying what it holds', () => {
    const at = corrupt(4);
    expect(verifyJournalDir(dir).fault).toEqual({
      seq: 4,
      check: 'chain',
      reason: `entry 4 cannot be read: the line holds bytes that are not UTF-8 (at byte ${at} of the line); tollgate writes JSON text only`,
      file: 'journal.jsonl',
      line: 4,
    });
    expect(formatAudit(verifyJournalDir(dir)).split('\n')[0]).toBe(`journal ${dir}: FAILED at entry 4 (journal.jsonl line 4)`);
  });

  it('does not lead the store to cut a torn tail in the wrong place: the next entry starts a line of its own', async () => {
    corrupt(2);
    appendFileSync(current(), '{"seq":7,"v":2,"h":"9833a9f5');
    const before = readFileSync(current()).lastIndexOf(0x0a) + 1;
    const first = FileJournal.open({ dir, now });
    expect(first.replay).toHaveLength(6);
    await first.journal.close();
    expect(readFileSync(current()).length).toBe(before);
    // A restart after it still reads every entry.
    const second = FileJournal.open({ dir, now });
    expect(second.replay).toHaveLength(6);
    await second.journal.close();
  });
});

describe('head.json', () => {
  it('that cannot be read is named as such, not as missing', () => {
    const copy = join(work, 'copy');
    cpSync(dir, copy, { recursive: true });
    writeFileSync(join(copy, 'head.json'), '');
    expect(verifyJournalDir(copy).notes).toEqual(['head.json cannot be read (it is not JSON): a cut at the end of the journal cannot be told from its last entry']);
  });
});
