/**
 * The embedded store's journal: JSON lines in a directory, one chained entry a line (format in
 * journal.ts), so `jq` reads it. Every append is written before it returns (a killed process keeps
 * it: the bytes are in the kernel); fsync is grouped, at most every `fsyncIntervalMs`, and the
 * head file (`head.json`: the last entry's seq and link, to catch a truncated tail) follows each
 * fsync. A segment ends when it passes `maxSegmentBytes` or its UTC day ends: the next one starts
 * with a snapshot of the ledger (counters, open reservations), so a start replays one segment, not
 * history; ended segments stay beside it (`journal-<first seq>.jsonl`) for audit and export.
 *
 * One process owns a directory at a time (`journal.lock` holds its pid).
 */
import { closeSync, existsSync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { chained, GENESIS, type EntryBody, type JournalEntry } from './journal.js';

export interface FileJournalOptions {
  dir: string;
  /** Most time between an append and its fsync. Default 20 ms. */
  fsyncIntervalMs?: number;
  /** A segment past this size ends at the next append. Default 64 MiB. */
  maxSegmentBytes?: number;
  now?: () => number;
  /** Told about a torn last line dropped at open, and fsync failures. */
  warn?: (message: string, fields?: Record<string, unknown>) => void;
}

/** What opening a journal directory found. */
export interface OpenedJournal {
  journal: FileJournal;
  /** The bodies to replay: the current segment, from its snapshot (if any) on. */
  replay: EntryBody[];
}

const CURRENT = 'journal.jsonl';
const NEXT = 'journal.next';
const HEAD = 'head.json';
const LOCK = 'journal.lock';

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

/** Parses a segment's lines; a last line that is not whole JSON (a torn write) is reported, not thrown. */
export function readSegment(file: string): { entries: JournalEntry[]; goodBytes: number; torn: boolean } {
  const text = readFileSync(file, 'utf8');
  const entries: JournalEntry[] = [];
  let offset = 0;
  let goodBytes = 0;
  while (offset < text.length) {
    const end = text.indexOf('\n', offset);
    const line = end === -1 ? text.slice(offset) : text.slice(offset, end);
    try {
      if (end === -1) throw new Error('no newline');
      entries.push(JSON.parse(line) as JournalEntry);
    } catch {
      if (end === -1 || text.indexOf('\n', end + 1) === -1) return { entries, goodBytes, torn: true };
      throw new Error(`journal ${file} has an unreadable line after byte ${goodBytes}; run \`tollgate audit verify\` and restore it`);
    }
    offset = end + 1;
    // Counted line by line: measuring the text up to here on every line made reading a 64 MiB
    // segment quadratic (hours, on the event loop, at the first segment change).
    goodBytes += Buffer.byteLength(line, 'utf8') + 1;
  }
  return { entries, goodBytes, torn: false };
}

/** The head file: the last entry fsync'd, by seq and link. */
export function readHead(dir: string): { seq: number; link: string } | undefined {
  const file = join(dir, HEAD);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as { seq: number; link: string };
}

export class FileJournal {
  private fd: number;
  private seq: number;
  private link: string;
  private bytes: number;
  private segmentDay: number;
  /** The seq of the current segment's first entry (its name once it ends); undefined while it is empty. */
  private firstSeq: number | undefined;
  private readonly fsyncMs: number;
  private readonly maxBytes: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] = [];
  private dirty = false;
  private closed = false;
  /** The state a new segment starts from; set by the store that owns the journal. */
  snapshotSource: (() => Record<string, unknown>) | undefined;

  private constructor(
    private readonly opts: FileJournalOptions,
    start: { fd: number; seq: number; link: string; bytes: number; day: number; firstSeq: number | undefined },
  ) {
    this.fd = start.fd;
    this.seq = start.seq;
    this.link = start.link;
    this.bytes = start.bytes;
    this.segmentDay = start.day;
    this.firstSeq = start.firstSeq;
    this.fsyncMs = opts.fsyncIntervalMs ?? 20;
    this.maxBytes = opts.maxSegmentBytes ?? 64 * 1024 * 1024;
    this.now = opts.now ?? Date.now;
  }

  /** Opens (or creates) the journal in `opts.dir`, finishing an interrupted segment change and dropping a torn last line. */
  static open(opts: FileJournalOptions): OpenedJournal {
    const { dir } = opts;
    mkdirSync(dir, { recursive: true });
    takeLock(dir);
    const current = join(dir, CURRENT);
    const next = join(dir, NEXT);
    // A segment change writes NEXT, then renames CURRENT away, then NEXT into place.
    if (existsSync(next)) {
      if (existsSync(current)) rmSync(next);
      else renameSync(next, current);
    }
    let entries: JournalEntry[] = [];
    if (existsSync(current)) {
      const read = readSegment(current);
      entries = read.entries;
      if (read.torn) {
        opts.warn?.('journal: dropped a torn last line (the process died while writing it)', { file: current, keptBytes: read.goodBytes });
        const fd = openSync(current, 'r+');
        ftruncateSync(fd, read.goodBytes);
        closeSync(fd);
      }
    }
    let seq = 0;
    let link = GENESIS;
    const last = entries.at(-1);
    if (last) {
      seq = last.seq;
      link = last.link;
    } else {
      // An empty current segment continues the chain of the last ended one.
      const ended = segmentFiles(dir).filter((f) => !f.endsWith(CURRENT));
      const tail = ended.length ? readSegment(ended.at(-1)!).entries.at(-1) : undefined;
      if (tail) {
        seq = tail.seq;
        link = tail.link;
      }
    }
    const fd = openSync(current, 'a');
    const now = opts.now ?? Date.now;
    const first = entries[0];
    const journal = new FileJournal(opts, { fd, seq, link, bytes: fstatSync(fd).size, day: utcDay(first ? first.body.at : now()), firstSeq: first?.seq });
    return { journal, replay: entries.map((e) => e.body) };
  }

  /** Appends one entry; it is in the file when this returns. */
  append(body: EntryBody): JournalEntry {
    if (this.closed) throw new Error('the journal is closed');
    if (this.seq > 0 && (this.bytes >= this.maxBytes || utcDay(body.at) !== this.segmentDay)) this.rotate(body.at);
    return this.write(body);
  }

  /** Resolves once everything appended so far is fsync'd. */
  flush(): Promise<void> {
    if (!this.dirty) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.schedule();
    });
  }

  /** The last entry's seq and link. */
  head(): { seq: number; link: string } {
    return { seq: this.seq, link: this.link };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.sync();
    this.closed = true;
    closeSync(this.fd);
    rmSync(join(this.opts.dir, LOCK), { force: true });
  }

  private write(body: EntryBody): JournalEntry {
    const entry = chained(this.seq + 1, this.link, body);
    const line = `${JSON.stringify(entry)}\n`;
    writeSync(this.fd, line);
    this.firstSeq ??= entry.seq;
    this.seq = entry.seq;
    this.link = entry.link;
    this.bytes += Buffer.byteLength(line, 'utf8');
    this.dirty = true;
    this.schedule();
    return entry;
  }

  /** Ends the current segment: the next starts with a snapshot, then takes the place of the current one. */
  private rotate(at: number): void {
    const state = this.snapshotSource?.();
    if (!state) return;
    this.sync();
    const { dir } = this.opts;
    const firstSeq = this.seq + 1;
    const snapshot = chained(firstSeq, this.link, { kind: 'snapshot', id: `snapshot-${firstSeq}`, at, state });
    const line = `${JSON.stringify(snapshot)}\n`;
    const nextFd = openSync(join(dir, NEXT), 'w');
    writeSync(nextFd, line);
    fdatasyncSync(nextFd);
    closeSync(nextFd);
    // The ended segment is named by its own first seq (known, not read back from the file).
    const endedFirst = this.firstSeq ?? firstSeq;
    closeSync(this.fd);
    renameSync(join(dir, CURRENT), join(dir, segmentName(endedFirst)));
    renameSync(join(dir, NEXT), join(dir, CURRENT));
    this.fd = openSync(join(dir, CURRENT), 'a');
    this.seq = snapshot.seq;
    this.link = snapshot.link;
    this.firstSeq = snapshot.seq;
    this.bytes = Buffer.byteLength(line, 'utf8');
    this.segmentDay = utcDay(at);
    this.writeHead();
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sync();
    }, this.fsyncMs);
    this.timer.unref();
  }

  /** Group commit: one fsync for everything written since the last, then the head. */
  private sync(): void {
    if (!this.dirty) return;
    try {
      fdatasyncSync(this.fd);
      this.dirty = false;
      this.writeHead();
    } catch (err) {
      this.opts.warn?.('journal: fsync failed; will retry', { err: String(err) });
      this.schedule();
      return;
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private writeHead(): void {
    const tmp = join(this.opts.dir, `${HEAD}.tmp`);
    writeFileSync(tmp, JSON.stringify({ seq: this.seq, link: this.link }));
    renameSync(tmp, join(this.opts.dir, HEAD));
  }
}

function utcDay(ms: number): number {
  return Math.floor(ms / 86_400_000);
}

/** One process owns a journal directory; a lock left by a process that is gone is taken over. */
function takeLock(dir: string): void {
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
