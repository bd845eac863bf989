import { TaskState, type Task } from '@a2a-js/sdk';
import { ServerCallContext, type User } from '@a2a-js/sdk/server';
import { describe, expect, it } from 'vitest';
import { BoundedTaskStore } from '../../src/a2a/taskStore.js';

const as = (userName: string) => new ServerCallContext({ user: { isAuthenticated: true, userName } satisfies User });

function task(id: string, contextId = 'ctx-1', state = TaskState.TASK_STATE_COMPLETED): Task {
  return { id, contextId, status: { state, message: undefined, timestamp: undefined }, artifacts: [], history: [], metadata: undefined };
}

describe('BoundedTaskStore', () => {
  it('keeps only the most recent tasks once the cap is reached', async () => {
    const store = new BoundedTaskStore(2);
    for (const id of ['t1', 't2', 't3']) await store.save(task(id), as('alice'));
    expect(await store.load('t1', as('alice'))).toBeUndefined();
    expect((await store.load('t3', as('alice')))?.id).toBe('t3');
  });

  it('never shows one caller another caller\'s task', async () => {
    const store = new BoundedTaskStore();
    await store.save(task('t1'), as('alice'));
    expect(await store.load('t1', as('bob'))).toBeUndefined();
    expect((await store.list({ tenant: '', contextId: '', status: TaskState.TASK_STATE_UNSPECIFIED, pageToken: '', statusTimestampAfter: undefined }, as('bob'))).tasks).toEqual([]);
  });

  it('lists a caller\'s tasks newest first, filtered by context and state', async () => {
    const store = new BoundedTaskStore();
    await store.save(task('t1', 'ctx-1'), as('alice'));
    await store.save(task('t2', 'ctx-2'), as('alice'));
    await store.save(task('t3', 'ctx-1', TaskState.TASK_STATE_FAILED), as('alice'));
    const all = await store.list({ tenant: '', contextId: '', status: TaskState.TASK_STATE_UNSPECIFIED, pageToken: '', statusTimestampAfter: undefined }, as('alice'));
    expect(all.tasks.map((t) => t.id)).toEqual(['t3', 't2', 't1']);
    const ctx1 = await store.list({ tenant: '', contextId: 'ctx-1', status: TaskState.TASK_STATE_COMPLETED, pageToken: '', statusTimestampAfter: undefined }, as('alice'));
    expect(ctx1).toEqual({ tasks: [task('t1', 'ctx-1')], nextPageToken: '', pageSize: 50, totalSize: 1 });
  });
});
