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
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, appendFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Role, Task, TaskState, type ListTasksRequest, type ListTasksResponse } from '@a2a-js/sdk';
import type { ServerCallContext, TaskStore } from '@a2a-js/sdk/server';

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
}

type Entry = { owner: string; task: Task };

export class BoundedTaskStore implements TaskStore {
  /** Insertion-ordered, so the first key is the oldest task. Key: owner + task id. */
  private readonly tasks = new Map<string, Entry>();
  private readonly file: string | undefined;
  private readonly slackLines: number;
  /** Lines in the file, replaced versions and dropped tasks included. */
  private lines = 0;
  /** True while appends fail (reported once per run of failures); tasks are still kept in memory. */
  private failing = false;

  constructor(
    private readonly maxTasks = 10_000,
    persist?: TaskFileOptions,
  ) {
    this.slackLines = persist?.slackLines ?? 1000;
    if (!persist) return;
    this.file = join(persist.dir, TASKS_FILE);
    try {
      mkdirSync(persist.dir, { recursive: true });
      this.replay();
    } catch (err) {
      // A2A still answers; its tasks are kept in memory, and appended when the file can be written.
      process.emitWarning(`A2A tasks cannot be read back from ${TASKS_FILE}: ${(err as Error).message}`, 'TollgateTaskStore');
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
    if (this.file) this.append(entry);
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
    while (this.tasks.size > this.maxTasks) this.tasks.delete(this.tasks.keys().next().value!);
  }

  private static line(entry: Entry): string {
    return `${JSON.stringify({ owner: entry.owner, task: Task.toJSON(entry.task) })}\n`;
  }

  private append(entry: Entry): void {
    try {
      appendFileSync(this.file!, BoundedTaskStore.line(entry), { mode: 0o600 });
      this.lines += 1;
      if (this.lines > 2 * this.tasks.size + this.slackLines) this.rewrite();
      this.failing = false;
    } catch (err) {
      // The task is kept in memory and answered as usual; only a restart would lose it.
      if (!this.failing) process.emitWarning(`A2A tasks cannot be written to ${TASKS_FILE}: ${(err as Error).message}`, 'TollgateTaskStore');
      this.failing = true;
    }
  }

  /** The file with only the tasks kept, oldest first: written aside, fsync'd, renamed into place. */
  private rewrite(): void {
    const file = this.file!;
    const temp = `${file}.tmp`;
    const fd = openSync(temp, 'w', 0o600);
    try {
      let chunk = '';
      for (const entry of this.tasks.values()) {
        chunk += BoundedTaskStore.line(entry);
        if (chunk.length > 1 << 20) {
          writeSync(fd, chunk);
          chunk = '';
        }
      }
      if (chunk) writeSync(fd, chunk);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
    this.lines = this.tasks.size;
  }

  /** Reads the file back: the latest version of each task, the most recent maxTasks; fails the ones left unfinished. */
  private replay(): void {
    const file = this.file!;
    if (!existsSync(file)) return;
    const text = readFileSync(file, 'utf8');
    const lines = text.split('\n');
    // Text after the last newline is a torn write; a rewrite below drops it.
    const torn = lines.pop() !== '';
    let read = 0;
    for (const raw of lines) {
      read += 1;
      try {
        const { owner, task } = JSON.parse(raw) as { owner: unknown; task: unknown };
        if (typeof owner !== 'string' || typeof task !== 'object' || task === null) continue;
        this.keep({ owner, task: Task.fromJSON(task as Parameters<typeof Task.fromJSON>[0]) });
      } catch {
        // An unreadable line loses that version of one task, not the file.
      }
    }
    let interrupted = 0;
    for (const entry of this.tasks.values()) {
      const state = entry.task.status?.state;
      if (state === TaskState.TASK_STATE_SUBMITTED || state === TaskState.TASK_STATE_WORKING) {
        entry.task = interruptedTask(entry.task);
        interrupted += 1;
      }
    }
    this.lines = read;
    if (torn || interrupted > 0 || read > this.tasks.size) this.rewrite();
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
