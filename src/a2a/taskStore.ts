/**
 * A2A task store for the gateway: tasks are kept per caller, in memory, and only the most recent
 * ones. Every completion is a task, so the SDK's unbounded in-memory store would grow for as long
 * as the process runs; here the oldest task is dropped once the cap is reached.
 */
import type { ListTasksRequest, ListTasksResponse, Task } from '@a2a-js/sdk';
import type { ServerCallContext, TaskStore } from '@a2a-js/sdk/server';

const DEFAULT_PAGE_SIZE = 50;

export class BoundedTaskStore implements TaskStore {
  /** Insertion-ordered, so the first key is the oldest task. Key: owner + task id. */
  private readonly tasks = new Map<string, { owner: string; task: Task }>();

  constructor(private readonly maxTasks = 10_000) {}

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
    const key = BoundedTaskStore.key(owner, task.id);
    this.tasks.delete(key);
    this.tasks.set(key, { owner, task: structuredClone(task) });
    while (this.tasks.size > this.maxTasks) this.tasks.delete(this.tasks.keys().next().value!);
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
}
