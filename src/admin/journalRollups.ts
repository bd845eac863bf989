/**
 * The embedded journal's day rollups, for a process that reads them again and again (the console's
 * overview) without a pass over the whole journal each time, and without any work on the call path:
 * the journal is read, never hooked.
 *
 * - An ended segment (`journal-<first seq>.jsonl`) never changes, so it is rolled up once, and the
 *   rollup is saved beside it (`rollups/<segment>.json`, with the segment's size and modification
 *   time): a restart reads that instead of the segment. A segment whose size or time no longer
 *   match is rolled up again; the saved rollup of a segment that was archived or deleted is
 *   deleted with it.
 * - The current segment (today's, as segments end with their UTC day) is read on from the byte
 *   where the last read stopped; a line still being written waits for the next read. When it ends,
 *   what is left of it is read under its new name.
 *
 * The same pass keeps each segment's refused calls (their decisions, saved with the rollup), for
 * the console's refusals page, and its request ids' 32-bit hashes, so a request's page reads only
 * the segments that may hold the request.
 *
 * The figures are those `tollgate usage report --data-dir` adds up (`rollupDecisions`): the same
 * decisions of the same entries, through the same function, each request once within a segment
 * (the embedded store writes one decision per request id).
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dayOf } from '../quota/redisJournal.js';
import { addEventRollup, type UsageRollup } from '../quota/rollups.js';
import { carriesDecision, currentSegmentName, decisionOfEntry, endedSegmentEntries, endedSegmentNames, isEntry, notAnEntry, type Decision } from './journalReader.js';
import type { JournalEntry } from '../quota/journal.js';
import { oneAtATime } from './oneAtATime.js';

const SAVED_DIR = 'rollups';
/** Bump when what a row holds or how it is added up changes: rollups saved before are then made again. */
const SAVED_FORMAT = 3;
/** Refused calls kept at most, per segment and in all: past either, the refusals page reads the journal whole. */
const MAX_REFUSED_PER_SEGMENT = 5_000;
const MAX_REFUSED = 20_000;
/** Bytes of a current segment's start kept to tell it from a later file that reuses its inode. */
const HEAD_BYTES = 64;

/** One segment's rows as they are added up, and its refused calls' decisions: each request once. */
class Rollup {
  readonly rows = new Map<string, UsageRollup>();
  /** None once there are more than MAX_REFUSED_PER_SEGMENT (a storm of refusals is not kept in memory). */
  refused: Decision[] | null = [];
  readonly seen = new Set<string>();

  /** Its request ids' 32-bit hashes, sorted: where a request's page looks for a request. */
  idHashes(): Uint32Array {
    const out = new Uint32Array(this.seen.size);
    let i = 0;
    for (const id of this.seen) out[i++] = hash32(id);
    return out.sort();
  }

  add(entry: JournalEntry): void {
    const b = entry.body;
    if (!carriesDecision(b)) return;
    const id = String(b.event['request.id']);
    if (this.seen.has(id)) return;
    this.seen.add(id);
    addEventRollup(this.rows, dayOf(b.at), b.event);
    if (b.event.outcome === 'refused' && this.refused) {
      this.refused.push(decisionOfEntry(entry)!);
      if (this.refused.length > MAX_REFUSED_PER_SEGMENT) this.refused = null;
    }
  }
}

interface Ended {
  size: number;
  mtimeMs: number;
  rows: UsageRollup[];
  refused: Decision[] | null;
  ids: Uint32Array;
}

/** FNV-1a over the UTF-16 code units: a request id's 32-bit hash. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function holds(sorted: Uint32Array, h: number): boolean {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! === h) return true;
    if (sorted[mid]! < h) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** How far the current segment has been read. */
interface Tail {
  ino: number;
  head: string;
  offset: number;
  lines: number;
  rollup: Rollup;
}

export class JournalRollups {
  private readonly ended = new Map<string, Ended>();
  private tail: Tail | undefined;
  private swept = false;
  /** One refresh at a time: two views at once would otherwise read the same bytes twice. */
  private readonly refreshed = oneAtATime(() => this.refresh());

  constructor(private readonly dir: string) {}

  /** The rollups of the UTC days `start` (inclusive) to `end` (exclusive), `YYYY-MM-DD`, as the journal holds them now. */
  async read(start: string, end: string): Promise<UsageRollup[]> {
    await this.refreshed();
    const out: UsageRollup[] = [];
    const take = (rows: Iterable<UsageRollup>) => {
      for (const r of rows) if (r.day >= start && r.day < end) out.push(r);
    };
    for (const e of this.ended.values()) take(e.rows);
    if (this.tail) take(this.tail.rollup.rows.values());
    return out;
  }

  /**
   * The decisions of refused calls committed from `from` (inclusive) to `to` (exclusive, epoch ms),
   * in journal order; none when there are too many to keep (MAX_REFUSED, MAX_REFUSED_PER_SEGMENT).
   */
  async refused(from: number, to: number): Promise<Decision[] | undefined> {
    await this.refreshed();
    const lists = [...this.ended.keys()].sort().map((name) => this.ended.get(name)!.refused);
    if (this.tail) lists.push(this.tail.rollup.refused);
    if (lists.some((l) => l === null) || lists.reduce((n, l) => n + l!.length, 0) > MAX_REFUSED) return undefined;
    const out: Decision[] = [];
    for (const l of lists) for (const d of l!) if (d.at >= from && d.at < to) out.push(d);
    return out;
  }

  /**
   * The first decision the journal holds for a request, as a pass over every segment finds it,
   * reading only the segments whose request ids hash alike (and today's, when it holds the id).
   */
  async find(requestId: string): Promise<Decision | undefined> {
    await this.refreshed();
    const h = hash32(requestId);
    const scan = (name: string): Decision | undefined => {
      for (const entry of endedSegmentEntries(this.dir, name)) {
        const d = decisionOfEntry(entry);
        if (d && String(d.event['request.id']) === requestId) return d;
      }
      return undefined;
    };
    for (const name of [...this.ended.keys()].sort()) {
      if (!holds(this.ended.get(name)!.ids, h)) continue;
      const d = scan(name);
      if (d) return d;
    }
    const current = currentSegmentName(this.dir);
    if (!current || !this.tail?.rollup.seen.has(requestId)) return undefined;
    try {
      return scan(current);
    } catch {
      // A last line still being written; the lines before it were read.
      return undefined;
    }
  }

  private async refresh(): Promise<void> {
    const names = endedSegmentNames(this.dir);
    const present = new Set(names);
    for (const name of [...this.ended.keys()]) {
      if (present.has(name)) continue;
      this.ended.delete(name);
      rmSync(this.savedFile(name), { force: true });
    }
    if (!this.swept) this.sweepSaved(present);
    for (const name of names) {
      const file = join(this.dir, name);
      const st = statSync(file);
      const known = this.ended.get(name);
      if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) continue;
      let got: Pick<Ended, 'rows' | 'refused' | 'ids'> | undefined;
      let made = true;
      if (this.tail && this.tail.ino === st.ino && this.headOf(file).startsWith(this.tail.head)) {
        // The segment being read has ended under this name: its rest, then it is whole.
        this.readOn(this.tail, name, true);
        got = { rows: [...this.tail.rollup.rows.values()], refused: this.tail.rollup.refused, ids: this.tail.rollup.idHashes() };
        this.tail = undefined;
      } else {
        got = this.loadSaved(name, st);
        made = !got;
        if (!got) {
          const rollup = new Rollup();
          for (const entry of endedSegmentEntries(this.dir, name)) rollup.add(entry);
          got = { rows: [...rollup.rows.values()], refused: rollup.refused, ids: rollup.idHashes() };
          // A long journal is rolled up a segment at a time, letting calls through in between.
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      const e: Ended = { size: st.size, mtimeMs: st.mtimeMs, ...got };
      this.ended.set(name, e);
      if (made) this.save(name, e);
    }
    const current = currentSegmentName(this.dir);
    if (!current) {
      this.tail = undefined;
      return;
    }
    const file = join(this.dir, current);
    const st = statSync(file);
    const head = this.headOf(file);
    if (!this.tail || this.tail.ino !== st.ino || st.size < this.tail.offset || !head.startsWith(this.tail.head)) {
      this.tail = { ino: st.ino, head, offset: 0, lines: 0, rollup: new Rollup() };
    }
    if (this.tail.head.length < HEAD_BYTES) this.tail.head = head;
    this.readOn(this.tail, current, false);
  }

  /** Adds the whole lines of `name` from where `tail` stopped; in an ended segment every line must be whole. */
  private readOn(tail: Tail, name: string, ended: boolean): void {
    const fd = openSync(join(this.dir, name), 'r');
    let bytes: Buffer;
    try {
      const size = statSync(join(this.dir, name)).size;
      bytes = Buffer.alloc(Math.max(0, size - tail.offset));
      let got = 0;
      while (got < bytes.length) {
        const n = readSync(fd, bytes, got, bytes.length - got, tail.offset + got);
        if (n === 0) break;
        got += n;
      }
      bytes = bytes.subarray(0, got);
    } finally {
      closeSync(fd);
    }
    const whole = bytes.lastIndexOf(0x0a) + 1;
    if (ended && whole < bytes.length) throw notAnEntry(this.dir, name, tail.lines + 1 + count(bytes, whole), 'its last line is not a whole entry');
    const lines = bytes.subarray(0, whole).toString('utf8').split('\n');
    lines.pop();
    for (let i = 0; i < lines.length; i++) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(lines[i]!);
      } catch {
        // The last line of the current segment may be cut by a crash; the store drops it at its next start.
        if (!ended && i === lines.length - 1 && whole === bytes.length) {
          tail.offset += whole - Buffer.byteLength(lines[i]!, 'utf8') - 1;
          tail.lines += i;
          return;
        }
        throw notAnEntry(this.dir, name, tail.lines + i + 1, 'the line is not JSON');
      }
      if (!isEntry(parsed)) throw notAnEntry(this.dir, name, tail.lines + i + 1, 'the line is JSON but not a journal entry');
      tail.rollup.add(parsed);
    }
    tail.offset += whole;
    tail.lines += lines.length;
  }

  private headOf(file: string): string {
    const fd = openSync(file, 'r');
    try {
      const b = Buffer.alloc(HEAD_BYTES);
      return b.subarray(0, readSync(fd, b, 0, HEAD_BYTES, 0)).toString('latin1');
    } finally {
      closeSync(fd);
    }
  }

  private savedFile(name: string): string {
    return join(this.dir, SAVED_DIR, `${name.replace(/\.jsonl$/, '')}.json`);
  }

  private loadSaved(name: string, st: { size: number; mtimeMs: number }): Pick<Ended, 'rows' | 'refused' | 'ids'> | undefined {
    try {
      const saved = JSON.parse(readFileSync(this.savedFile(name), 'utf8')) as { format?: number; segment?: string; size?: number; mtimeMs?: number; rows?: UsageRollup[]; refused?: Decision[] | null; ids?: string };
      if (saved.format === SAVED_FORMAT && saved.segment === name && saved.size === st.size && saved.mtimeMs === st.mtimeMs && Array.isArray(saved.rows) && (saved.refused === null || Array.isArray(saved.refused)) && typeof saved.ids === 'string') {
        const ids = new Uint32Array(new Uint8Array(Buffer.from(saved.ids, 'base64')).buffer);
        return { rows: saved.rows, refused: saved.refused, ids };
      }
    } catch {
      // None saved, or unreadable: rolled up from the segment instead.
    }
    return undefined;
  }

  /** Saves a segment's rollup; a directory that cannot be written keeps it in memory only. */
  private save(name: string, e: Ended): void {
    const file = this.savedFile(name);
    try {
      mkdirSync(join(this.dir, SAVED_DIR), { recursive: true });
      writeFileSync(`${file}.tmp`, JSON.stringify({ format: SAVED_FORMAT, segment: name, size: e.size, mtimeMs: e.mtimeMs, rows: e.rows, refused: e.refused, ids: Buffer.from(e.ids.buffer, e.ids.byteOffset, e.ids.byteLength).toString('base64') }));
      renameSync(`${file}.tmp`, file);
    } catch {
      // Read-only or full: the next start rolls the segment up again.
    }
  }

  /** Deletes saved rollups whose segment is gone (archived while no process read the journal). */
  private sweepSaved(present: Set<string>): void {
    this.swept = true;
    const dir = join(this.dir, SAVED_DIR);
    if (!existsSync(dir)) return;
    for (const f of readdirSync(dir)) {
      const segment = f.replace(/\.json$/, '.jsonl');
      if (!present.has(segment)) rmSync(join(dir, f), { force: true });
    }
  }
}

function count(bytes: Buffer, upTo: number): number {
  let n = 0;
  for (let i = bytes.indexOf(0x0a); i !== -1 && i < upTo; i = bytes.indexOf(0x0a, i + 1)) n += 1;
  return n;
}
