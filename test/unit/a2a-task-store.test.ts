import { appendFileSync, closeSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TaskState, type Task } from '@a2a-js/sdk';
import { ServerCallContext, type User } from '@a2a-js/sdk/server';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BoundedTaskStore } from '../../src/a2a/taskStore.js';
import { Disk } from '../helpers/fullDisk.js';

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

describe('BoundedTaskStore in a data directory', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-tasks-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const lines = () => readFileSync(join(dir, 'tasks.jsonl'), 'utf8').trim().split('\n');
  const noFilter = { tenant: '', contextId: '', status: TaskState.TASK_STATE_UNSPECIFIED, pageToken: '', statusTimestampAfter: undefined };

  it('gives a new store on the same directory the latest version of each task, per owner', async () => {
    const before = new BoundedTaskStore(10, { dir });
    await before.save(task('t1', 'ctx-1', TaskState.TASK_STATE_SUBMITTED), as('alice'));
    await before.save(task('t1', 'ctx-1', TaskState.TASK_STATE_COMPLETED), as('alice'));
    await before.save(task('t1', 'ctx-9', TaskState.TASK_STATE_FAILED), as('bob'));
    await before.save(task('t2'), as('alice'));
    expect(lines()).toHaveLength(4);

    const after = new BoundedTaskStore(10, { dir });
    expect(await after.load('t1', as('alice'))).toEqual(task('t1', 'ctx-1', TaskState.TASK_STATE_COMPLETED));
    expect(await after.load('t1', as('bob'))).toEqual(task('t1', 'ctx-9', TaskState.TASK_STATE_FAILED));
    expect(await after.load('t2', as('bob'))).toBeUndefined();
    expect((await after.list(noFilter, as('alice'))).tasks.map((t) => t.id)).toEqual(['t2', 't1']);
    // Replaced versions were dropped from the file at start.
    expect(lines()).toHaveLength(3);
  });

  it('keeps only the most recent maxTasks across a restart', async () => {
    const before = new BoundedTaskStore(5, { dir });
    for (let i = 1; i <= 8; i++) await before.save(task(`t${i}`), as('alice'));
    const after = new BoundedTaskStore(3, { dir });
    expect((await after.list(noFilter, as('alice'))).tasks.map((t) => t.id)).toEqual(['t8', 't7', 't6']);
    expect(lines()).toHaveLength(3);
  });

  it('rewrites the file once it holds more than two lines per task kept plus slackLines', async () => {
    const store = new BoundedTaskStore(2, { dir, slackLines: 3 });
    // Two tasks kept: the file may reach 2 * 2 + 3 = 7 lines.
    for (let i = 1; i <= 7; i++) await store.save(task(`t${i}`), as('alice'));
    expect(lines()).toHaveLength(7);
    await store.save(task('t8'), as('alice'));
    expect(lines().map((l) => (JSON.parse(l) as { task: { id: string } }).task.id)).toEqual(['t7', 't8']);
    expect(existsSync(join(dir, 'tasks.jsonl.tmp'))).toBe(false);
    await store.save(task('t9'), as('alice'));
    expect(lines()).toHaveLength(3);
    expect((await new BoundedTaskStore(2, { dir }).list(noFilter, as('alice'))).tasks.map((t) => t.id)).toEqual(['t9', 't8']);
  });

  it('fails a task a previous process left submitted or working, and drops a torn last line', async () => {
    const before = new BoundedTaskStore(10, { dir });
    await before.save(task('t1', 'ctx-1', TaskState.TASK_STATE_WORKING), as('alice'));
    await before.save(task('t2', 'ctx-1', TaskState.TASK_STATE_COMPLETED), as('alice'));
    appendFileSync(join(dir, 'tasks.jsonl'), '{"owner":"alice","task":{"id":"t3"');
    const after = new BoundedTaskStore(10, { dir });
    const t1 = await after.load('t1', as('alice'));
    expect(t1?.status?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(t1?.status?.message?.parts[0]?.content).toEqual({ $case: 'text', value: 'INTERNAL: The gateway stopped before this task finished; send the message again.' });
    expect(t1?.metadata?.['io.tollgate/error']).toMatchObject({ code: 'INTERNAL' });
    expect((await after.load('t2', as('alice')))?.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(await after.load('t3', as('alice'))).toBeUndefined();
    expect(readFileSync(join(dir, 'tasks.jsonl'), 'utf8').endsWith('\n')).toBe(true);
    await after.save(task('t4'), as('alice'));
    expect((await new BoundedTaskStore(10, { dir }).list(noFilter, as('alice'))).tasks.map((t) => t.id)).toEqual(['t4', 't2', 't1']);
  });
});

describe('BoundedTaskStore on a full disk', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-tasks-full-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const file = () => join(dir, 'tasks.jsonl');
  const noFilter = { tenant: '', contextId: '', status: TaskState.TASK_STATE_UNSPECIFIED, pageToken: '', statusTimestampAfter: undefined };
  const ids = async (store: BoundedTaskStore, owner = 'alice') => (await store.list(noFilter, as(owner))).tasks.map((t) => [t.id, t.status?.state]);

  it('cuts a write cut short back to the last whole line, so the next version is written whole and read back', async () => {
    const disk = new Disk();
    const warnings: string[] = [];
    const store = new BoundedTaskStore(10, { dir, write: disk.write, warn: (m) => warnings.push(m), retryMs: 60_000 });
    await store.save(task('t1'), as('alice'));
    const size = statSync(file()).size;
    disk.space = 40;
    await store.save(task('t2', 'ctx-1', TaskState.TASK_STATE_WORKING), as('alice'));
    expect(statSync(file()).size).toBe(size);
    expect(readFileSync(file(), 'utf8').endsWith('\n')).toBe(true);
    // Answered from memory meanwhile.
    expect((await store.load('t2', as('alice')))?.status?.state).toBe(TaskState.TASK_STATE_WORKING);
    await store.save(task('t2', 'ctx-1', TaskState.TASK_STATE_COMPLETED), as('alice'));
    expect(warnings).toEqual([expect.stringMatching(/^A2A tasks cannot be written to tasks\.jsonl \(ENOSPC: no space left on device, write\)/)]);
    disk.space = Infinity;
    await store.save(task('t3'), as('alice'));
    expect(warnings.at(-1)).toBe('A2A tasks are written to tasks.jsonl again');
    expect(readFileSync(file(), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { task: { id: string; status: { state: string } } }).map((l) => [l.task.id, l.task.status.state])).toEqual([
      ['t1', 'TASK_STATE_COMPLETED'],
      ['t2', 'TASK_STATE_COMPLETED'],
      ['t3', 'TASK_STATE_COMPLETED'],
    ]);
    expect(await ids(new BoundedTaskStore(10, { dir }))).toEqual([
      ['t3', TaskState.TASK_STATE_COMPLETED],
      ['t2', TaskState.TASK_STATE_COMPLETED],
      ['t1', TaskState.TASK_STATE_COMPLETED],
    ]);
  });

  it('writes a version the disk refused once it takes writes again, without waiting for another save', async () => {
    const disk = new Disk();
    const store = new BoundedTaskStore(10, { dir, write: disk.write, warn: () => undefined, retryMs: 20 });
    disk.space = 10;
    await store.save(task('t1'), as('alice'));
    expect(readFileSync(file(), 'utf8')).toBe('');
    disk.space = Infinity;
    // Tried again every 20 ms: waits for the line, at most 5 s.
    for (const deadline = Date.now() + 5000; !readFileSync(file(), 'utf8') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
    expect(await ids(new BoundedTaskStore(10, { dir }))).toEqual([['t1', TaskState.TASK_STATE_COMPLETED]]);
  });

  it('loses no version when cutting a half line back fails too, and says so', async () => {
    const disk = new Disk();
    // When the disk fills, the descriptor is closed before ENOSPC is thrown: the store's cut-back
    // (ftruncate on that descriptor) then fails for real, with EBADF, and the half line stays.
    let cutFails = true;
    const write = (fd: number, data: Buffer, offset: number, length: number): number => {
      try {
        return disk.write(fd, data, offset, length);
      } catch (err) {
        if (cutFails) closeSync(fd);
        throw err;
      }
    };
    const warnings: string[] = [];
    const store = new BoundedTaskStore(10, { dir, write, warn: (m) => warnings.push(m), retryMs: 60_000 });
    await store.save(task('t1'), as('alice'));
    const size = statSync(file()).size;
    disk.space = 40;
    await store.save(task('t2', 'ctx-1', TaskState.TASK_STATE_WORKING), as('alice'));
    // The half line could not be cut off.
    expect(statSync(file()).size).toBe(size + 40);
    expect(warnings).toEqual([
      expect.stringMatching(/^A2A tasks cannot be written to tasks\.jsonl \(ENOSPC: no space left on device, write\)/),
      expect.stringMatching(/^A2A tasks: a write to tasks\.jsonl was cut short and cutting its 40 bytes off failed too \(EBADF: bad file descriptor, ftruncate\); the next line starts on a line of its own/),
    ]);
    disk.space = Infinity;
    // t2 was not written: it goes to the file with the next save, on a line of its own.
    await store.save(task('t3'), as('alice'));
    // Cut short again, and this time the cut-back works: it must remove only what this write left.
    cutFails = false;
    disk.space = 40;
    await store.save(task('t4'), as('alice'));
    disk.space = Infinity;
    await store.save(task('t5'), as('alice'));
    const text = readFileSync(file(), 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    const idOf = (l: string) => {
      try {
        return (JSON.parse(l) as { task: { id: string } }).task.id;
      } catch {
        return `damaged (${l.length} bytes)`;
      }
    };
    // One damaged line (t2's first attempt, cut short), every version whole on its own line.
    expect(text.trim().split('\n').map(idOf)).toEqual(['t1', 'damaged (40 bytes)', 't2', 't3', 't4', 't5']);
    const restarted: string[] = [];
    expect(await ids(new BoundedTaskStore(10, { dir, warn: (m) => restarted.push(m) }))).toEqual([
      ['t5', TaskState.TASK_STATE_COMPLETED],
      ['t4', TaskState.TASK_STATE_COMPLETED],
      ['t3', TaskState.TASK_STATE_COMPLETED],
      // Left working by the previous process, so failed at start.
      ['t2', TaskState.TASK_STATE_FAILED],
      ['t1', TaskState.TASK_STATE_COMPLETED],
    ]);
    expect(restarted).toEqual(['A2A tasks: tasks.jsonl had 1 damaged line; their cut-off parts were dropped, 0 whole task lines were recovered from them']);
  });

  it('reads back every task around a damaged line, and the whole line glued onto a half line', async () => {
    const line = (id: string, state = 'TASK_STATE_COMPLETED') => JSON.stringify({ owner: 'alice', task: { id, contextId: 'ctx-1', status: { state }, artifacts: [], history: [] } });
    // As a write cut short used to leave it: half of t2's line, with the next append (t3) glued onto it.
    writeFileSync(file(), `${line('t1')}\n${line('t2', 'TASK_STATE_WORKING').slice(0, 30)}${line('t3')}\nnot json at all\n${line('t4')}\n`);
    const warnings: string[] = [];
    const store = new BoundedTaskStore(10, { dir, warn: (m) => warnings.push(m) });
    expect(await ids(store)).toEqual([
      ['t4', TaskState.TASK_STATE_COMPLETED],
      ['t3', TaskState.TASK_STATE_COMPLETED],
      ['t1', TaskState.TASK_STATE_COMPLETED],
    ]);
    expect(warnings).toEqual(['A2A tasks: tasks.jsonl had 2 damaged lines; their cut-off parts were dropped, 1 whole task line was recovered from them']);
    // The file was rewritten clean: a second start reads the same tasks and says nothing.
    const again: string[] = [];
    expect(await ids(new BoundedTaskStore(10, { dir, warn: (m) => again.push(m) }))).toEqual(await ids(store));
    expect(again).toEqual([]);
    expect(readFileSync(file(), 'utf8').trim().split('\n')).toHaveLength(3);
  });
});
