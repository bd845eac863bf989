/**
 * One line of `tasks.jsonl` (taskStore.ts): a task and its owner, as JSON in the A2A JSON form,
 * owner first. A line a start cannot read is damaged; the whole line in it, if any, is recovered:
 * before writes were cut back, a write cut short left a half line that the next append was glued
 * onto, so the damaged line ended with a whole one.
 */
import { Task } from '@a2a-js/sdk';

/** A task and the caller it belongs to. */
export type Entry = { owner: string; task: Task };

/** How each line starts (`taskLine` writes the owner first): where a line glued onto a half line begins. */
const LINE_START = '{"owner":';

/** The entry as one line, newline included. */
export function taskLine(entry: Entry): string {
  return `${JSON.stringify({ owner: entry.owner, task: Task.toJSON(entry.task) })}\n`;
}

/** One line of the file as an entry, or undefined if it is not one. */
export function parseTaskLine(raw: string): Entry | undefined {
  try {
    const { owner, task } = JSON.parse(raw) as { owner: unknown; task: unknown };
    if (typeof owner !== 'string' || typeof task !== 'object' || task === null) return undefined;
    return { owner, task: Task.fromJSON(task as Parameters<typeof Task.fromJSON>[0]) };
  } catch {
    return undefined;
  }
}

/** The whole line in a damaged one: a line glued onto the half line a write cut short left. */
export function salvageTaskLine(raw: string): Entry | undefined {
  for (let at = raw.indexOf(LINE_START, 1); at > 0; at = raw.indexOf(LINE_START, at + 1)) {
    const entry = parseTaskLine(raw.slice(at));
    if (entry) return entry;
  }
  return undefined;
}
