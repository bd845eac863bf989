/**
 * The embedded journal's files: what a journal directory holds and how it is read back, apart from
 * the writer (fileJournal.ts), so readers (audit, export, the tests) need not load it.
 *
 * - `journal.jsonl`: the current segment, one chained entry a line;
 * - `journal-<first seq>.jsonl`: ended segments, sortable by the seq they start at;
 * - `journal.next`: the next segment while a segment change is under way;
 * - `head.json`: the last entry fsync'd (seq and link), to catch a truncated tail;
 * - `journal.lock`: the pid of the process that owns the directory.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JournalEntry } from './journal.js';

export const CURRENT = 'journal.jsonl';
export const NEXT = 'journal.next';
export const HEAD = 'head.json';
export const LOCK = 'journal.lock';

/** The name an ended segment keeps, sortable by the seq it starts at. */
export function segmentName(firstSeq: number): string {
  return `journal-${String(firstSeq).padStart(12, '0')}.jsonl`;
}

/** Every segment of a journal directory in order, ended ones first, the current one last. */
export function segmentFiles(dir: string): string[] {
  const ended = readdirSync(dir)
    .filter((f) => /^journal-\d{12}\.jsonl$/.test(f))
    .sort();
  return [...ended, ...(existsSync(join(dir, CURRENT)) ? [CURRENT] : [])].map((f) => join(dir, f));
}

/**
 * Parses a segment's lines; a last line that is not whole JSON (a torn write) is reported, not
 * thrown. `goodBytes` counts the bytes of the file up to the end of the last whole line, where
 * the store cuts a torn tail: counted on the bytes, not on the decoded text, whose length differs
 * for a byte that is not UTF-8 (decoded as U+FFFD, three bytes), so a cut never lands inside the
 * torn line.
 */
export function readSegment(file: string): { entries: JournalEntry[]; goodBytes: number; torn: boolean } {
  const bytes = readFileSync(file);
  const entries: JournalEntry[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const end = bytes.indexOf(0x0a, offset);
    try {
      if (end === -1) throw new Error('no newline');
      entries.push(JSON.parse(bytes.toString('utf8', offset, end)) as JournalEntry);
    } catch {
      if (end === -1 || bytes.indexOf(0x0a, end + 1) === -1) return { entries, goodBytes: offset, torn: true };
      throw new Error(`journal ${file} has an unreadable line after byte ${offset}; run \`tollgate audit verify\` and restore it`);
    }
    offset = end + 1;
  }
  return { entries, goodBytes: offset, torn: false };
}

/** The head file: the last entry fsync'd, by seq and link. */
export function readHead(dir: string): { seq: number; link: string } | undefined {
  const file = join(dir, HEAD);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as { seq: number; link: string };
}

/** One process owns a journal directory; a lock left by a process that is gone is taken over. */
export function takeLock(dir: string): void {
  const file = join(dir, LOCK);
  if (existsSync(file)) {
    const pid = Number(readFileSync(file, 'utf8'));
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new Error(`the journal in ${dir} is in use by process ${pid}; give each tollgate its own TOLLGATE_DATA_DIR, or share budgets through Redis`);
    }
  }
  writeFileSync(file, String(process.pid));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
