/**
 * The embedded store's journal: JSON lines in a directory, one chained entry a line (format in
 * journal.ts), so `jq` reads it. Every append is written before it returns (a killed process keeps
 * it: the bytes are in the kernel); fsync is grouped, at most every `fsyncIntervalMs`, and the
 * head file (`head.json`: the last entry's seq and link, to catch a truncated tail) follows each
 * fsync. A segment ends when it passes `maxSegmentBytes` or its UTC day ends: the next one starts
 * with a snapshot of the ledger (counters, open reservations), so a start replays one segment, not
 * history; ended segments stay beside it (`journal-<first seq>.jsonl`) for audit and export.
 *
 * The group commit runs off the event loop (fdatasync and the head's write and rename on libuv's
 * thread pool, issue 21: on the loop they were a measurable share of a loaded gateway's time), one
 * at a time. It fsyncs up to the entry last written when it starts, names no later entry in the head,
 * and resolves a `flush` only once it covers the flush's entry. A segment change, rare, still
 * fsyncs the ended segment and the next one's snapshot on the loop, before the renames.
 *
 * One process owns a directory at a time (`journal.lock` holds its pid).
 *
 * A write the disk cannot take (ENOSPC, EIO...) leaves no half line: what it wrote is cut off again,
 * so the file always ends with a whole entry. Then `append` (a reservation, a dispatch mark: what a
 * call may not go on without) throws QUOTA_STORE_UNAVAILABLE, and `appendOrKeep` (a settlement, a
 * release, a refusal: what records a call that happened) keeps the entry in memory, at most
 * `maxKept`, and writes it before any later entry once the disk takes writes again (retried every
 * `retryMs`, and before every append), telling `onLateWrite` so its event goes out then.
 */
import { closeSync, existsSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GatewayError } from '../errors.js';
import { chainedLine, GENESIS, type EntryBody, type JournalEntry } from './journal.js';
import { CURRENT, HEAD, journalHead, LOCK, missingAtStart, NEXT, readSegment, segmentFiles, segmentName, takeLock } from './journalFiles.js';

export { readHead, readSegment, segmentFiles, segmentName } from './journalFiles.js';

export interface FileJournalOptions {
  dir: string;
  /** Most time between an append and its fsync. Default 20 ms. */
  fsyncIntervalMs?: number;
  /** A segment past this size ends at the next append. Default 64 MiB. */
  maxSegmentBytes?: number;
  now?: () => number;
  /** Told about a torn last line dropped at open, and fsync failures. */
  warn?: (message: string, fields?: Record<string, unknown>) => void;
  /** The group commit's fsync of the segment's fd (default fs.fdatasync, on libuv's thread pool); tests hold it. */
  datasync?: (fd: number) => Promise<void>;
  /** Writes bytes to the segment (default fs.writeSync); tests make the disk full with it. */
  write?: (fd: number, data: Buffer, offset: number, length: number) => number;
  /** Entries kept in memory at most while the journal cannot be written (default 10,000). */
  maxKept?: number;
  /** How often kept entries are tried again without an append to carry them (default 1 s). */
  retryMs?: number;
}

/** How many times close tries its last fsync before it gives up and says so. */
const CLOSE_ATTEMPTS = 3;

const fdatasyncAsync = promisify(fdatasync);

/** What opening a journal directory found. */
export interface OpenedJournal {
  journal: FileJournal;
  /** The bodies to replay: the current segment, from its snapshot (if any) on. */
  replay: EntryBody[];
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
  private readonly datasync: (fd: number) => Promise<void>;
  private timer: NodeJS.Timeout | undefined;
  /** Flushes waiting for an fsync to cover the entry they were asked after. */
  private waiters: { seq: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  /** The last entry whose bytes are fsync'd. */
  private synced: { seq: number; link: string };
  /** The seq head.json names. */
  private headSeq: number;
  /** The commit running, if any: there is at most one. */
  private committing: Promise<Error | undefined> | undefined;
  /** An fdatasync is running on the thread pool: an fd the segment change lets go waits for it in `retired`. */
  private fsyncing = false;
  private retired: number[] = [];
  private closed = false;
  private closing: Promise<void> | undefined;
  /** The state a new segment starts from; set by the store that owns the journal. */
  snapshotSource: (() => Record<string, unknown>) | undefined;
  /** Told of each kept entry once it is written (its event can go out now); set by the store. */
  onLateWrite: ((body: EntryBody) => void) | undefined;
  private readonly writeBytes: (fd: number, data: Buffer, offset: number, length: number) => number;
  /** Entries that could not be written yet, oldest first: each is written before anything after it. */
  private readonly kept: EntryBody[] = [];
  private readonly maxKept: number;
  private readonly retryMs: number;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Why the last write failed, while writes fail (one warning per spell, not one per entry). */
  private failing: string | undefined;
  /** The commit's fsync or head write is failing (warned once per spell). */
  private commitFailing = false;

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
    this.datasync = opts.datasync ?? fdatasyncAsync;
    this.writeBytes = opts.write ?? writeSync;
    this.maxKept = opts.maxKept ?? 10_000;
    this.retryMs = opts.retryMs ?? 1000;
    // What an earlier process wrote may not all be fsync'd: the first commit covers it, and writes the head.
    this.synced = { seq: 0, link: GENESIS };
    this.headSeq = 0;
  }

  /**
   * Opens (or creates) the journal in `opts.dir`, finishing an interrupted segment change and
   * dropping a torn last line. Throws, before it cuts or writes the journal or its head, when the
   * files lack an entry head.json names or have a gap (`missingAtStart`): serving on the rest would
   * undercount, and the next head would hide the loss.
   */
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
    const read = existsSync(current) ? readSegment(current) : { entries: [], goodBytes: 0, torn: false };
    const entries = read.entries;
    // An empty current segment continues the chain of the last ended one.
    let tail = entries.at(-1);
    if (!tail) {
      const ended = segmentFiles(dir).filter((f) => !f.endsWith(CURRENT));
      tail = ended.length ? readSegment(ended.at(-1)!).entries.at(-1) : undefined;
    }
    // Checked before anything is cut or written: a refused start leaves the files and the head as they were.
    const { head, unreadable } = journalHead(dir);
    if (unreadable) opts.warn?.(`journal: head.json cannot be read (${unreadable}); the journal is not checked against it at this start`, { dir });
    const missing = missingAtStart(dir, head, entries, tail, read.torn);
    if (missing) throw new Error(missing);
    if (read.torn) {
      opts.warn?.('journal: dropped a torn last line (the process died while writing it)', { file: current, keptBytes: read.goodBytes });
      const fd = openSync(current, 'r+');
      ftruncateSync(fd, read.goodBytes);
      closeSync(fd);
    }
    const seq = tail?.seq ?? 0;
    const link = tail?.link ?? GENESIS;
    const fd = openSync(current, 'a');
    const now = opts.now ?? Date.now;
    const first = entries[0];
    const journal = new FileJournal(opts, { fd, seq, link, bytes: fstatSync(fd).size, day: utcDay(first ? first.body.at : now()), firstSeq: first?.seq });
    return { journal, replay: entries.map((e) => e.body) };
  }

  /**
   * Appends one entry; it is in the file when this returns. Entries kept earlier are written first;
   * if they or this one cannot be, throws QUOTA_STORE_UNAVAILABLE and this entry is not written.
   */
  append(body: EntryBody): JournalEntry {
    if (this.closed) throw new Error('the journal is closed');
    this.writeKept();
    return this.place(body);
  }

  /**
   * Appends one entry, or keeps it to be written (before anything later) once the journal can be
   * written again: true when it is in the file now. Kept entries are bounded by `maxKept`; past it
   * the oldest is dropped, and said so.
   */
  appendOrKeep(body: EntryBody): boolean {
    if (this.closed) throw new Error('the journal is closed');
    try {
      this.writeKept();
      this.place(body);
      return true;
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      this.kept.push(body);
      if (this.kept.length > this.maxKept) {
        const dropped = this.kept.shift()!;
        this.opts.warn?.('journal: too many entries kept while the journal cannot be written; the oldest is dropped', { kind: dropped.kind, id: dropped.id, max: this.maxKept });
      }
      this.retryLater();
      return false;
    }
  }

  /** Writes the kept entries, oldest first; throws QUOTA_STORE_UNAVAILABLE at the first that cannot be written. */
  private writeKept(): void {
    while (this.kept.length > 0) {
      const body = this.kept[0]!;
      this.place(body);
      this.kept.shift();
      this.onLateWrite?.(body);
    }
  }

  /**
   * Ends the segment first when it is due, then writes the entry. Not while entries are kept: the
   * store has already applied what they record, so a snapshot then would hold charges whose entries
   * (and events) are not written yet; the segment ends at the first append after they are.
   */
  private place(body: EntryBody): JournalEntry {
    if (this.seq > 0 && this.kept.length === 0 && (this.bytes >= this.maxBytes || utcDay(body.at) !== this.segmentDay)) this.rotate(body.at);
    return this.write(body);
  }

  private retryLater(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed || this.kept.length === 0) return;
      try {
        this.writeKept();
      } catch (err) {
        if (!(err instanceof GatewayError)) this.opts.warn?.('journal: writing kept entries failed', { err: String(err) });
      }
      if (this.kept.length > 0) this.retryLater();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /** Resolves once everything appended so far is fsync'd (rejects if close gave up on it). */
  flush(): Promise<void> {
    if (this.seq <= this.synced.seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiters.push({ seq: this.seq, resolve, reject });
      this.schedule();
    });
  }

  /** The last entry's seq and link. */
  head(): { seq: number; link: string } {
    return { seq: this.seq, link: this.link };
  }

  /**
   * Stops taking appends, waits for the commit in flight, fsyncs the rest (the head after it),
   * then closes the fd. Rejects when that last fsync keeps failing: entries after the head may not
   * be on disk (they are in the file: a restart replays them unless the machine lost power).
   */
  close(): Promise<void> {
    this.closing ??= this.shut();
    return this.closing;
  }

  private async shut(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.committing;
    let unwritten: EntryBody[] = [];
    try {
      this.writeKept();
    } catch {
      unwritten = this.kept.splice(0);
    }
    let failure: Error | undefined;
    for (let attempt = 1; attempt <= CLOSE_ATTEMPTS; attempt++) {
      failure = await this.commit();
      if (!failure) break;
      if (attempt < CLOSE_ATTEMPTS) await new Promise((r) => setTimeout(r, this.fsyncMs));
    }
    closeSync(this.fd);
    this.closeRetired();
    rmSync(join(this.opts.dir, LOCK), { force: true });
    if (unwritten.length > 0) {
      const ids = unwritten.map((b) => `${b.kind} ${b.id}`);
      const message = `journal: ${unwritten.length} ${unwritten.length === 1 ? 'entry' : 'entries'} kept in memory could not be written at close (${this.failing ?? 'the journal cannot be written'}); lost: ${ids.slice(0, 20).join(', ')}${ids.length > 20 ? ', ...' : ''}`;
      this.opts.warn?.(message, { entries: ids });
      for (const w of this.waiters.splice(0)) w.reject(new Error(message));
      throw new Error(message);
    }
    if (failure) {
      const err = new Error(`journal: entries after ${this.synced.seq} (up to ${this.seq}) could not be fsync'd at close: ${failure.message}`);
      for (const w of this.waiters.splice(0)) w.reject(err);
      throw err;
    }
  }

  private write(body: EntryBody): JournalEntry {
    const { entry, line } = chainedLine(this.seq + 1, this.link, body);
    this.writeLine(line);
    this.firstSeq ??= entry.seq;
    this.seq = entry.seq;
    this.link = entry.link;
    this.bytes += line.length;
    this.schedule();
    return entry;
  }

  /**
   * Writes a whole line or nothing: a write the disk cuts short is cut off again (the file ends
   * where it ended), and the failure becomes QUOTA_STORE_UNAVAILABLE. Said once per spell of
   * failures, and again when writes go through.
   */
  private writeLine(line: Buffer): void {
    let done = 0;
    try {
      while (done < line.length) done += this.writeBytes(this.fd, line, done, line.length - done);
    } catch (err) {
      let reason = err instanceof Error ? err.message : String(err);
      if (done > 0) {
        try {
          ftruncateSync(this.fd, this.bytes);
        } catch (cut) {
          // The half line stays at the end; a start drops it as torn, and the next write would land after it: stop writing.
          this.closed = true;
          reason = `${reason}; cutting off the half-written line failed too (${cut instanceof Error ? cut.message : String(cut)}), so the journal takes no more writes until a restart`;
        }
      }
      if (this.failing === undefined) {
        this.opts.warn?.(`journal: the journal cannot be written (${reason}); calls are refused until it can, and settlements and events are kept in memory meanwhile (at most ${this.maxKept})`, { err: reason, dir: this.opts.dir });
      }
      this.failing = reason;
      throw new GatewayError('QUOTA_STORE_UNAVAILABLE', `The ledger's journal cannot be written (${reason}).`, {}, { cause: err });
    }
    if (this.failing !== undefined) {
      this.opts.warn?.('journal: the journal takes writes again', { dir: this.opts.dir, kept: this.kept.length });
      this.failing = undefined;
    }
  }

  /**
   * Ends the current segment: the next starts with a snapshot, then takes the place of the current
   * one. Both are fsync'd here, on the loop (a commit may be running on the old fd: it is closed
   * once that is over); if either fsync fails the segment goes on and the next append tries again.
   */
  private rotate(at: number): void {
    const state = this.snapshotSource?.();
    if (!state) return;
    const { dir } = this.opts;
    const firstSeq = this.seq + 1;
    const { entry: snapshot, line } = chainedLine(firstSeq, this.link, { kind: 'snapshot', id: `snapshot-${firstSeq}`, at, state });
    try {
      // The ended segment is named by its own first seq (known, not read back from the file); a
      // file of that name is never replaced.
      if (existsSync(join(dir, segmentName(this.firstSeq ?? firstSeq)))) throw new Error(`${segmentName(this.firstSeq ?? firstSeq)} exists already`);
      fdatasyncSync(this.fd);
      const nextFd = openSync(join(dir, NEXT), 'w');
      try {
        // The whole snapshot or no segment change: a write the disk cuts short is a failed one.
        for (let done = 0; done < line.length; ) {
          const n = this.writeBytes(nextFd, line, done, line.length - done);
          if (n <= 0) throw new Error(`the snapshot could not be written whole (${done} of ${line.length} bytes)`);
          done += n;
        }
        fdatasyncSync(nextFd);
      } finally {
        closeSync(nextFd);
      }
    } catch (err) {
      rmSync(join(dir, NEXT), { force: true });
      this.opts.warn?.('journal: a segment change failed (its snapshot could not be written and fsync\'d); the segment goes on, the next append tries again', { err: String(err) });
      return;
    }
    const endedFirst = this.firstSeq ?? firstSeq;
    if (this.fsyncing) this.retired.push(this.fd);
    else closeSync(this.fd);
    renameSync(join(dir, CURRENT), join(dir, segmentName(endedFirst)));
    renameSync(join(dir, NEXT), join(dir, CURRENT));
    this.fd = openSync(join(dir, CURRENT), 'a');
    this.seq = snapshot.seq;
    this.link = snapshot.link;
    this.firstSeq = snapshot.seq;
    this.bytes = Buffer.byteLength(line, 'utf8');
    this.segmentDay = utcDay(at);
    // Everything up to the snapshot is fsync'd: the next commit names it in the head.
    this.synced = { seq: snapshot.seq, link: snapshot.link };
    this.schedule();
  }

  /** A commit within `fsyncIntervalMs`, unless one is due or running (it schedules the next when it ends). */
  private schedule(): void {
    if (this.timer || this.committing || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed) return;
      void this.commit().then(() => {
        if (this.seq > this.synced.seq || this.headSeq < this.synced.seq) this.schedule();
      });
    }, this.fsyncMs);
    this.timer.unref();
  }

  /**
   * Group commit: one fdatasync for everything written before it starts, then the head, then the
   * flushes it covers. Off the loop; never more than one at a time. Resolves with the failure (warned
   * here), never rejects.
   */
  private commit(): Promise<Error | undefined> {
    const run = this.commitOnce().finally(() => {
      this.committing = undefined;
    });
    this.committing = run;
    return run;
  }

  private async commitOnce(): Promise<Error | undefined> {
    const upTo = { seq: this.seq, link: this.link };
    if (upTo.seq > this.synced.seq) {
      this.fsyncing = true;
      try {
        await this.datasync(this.fd);
      } catch (err) {
        // Once a spell while running (a commit is tried every few ms); every attempt at close.
        if (!this.commitFailing || this.closed) this.opts.warn?.('journal: fsync failed; will retry', { err: String(err) });
        this.commitFailing = true;
        return err instanceof Error ? err : new Error(String(err));
      } finally {
        this.fsyncing = false;
        this.closeRetired();
      }
      // A segment change during the fsync may have fsync'd further already.
      if (upTo.seq > this.synced.seq) this.synced = upTo;
    }
    const named = this.synced;
    if (named.seq > this.headSeq) {
      try {
        const tmp = join(this.opts.dir, `${HEAD}.tmp`);
        await writeFile(tmp, JSON.stringify(named));
        await rename(tmp, join(this.opts.dir, HEAD));
        this.headSeq = named.seq;
        this.commitFailing = false;
      } catch (err) {
        if (!this.commitFailing) this.opts.warn?.('journal: head write failed; will retry', { err: String(err) });
        this.commitFailing = true;
      }
    } else this.commitFailing = false;
    const covered = this.synced.seq;
    if (this.waiters.length > 0) {
      const still = [];
      for (const w of this.waiters) {
        if (w.seq <= covered) w.resolve();
        else still.push(w);
      }
      this.waiters = still;
    }
    return undefined;
  }

  private closeRetired(): void {
    for (const fd of this.retired.splice(0)) {
      try {
        closeSync(fd);
      } catch (err) {
        // Its bytes were fsync'd at the segment change; a failed close loses nothing.
        this.opts.warn?.('journal: closing an ended segment failed', { err: String(err) });
      }
    }
  }
}

function utcDay(ms: number): number {
  return Math.floor(ms / 86_400_000);
}
