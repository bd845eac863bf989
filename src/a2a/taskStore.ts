/**
 * A2A task store for the gateway: tasks are kept per caller, in memory, and only the most recent
 * ones. Every completion is a task, so the SDK's unbounded in-memory store would grow for as long
 * as the process runs; here the oldest task is dropped once the cap is reached.
 *
 * With a data directory (the embedded store's, when there is no Redis), tasks also survive a
 * restart: each save appends the task to `tasks.jsonl` there, as one JSON line (owner and task, in
 * the A2A JSON form), and a start replays the file, keeping the latest version of each task and only
 * the most recent `maxTasks`. A task a previous process left submitted or working is failed, since
 * nothing will finish it. When the file holds more than one line per task kept plus `slackLines`, it
 * is rewritten with only the tasks kept (a temporary file, fsync'd, then renamed over it). Appends are
 * not fsync'd: a killed process keeps them, a machine that loses power may lose the last ones.
 *
 * A write the disk cuts short (ENOSPC, EIO...) leaves no half line: what it wrote is cut off again,
 * so the file ends with a whole line and the next one is written whole. If even the cut fails, that
 * is said, the half line stays (a start skips it as damaged), the next line starts on a line of its
 * own, and the half line's bytes are counted, so a later cut-back never reaches into a whole line.
 * The task is kept in memory and answered as usual, and its latest version is written once the
 * file takes writes again: before the next save's, and every `retryMs` until then. Said once per
 * spell of failures, and again when writes go through. A start skips a damaged line, keeping every
 * other, and recovers a whole line glued onto a half one (what a write cut short left before this).
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Role, TaskState, type ListTasksRequest, type ListTasksResponse, type Task } from '@a2a-js/sdk';
import type { ServerCallContext, TaskStore } from '@a2a-js/sdk/server';
import { parseTaskLine, salvageTaskLine, taskLine, type Entry } from './taskLines.js';

const DEFAULT_PAGE_SIZE = 50;

/** The file's name in the data directory. */
export const TASKS_FILE = 'tasks.jsonl';
/** Task metadata key of a refusal or failure: `{code, message, details}` (see agent.ts). */
export const ERROR_META_KEY = 'io.tollgate/error';

export interface TaskFileOptions {
  /** The data directory; tasks are kept in `tasks.jsonl` there. Created if missing. */
  dir: string;
  /** Lines the file may hold beyond two per task kept before it is rewritten. Default 1000. */
  slackLines?: number;
  /** Told when the file cannot be read or written (once per spell), when it can again, and of damaged lines at start. Default: a process warning. */
  warn?: (message: string, fields?: Record<string, unknown>) => void;
  /** Writes bytes to the file (default fs.writeSync); tests make the disk full with it. */
  write?: (fd: number, data: Buffer, offset: number, length: number) => number;
  /** How often versions not yet written are tried again without a save to carry them. Default 1 s. */
  retryMs?: number;
}

export class BoundedTaskStore implements TaskStore {
  /** Insertion-ordered, so the first key is the oldest task. Key: owner + task id. */
  private readonly tasks = new Map<string, Entry>();
  private readonly file: string | undefined;
  private readonly slackLines: number;
  private readonly warn: (message: string, fields?: Record<string, unknown>) => void;
  private readonly writeBytes: (fd: number, data: Buffer, offset: number, length: number) => number;
  private readonly retryMs: number;
  /** Lines in the file, replaced versions and dropped tasks included. */
  private lines = 0;
  /** Bytes of whole lines in the file: a write cut short is cut back to this length. */
  private bytes = 0;
  /**
   * Bytes after `bytes` that a write cut short left and cutting back could not remove (a half
   * line): the next write starts with a newline, so its own line stays whole, and a cut-back still
   * goes to `bytes`.
   */
  private halfBytes = 0;
  /** Tasks whose latest version is not in the file yet (the disk refused it), oldest first. */
  private readonly unwritten = new Set<string>();
  /** Why writes fail, while they do (one warning per spell). */
  private failing: string | undefined;
  /** No rewrite is tried before the file has this many lines (after one failed). */
  private rewriteHeld = 0;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly maxTasks = 10_000,
    persist?: TaskFileOptions,
  ) {
    this.slackLines = persist?.slackLines ?? 1000;
    this.warn = persist?.warn ?? ((message) => process.emitWarning(message, 'TollgateTaskStore'));
    this.writeBytes = persist?.write ?? writeSync;
    this.retryMs = persist?.retryMs ?? 1000;
    if (!persist) return;
    this.file = join(persist.dir, TASKS_FILE);
    try {
      mkdirSync(persist.dir, { recursive: true });
      this.replay();
    } catch (err) {
      // A2A still answers; its tasks are kept in memory, and appended when the file can be written.
      this.warn(`A2A tasks cannot be read back from ${TASKS_FILE}: ${(err as Error).message}`, { err: (err as Error).message });
    }
  }

  private static owner(context: ServerCallContext): string {
    return context.user?.userName ?? '';
  }

  private static key(owner: string, taskId: string): string {
    return `${owner}\u0000${taskId}`;
  }

  async load(taskId: string, context: ServerCallContext): Promise<Task | undefined> {
    const entry = this.tasks.get(BoundedTaskStore.key(BoundedTaskStore.owner(context), taskId));
    return entry ? structuredClone(entry.task) : undefined;
  }

  async save(task: Task, context: ServerCallContext): Promise<void> {
    const owner = BoundedTaskStore.owner(context);
    const entry = { owner, task: structuredClone(task) };
    this.keep(entry);
    if (!this.file) return;
    const key = BoundedTaskStore.key(owner, task.id);
    this.unwritten.delete(key);
    this.unwritten.add(key);
    this.writeUnwritten();
  }

  /** The caller's tasks, newest first; filters by context and state; one page, no page tokens. */
  async list(params: ListTasksRequest, context: ServerCallContext): Promise<ListTasksResponse> {
    const owner = BoundedTaskStore.owner(context);
    const mine = [...this.tasks.values()]
      .filter((e) => e.owner === owner)
      .map((e) => e.task)
      .filter((t) => !params.contextId || t.contextId === params.contextId)
      .filter((t) => !params.status || t.status?.state === params.status)
      .reverse();
    const pageSize = params.pageSize ?? DEFAULT_PAGE_SIZE;
    const tasks = mine.slice(0, pageSize).map((t) => {
      const copy = structuredClone(t);
      if (!params.includeArtifacts) copy.artifacts = [];
      return copy;
    });
    return { tasks, nextPageToken: '', pageSize, totalSize: mine.length };
  }

  /** Makes `entry` the newest task, dropping the oldest beyond the cap. */
  private keep(entry: Entry): void {
    const key = BoundedTaskStore.key(entry.owner, entry.task.id);
    this.tasks.delete(key);
    this.tasks.set(key, entry);
    while (this.tasks.size > this.maxTasks) {
      const oldest = this.tasks.keys().next().value!;
      this.tasks.delete(oldest);
      this.unwritten.delete(oldest);
    }
  }

  /** Writes the latest version of each task not in the file yet, oldest first, stopping at the first the disk refuses. */
  private writeUnwritten(): void {
    for (const key of this.unwritten) {
      const entry = this.tasks.get(key);
      if (entry && !this.append(taskLine(entry))) {
        this.retryLater();
        return;
      }
      this.unwritten.delete(key);
    }
    if (this.lines > Math.max(2 * this.tasks.size + this.slackLines, this.rewriteHeld)) this.rewrite();
  }

  private retryLater(): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.unwritten.size > 0) this.writeUnwritten();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /** Appends one whole line, or nothing: a write cut short is cut off again. False when the disk refused it. */
  private append(text: string): boolean {
    const line = Buffer.from(this.halfBytes > 0 ? `\n${text}` : text, 'utf8');
    let fd: number | undefined;
    let done = 0;
    try {
      fd = openSync(this.file!, 'a', 0o600);
      while (done < line.length) done += this.writeBytes(fd, line, done, line.length - done);
    } catch (err) {
      const reason = (err as Error).message;
      if (this.failing === undefined) {
        this.warn(`A2A tasks cannot be written to ${TASKS_FILE} (${reason}); they are answered from memory and written once it can be`, { err: reason, file: this.file });
      }
      this.failing = reason;
      if (fd !== undefined && (done > 0 || this.halfBytes > 0)) this.cutBack(fd, done);
      closeQuietly(fd);
      return false;
    }
    closeQuietly(fd);
    // A half line left before is now a (damaged) line of its own, ended by this write's newline.
    this.lines += this.halfBytes > 0 ? 2 : 1;
    this.bytes += this.halfBytes + line.length;
    this.halfBytes = 0;
    if (this.failing !== undefined) {
      this.failing = undefined;
      this.warn(`A2A tasks are written to ${TASKS_FILE} again`, { file: this.file });
    }
    return true;
  }

  /**
   * Cuts the file back to its whole lines after a write that left `written` bytes of a line (and
   * any half line left before). If that fails too, the bytes stay counted as a half line, and it is
   * said whenever a write left some.
   */
  private cutBack(fd: number, written: number): void {
    try {
      ftruncateSync(fd, this.bytes);
      this.halfBytes = 0;
    } catch (cut) {
      this.halfBytes += written;
      if (written === 0) return;
      const reason = (cut as Error).message;
      this.warn(
        `A2A tasks: a write to ${TASKS_FILE} was cut short and cutting its ${written} bytes off failed too (${reason}); the next line starts on a line of its own, and a start skips the half line`,
        { err: reason, file: this.file, halfBytes: this.halfBytes },
      );
    }
  }

  /** The file with only the tasks kept, oldest first: written aside, fsync'd, renamed into place. False if that failed (the file is left as it was). */
  private rewrite(): boolean {
    const file = this.file!;
    const temp = `${file}.tmp`;
    let bytes = 0;
    try {
      const fd = openSync(temp, 'w', 0o600);
      try {
        const write = (chunk: string) => {
          const data = Buffer.from(chunk, 'utf8');
          for (let done = 0; done < data.length; ) done += this.writeBytes(fd, data, done, data.length - done);
          bytes += data.length;
        };
        let chunk = '';
        for (const entry of this.tasks.values()) {
          chunk += taskLine(entry);
          if (chunk.length > 1 << 20) {
            write(chunk);
            chunk = '';
          }
        }
        if (chunk) write(chunk);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temp, file);
    } catch (err) {
      rmSync(temp, { force: true });
      // Tried again once the file has grown by another slackLines lines.
      this.rewriteHeld = this.lines + this.slackLines;
      this.warn(`A2A tasks: rewriting ${TASKS_FILE} failed (${(err as Error).message}); it is kept as it was`, { err: (err as Error).message, file });
      return false;
    }
    this.lines = this.tasks.size;
    this.bytes = bytes;
    this.halfBytes = 0;
    this.rewriteHeld = 0;
    this.unwritten.clear();
    return true;
  }

  /** Reads the file back: the latest version of each task, the most recent maxTasks; fails the ones left unfinished. */
  private replay(): void {
    const file = this.file!;
    if (!existsSync(file)) return;
    const buf = readFileSync(file);
    // Bytes after the last newline are a torn write: cut off before anything is appended after them.
    const whole = buf.lastIndexOf(0x0a) + 1;
    const torn = whole < buf.length;
    if (torn) {
      try {
        const fd = openSync(file, 'r+');
        try {
          ftruncateSync(fd, whole);
        } finally {
          closeSync(fd);
        }
      } catch {
        this.halfBytes = buf.length - whole;
      }
    }
    this.bytes = whole;
    const lines = buf.subarray(0, whole).toString('utf8').split('\n');
    lines.pop();
    let damaged = 0;
    let recovered = 0;
    for (const raw of lines) {
      if (!raw) continue;
      let entry = parseTaskLine(raw);
      if (!entry) {
        damaged += 1;
        entry = salvageTaskLine(raw);
        if (entry) recovered += 1;
      }
      if (entry) this.keep(entry);
    }
    if (damaged > 0) {
      this.warn(`A2A tasks: ${TASKS_FILE} had ${plural(damaged, 'damaged line')}; their cut-off parts were dropped, ${plural(recovered, 'whole task line')} ${recovered === 1 ? 'was' : 'were'} recovered from them`, { file, damaged, recovered });
    }
    const interrupted: string[] = [];
    for (const [key, entry] of this.tasks) {
      const state = entry.task.status?.state;
      if (state === TaskState.TASK_STATE_SUBMITTED || state === TaskState.TASK_STATE_WORKING) {
        entry.task = interruptedTask(entry.task);
        interrupted.push(key);
      }
    }
    this.lines = lines.length;
    if (damaged > 0 || interrupted.length > 0 || lines.length > this.tasks.size) {
      // If the rewrite fails, the failed tasks are appended (and retried) like any save.
      if (!this.rewrite()) for (const key of interrupted) this.unwritten.add(key);
      this.writeUnwritten();
    }
  }
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/** Closes `fd`; a close that fails after the bytes were written loses nothing. */
function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    closeSync(fd);
  } catch {
    // nothing to do
  }
}

/** `task` failed, because the process running it stopped before it finished. */
function interruptedTask(task: Task): Task {
  const error = { code: 'INTERNAL', message: 'The gateway stopped before this task finished; send the message again.', details: {} };
  const message = {
    messageId: randomUUID(),
    contextId: task.contextId,
    taskId: task.id,
    role: Role.ROLE_AGENT,
    parts: [{ content: { $case: 'text' as const, value: `${error.code}: ${error.message}` }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
  return {
    ...task,
    status: { state: TaskState.TASK_STATE_FAILED, message, timestamp: new Date().toISOString() },
    metadata: { ...task.metadata, [ERROR_META_KEY]: error },
  };
}
