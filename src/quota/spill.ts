/**
 * The Redis store's replay queue on disk. While Redis is unreachable, the settlements, releases and
 * refusals the store could not write wait in the process's memory; a process that dies before
 * Redis is back would take them with it, refusals already answered among them. The spill keeps
 * each queued write in a file of its own process before the write's caller goes on, and a gateway
 * started later on the same directory takes over the files of processes that are gone and writes
 * their entries. Every replayed write is idempotent in Redis (settled markers per line, a marker
 * per journaled request), so an entry written twice (its process died between the write and the
 * note that it was done) still counts once.
 *
 * One file per process: `spill-<scope>-<pid>-<token>.ndjson`, JSON lines, `{"s":n,"w":…}` for an entry
 * added to the queue and `{"d":n}` for one that left it (written, or dropped). An entry is synced
 * to disk before `durable()` resolves; the notes that entries left are not (a lost note means one
 * more idempotent write). The file is emptied whenever the queue is. A file is taken over only when
 * the process that wrote it is gone: another live process's file (a `--workers` sibling on the same
 * directory) is left to it, and so is a file of another scope (`<scope>` is a digest of the store's
 * key prefix: a gateway of another deployment, or a drill on its own prefix, sharing the directory
 * must not write this one's entries into its ledger, nor hear their events).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

type Log = Pick<Logger, 'info' | 'warn' | 'error'>;

const FILE = /^spill-([0-9a-f]{12})-(\d+)-([0-9a-f]+)(?:-\d+)?\.ndjson$/;

/** The tokens of the spills open in this process: a file of this pid with another token is a previous process's. */
const OPEN_HERE = new Set<string>();

type Op = { line: string; add: boolean; overflow?: number } | { truncate: true };

/** Where an entry kept on disk only (beyond the queue's bound in memory) is in the file. */
interface OnDisk {
  seq: number;
  offset: number;
  length: number;
}

export class ReplaySpill<T> {
  /** This process's file (created at the first entry). */
  readonly file: string;
  private readonly token = randomBytes(6).toString('hex');
  private handle: FileHandle | undefined;
  private seq = 0;
  private ops: Op[] = [];
  private writing: Promise<void> | undefined;
  private waiters: (() => void)[] = [];
  /** Set once the file cannot be written: the queue is then kept in memory only, as without a spill. */
  private failed = false;
  private closed = false;
  /** Bytes in the file (it only grows by appends, and is emptied whole). */
  private size = 0;
  /** Entries noted with `overflow` and not taken back yet, oldest first; `located` those already written. */
  private overflowed = 0;
  private readonly located: OnDisk[] = [];

  private constructor(
    private readonly dir: string,
    scope: string,
    private readonly log: Log,
  ) {
    this.file = join(dir, `spill-${scope}-${process.pid}-${this.token}.ndjson`);
    OPEN_HERE.add(this.token);
  }

  /**
   * Opens this process's spill in `dir` for a store whose keys start with `prefix`, and takes over
   * the files that processes now gone wrote for the same prefix:
   * their unfinished entries, oldest file first, to be queued again (`restored`). Each restored
   * entry must be added to this spill (`add`); the files it came from are deleted once those are on disk.
   */
  static open<T>(dir: string, prefix: string, log: Log): { spill: ReplaySpill<T>; restored: T[] } {
    const scope = createHash('sha256').update(prefix).digest('hex').slice(0, 12);
    const spill = new ReplaySpill<T>(dir, scope, log);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.error({ err, dir, event: 'quota_spill_unreadable' }, 'cannot read the replay spill directory; writes queued by an earlier process there are not replayed');
      return { spill, restored: [] };
    }
    const orphans = names.flatMap((name) => {
      const m = FILE.exec(name);
      if (!m || m[1] !== scope || alive(Number(m[2]), m[3]!)) return [];
      try {
        return [{ name, mtime: statSync(join(dir, name)).mtimeMs }];
      } catch {
        return [];
      }
    });
    orphans.sort((a, b) => a.mtime - b.mtime);
    const restored: T[] = [];
    const taken: string[] = [];
    for (const { name } of orphans) {
      // Renamed into this process's name before it is read: of two processes starting at once, one takes it.
      const claimed = join(dir, `spill-${scope}-${process.pid}-${spill.token}-${taken.length + 1}.ndjson`);
      try {
        renameSync(join(dir, name), claimed);
      } catch {
        continue;
      }
      taken.push(claimed);
      const { entries, unreadable } = readSpill<T>(readFileSync(claimed, 'utf8'));
      restored.push(...entries);
      if (unreadable > 0) log.warn({ file: name, lines: unreadable, event: 'quota_spill_torn' }, 'skipped unreadable lines in a replay spill file (a write cut short by a crash)');
    }
    if (restored.length > 0) {
      log.warn({ dir, files: taken.length, writes: restored.length, event: 'quota_replay_restored' }, 'ledger writes left by a process that stopped during a Redis outage are queued again');
    }
    spill.taken = taken;
    // Files with nothing left to write are done with now; the others once their entries are synced here.
    if (restored.length === 0) spill.dropTaken();
    return { spill, restored };
  }

  /** Files taken over at open: deleted once their entries are in this spill's own file. */
  private taken: string[] = [];

  /** Notes an entry queued; `durable()` resolves once it is on disk. Returns its number, for `done`. */
  add(entry: T): number {
    const seq = ++this.seq;
    this.push({ line: `${JSON.stringify({ s: seq, w: entry })}\n`, add: true });
    return seq;
  }

  /**
   * Keeps an entry on disk only: the queue in memory is full. `takeOverflow` brings such entries
   * back, oldest first, once the queue has room again.
   */
  overflow(entry: T): void {
    const seq = ++this.seq;
    this.overflowed += 1;
    this.push({ line: `${JSON.stringify({ s: seq, w: entry })}\n`, add: true, overflow: seq });
  }

  /** Entries kept on disk only, not yet taken back. */
  get overflowing(): number {
    return this.overflowed;
  }

  /** Whether `overflow` may take another entry (at most `max` on disk only). */
  canOverflow(max: number): boolean {
    return !this.failed && !this.closed && this.overflowed < max;
  }

  /** Up to `n` of the entries kept on disk only, oldest first, with their numbers (for `done`). */
  async takeOverflow(n: number): Promise<{ entry: T; seq: number }[]> {
    await this.durable();
    const some = this.located.splice(0, Math.min(n, this.located.length));
    if (some.length === 0 || !this.handle) return [];
    const from = some[0]!.offset;
    const last = some[some.length - 1]!;
    const buf = Buffer.allocUnsafe(last.offset + last.length - from);
    await this.handle.read(buf, 0, buf.length, from);
    this.overflowed -= some.length;
    return some.map((d) => ({ seq: d.seq, entry: (JSON.parse(buf.toString('utf8', d.offset - from, d.offset - from + d.length)) as { w: T }).w }));
  }

  /** Notes that an entry left the queue (written, dropped, or replaced by what is left of it). */
  done(seq: number): void {
    this.push({ line: `{"d":${seq}}\n`, add: false });
  }

  /** The queue is empty: so is the file. */
  emptied(): void {
    if (this.seq > 0) this.push({ truncate: true });
  }

  /** Resolves once everything noted so far is written (and every entry synced); never rejects. */
  durable(): Promise<void> {
    if (this.ops.length === 0) return this.writing ?? Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /**
   * Writes what is noted and closes the file. `pending`: entries are left (the file stays for the
   * next start); none: the file is deleted.
   */
  async close(pending: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.durable();
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
    if (pending === 0) {
      for (const f of [this.file, ...this.taken]) {
        try {
          unlinkSync(f);
        } catch {
          // never created, or already gone
        }
      }
    } else if (!this.failed && this.seq > 0) {
      this.log.warn({ file: this.file, pending, event: 'quota_replay_spilled' }, 'closing with ledger writes Redis has not taken; they are kept in the replay spill, and the next gateway started on this data directory writes them');
    }
    OPEN_HERE.delete(this.token);
  }

  /** Whether entries are kept on disk (false once the file could not be written). */
  get writable(): boolean {
    return !this.failed;
  }

  private push(op: Op): void {
    if (this.failed || this.closed) return;
    this.ops.push(op);
    this.writing ??= this.pump().finally(() => {
      this.writing = undefined;
    });
  }

  private async pump(): Promise<void> {
    while (this.ops.length > 0) {
      const batch = this.ops;
      this.ops = [];
      const waiters = this.waiters;
      this.waiters = [];
      try {
        await this.apply(batch);
      } catch (err) {
        this.failed = true;
        this.ops = [];
        // Entries kept on disk only cannot be read back from a file that cannot be written.
        const lost = this.overflowed;
        this.overflowed = 0;
        this.located.length = 0;
        this.log.error({ err, file: this.file, lost, event: 'quota_spill_failed' }, 'cannot write the replay spill; writes queued during this Redis outage are kept in memory only');
      }
      for (const w of waiters) w();
    }
    for (const w of this.waiters.splice(0)) w();
  }

  private async apply(batch: Op[]): Promise<void> {
    let text = '';
    let bytes = 0;
    let sync = false;
    for (const op of batch) {
      if ('truncate' in op) {
        if (text) await this.append(text);
        text = '';
        bytes = 0;
        sync = false;
        await this.handle?.truncate(0);
        this.size = 0;
        continue;
      }
      const length = Buffer.byteLength(op.line);
      if (op.overflow !== undefined) this.located.push({ seq: op.overflow, offset: this.size + bytes, length });
      text += op.line;
      bytes += length;
      sync ||= op.add;
    }
    if (text) await this.append(text);
    if (sync) await this.handle!.datasync();
    if (this.taken.length > 0 && sync) this.dropTaken();
  }

  private async append(text: string): Promise<void> {
    if (!this.handle) {
      mkdirSync(this.dir, { recursive: true });
      // Read too: entries kept on disk only are read back from it.
      this.handle = await open(this.file, 'a+', 0o600);
      syncDirectory(this.dir);
    }
    const { bytesWritten } = await this.handle.write(text);
    this.size += bytesWritten;
  }

  /** The files taken over at open, once their entries are synced into this one. */
  private dropTaken(): void {
    for (const f of this.taken.splice(0)) {
      try {
        unlinkSync(f);
      } catch {
        // already gone
      }
    }
  }
}

/** The entries of a spill file still queued when it was last written: added and not noted done. */
export function readSpill<T>(text: string): { entries: T[]; unreadable: number } {
  const entries = new Map<number, T>();
  let unreadable = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    let parsed: { s?: unknown; w?: unknown; d?: unknown };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      unreadable += 1;
      continue;
    }
    if (typeof parsed.d === 'number') entries.delete(parsed.d);
    else if (typeof parsed.s === 'number' && parsed.w && typeof parsed.w === 'object') entries.set(parsed.s, parsed.w as T);
    else unreadable += 1;
  }
  return { entries: [...entries.values()], unreadable };
}

/** Whether the process that wrote a spill file may still be writing it. */
function alive(pid: number, token: string): boolean {
  if (pid === process.pid) return OPEN_HERE.has(token);
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Makes a new file's name in `dir` survive a power loss (best effort: not every platform can sync a directory). */
function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // not supported here
  }
}
