/**
 * The embedded journal's files: what a journal directory holds and how it is read back, apart from
 * the writer (fileJournal.ts), so readers (audit, export, the tests) need not load it.
 *
 * - `journal.jsonl`: the current segment, one chained entry a line;
 * - `journal-<first seq>.jsonl`: ended segments, sortable by the seq they start at;
 * - `journal.next`: the next segment while a segment change is under way;
 * - `head.json`: the last entry fsync'd (seq and link), to catch a truncated tail (a start checks
 *   the files against it, `missingAtStart`; so does `tollgate audit verify`);
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

/**
 * What the store last fsync'd (entries after it may still be only in the page cache): none before
 * the first fsync, or why head.json cannot be read (it is written to a temporary file and renamed,
 * without an fsync of its own, so a power loss may leave it empty).
 */
export function journalHead(dir: string): { head?: { seq: number; link: string }; unreadable?: string } {
  let head: unknown;
  try {
    head = readHead(dir);
  } catch (err) {
    return { unreadable: err instanceof SyntaxError ? 'it is not JSON' : ((err as NodeJS.ErrnoException).code ?? String(err)) };
  }
  if (head === undefined) return {};
  const h = head as { seq?: unknown; link?: unknown };
  if (!Number.isSafeInteger(h.seq) || (h.seq as number) < 1 || typeof h.link !== 'string') return { unreadable: "it does not name an entry's seq and link" };
  return { head: { seq: h.seq as number, link: h.link } };
}

/**
 * What a start finds missing from the journal in `dir`, or undefined: a gap in the seqs of the
 * current segment's whole entries (`entries`), or, against the head, an entry it names that the
 * files no longer hold (the current segment's last, or when it is empty the ended segments' last,
 * `tail`), or another entry at its seq. The head is written only after the fsync that covers the
 * entry it names, so that entry was on disk: a torn line after the last whole entry is one the
 * process died writing only when the head does not name it. Entries after the head (a kill
 * between fsyncs) are fine. Whatever the head says, the current segment must open with entry 1 or
 * a snapshot, and not be missing or older beside ended segments. The text says what is missing and what the operator can do.
 */
export function missingAtStart(dir: string, head: { seq: number; link: string } | undefined, entries: JournalEntry[], tail: JournalEntry | undefined, torn: boolean): string | undefined {
  const verify = `\`tollgate audit verify --data-dir ${dir}\``;
  for (let i = 1; i < entries.length; i++) {
    const before = entries[i - 1]!.seq;
    const seq = entries[i]!.seq;
    if (seq <= before) return `entry ${seq} appears again after entry ${before} in ${CURRENT}: the file was pieced together. Restore the journal from a copy; ${verify} names the first entry that fails.`;
    if (seq !== before + 1) return `entry ${before + 1} is missing from ${CURRENT} (entry ${seq} follows entry ${before}): it was cut out or the file was pieced together. Restore the journal from a copy that holds it; ${verify} names the first entry that fails.`;
  }
  // The ended segments come before the current one, which a segment change always opens with its
  // snapshot: a current segment missing or empty beside them, or older than one of them, was not
  // left by a crash (a copy restored, a file deleted), and starting on it would lose what they hold.
  const ended = readdirSync(dir).filter((f) => /^journal-\d{12}\.jsonl$/.test(f)).sort();
  const lastEnded = ended.at(-1);
  if (lastEnded !== undefined && entries.length === 0) {
    return `${CURRENT} is missing or empty beside the ended segments (the last ends at entry ${tail?.seq ?? 0}): a segment change always leaves it its opening snapshot. Restore ${CURRENT} from a copy; ${verify} says what the files hold.`;
  }
  if (lastEnded !== undefined && Number(lastEnded.slice(8, 20)) >= entries[0]!.seq) {
    return `${lastEnded}, an ended segment, starts at entry ${Number(lastEnded.slice(8, 20))}, after entry ${entries[0]!.seq}, where ${CURRENT} starts: ${CURRENT} is older than the segments beside it (restored from an older copy). Restore the ${CURRENT} that goes with them; ${verify} says what the files hold.`;
  }
  // A segment opens with entry 1 or with its snapshot, which the counters are replayed from: one
  // that opens with anything else had its first lines cut, and what they charged would be lost.
  const opening = entries[0];
  if (opening && opening.seq !== 1 && opening.body.kind !== 'snapshot') {
    return `${CURRENT} starts at entry ${opening.seq}, which is not a segment's opening snapshot: the entries before it were cut (the counters they charged would be lost). Restore ${CURRENT} from a copy that holds its first lines; ${verify} says what the files hold.`;
  }
  if (!head) return undefined;
  const last = entries.at(-1) ?? tail;
  const lastSeq = last?.seq ?? 0;
  if (head.seq > lastSeq) {
    const one = head.seq === lastSeq + 1;
    return (
      `the journal ends at entry ${lastSeq}${torn ? ' and a torn line' : ''} but head.json says entry ${head.seq} was written and fsync'd: ${one ? `entry ${head.seq} is` : `entries ${lastSeq + 1} to ${head.seq} are`} missing (cut, emptied or deleted, or restored from an older copy). ` +
      `Restore the journal from a copy that holds ${one ? 'it' : 'them'}; ${verify} says what the files hold. ` +
      `To start on what is left, losing what ${one ? 'it' : 'those entries'} charged, move head.json aside first.`
    );
  }
  const first = entries[0]?.seq ?? lastSeq;
  const named = head.seq >= first ? (entries.length > 0 ? entries[head.seq - first] : tail) : undefined;
  if (named && named.link !== head.link) {
    return (
      `entry ${head.seq} is not the entry head.json names (its link differs): the journal was replaced, or restored from a copy that went on differently. ` +
      `Restore the journal that head.json belongs to; ${verify} says what the files hold. To start on the journal as it is, move head.json aside first.`
    );
  }
  return undefined;
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
