/**
 * The embedded journal's day rollups as the console keeps them between views (JournalRollups):
 * the same rows `tollgate usage report --data-dir` adds up from the same journal, whatever was
 * read before; an ended segment rolled up once and saved beside it for the next start; the current
 * segment read on from where the last view stopped. Written by the real embedded store.
 */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { journalDecisions } from '../../src/admin/journalReader.js';
import { JournalRollups } from '../../src/admin/journalRollups.js';
import { rollupDecisions } from '../../src/admin/report.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { chained } from '../../src/quota/journal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { UsageRollup } from '../../src/quota/rollups.js';
import type { DecisionRecord } from '../../src/quota/store.js';

const DAY1 = Date.parse('2026-11-02T10:00:00Z');
const DAY2 = Date.parse('2026-11-03T09:00:00Z');
const DAY3 = Date.parse('2026-11-04T08:00:00Z');

let work: string;
let dir: string;
let now: number;
let journal: FileJournal;
let store: MemoryQuotaStore;
let n = 0;

function open(): void {
  const opened = FileJournal.open({ dir, now: () => now, fsyncIntervalMs: 1 });
  journal = opened.journal;
  store = new MemoryQuotaStore(() => now, journal);
  store.restore(opened.replay);
  journal.snapshotSource = () => store.snapshot();
}

beforeEach(() => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-rollups-'));
  dir = join(work, 'data');
  now = DAY1;
  open();
});

afterEach(async () => {
  await journal.close();
  rmSync(work, { recursive: true, force: true });
});

/** A call of `user`'s, settled by the store with its decision event. */
async function call(user: string, teams: string[], tokens: number, costUsd: number): Promise<void> {
  const id = `req-${++n}`;
  const event: DecisionRecord = {
    'request.id': id,
    outcome: 'success',
    'user.id': user,
    'user.teams': teams,
    'user.cost_center': 'cc-1',
    'tollgate.model.served': 'demo/medium',
    'tollgate.tier.served': 'standard',
    'gen_ai.usage.input_tokens': tokens,
    'gen_ai.usage.output_tokens': 1,
    'tollgate.cost_usd': costUsd,
  };
  await store.settle(id, [], event);
}

async function refusal(user: string): Promise<void> {
  await store.record({ 'request.id': `req-${++n}`, outcome: 'refused', 'user.id': user, 'user.teams': ['data'], 'error.code': 'POLICY_DENIED' });
}

const byKey = (rows: UsageRollup[]) => [...rows].sort((a, b) => (JSON.stringify([a.day, a.user, a.teams, a.tier]) < JSON.stringify([b.day, b.user, b.teams, b.tier]) ? -1 : 1));

/** What `tollgate usage report --data-dir` adds up from the whole journal, read afresh. */
async function reportRows(): Promise<UsageRollup[]> {
  return byKey((await rollupDecisions(journalDecisions(dir), {})).rollups);
}

const read = (r: JournalRollups) => r.read('2026-11-01', '2026-12-01').then(byKey);

/** Two days in two ended segments, and a third day in the current one. */
async function threeDays(): Promise<void> {
  await call('alice', ['platform'], 10, 0.001);
  await call('alice', ['platform'], 20, 0.002);
  await refusal('bob');
  now = DAY2;
  await call('carol', ['data', 'platform'], 30, 0.003);
  now = DAY3;
  await call('alice', ['platform'], 40, 0.004);
}

describe('the embedded journal rollups kept between views', () => {
  it('adds up the rows usage report reads from the journal, ended segments and current one', async () => {
    await threeDays();
    const rows = await read(new JournalRollups(dir));
    expect(rows).toEqual(await reportRows());
    expect(rows.map((r) => [r.day, r.user, r.teams, r.calls, r.inputTokens, r.costMicroUsd, r.refused])).toEqual([
      ['2026-11-02', 'alice', ['platform'], 2, 30, 3000, {}],
      ['2026-11-02', 'bob', ['data'], 1, 0, 0, { POLICY_DENIED: 1 }],
      ['2026-11-03', 'carol', ['data', 'platform'], 1, 30, 3000, {}],
      ['2026-11-04', 'alice', ['platform'], 1, 40, 4000, {}],
    ]);
  });

  it('keeps the refused calls a pass over every decision finds, through later views, the end of a day and a restart', async () => {
    const all = Date.parse('2026-11-01T00:00:00Z');
    const end = Date.parse('2026-12-01T00:00:00Z');
    /** What the console's pages read before: every decision of the journal, the refused ones in order. */
    const pass = () => [...journalDecisions(dir)].filter((d) => d.event.outcome === 'refused');
    const rollups = new JournalRollups(dir);
    await threeDays();
    await refusal('dave');
    expect((await rollups.refused(all, end))!.map((d) => d.event['user.id'])).toEqual(['bob', 'dave']);
    now = DAY3 + 3_600_000;
    await refusal('erin');
    expect(await rollups.refused(all, end)).toEqual(pass());
    expect((await rollups.refused(DAY3 - 86_400_000 / 2, end))!.map((d) => d.event['user.id'])).toEqual(['dave', 'erin']);
    // After a restart the ended segments' refusals come from their saved rollups.
    expect(await new JournalRollups(dir).refused(all, end)).toEqual(pass());
  });

  it('finds any request as a pass over every decision finds it, in ended segments, the current one and after a restart', async () => {
    const rollups = new JournalRollups(dir);
    await threeDays();
    const firstOf = (id: string) => [...journalDecisions(dir)].find((d) => d.event['request.id'] === id);
    expect(await rollups.find('req-1')).toEqual(firstOf('req-1'));
    expect(await rollups.find('req-4')).toEqual(firstOf('req-4'));
    await call('dave', ['data'], 5, 0.0005);
    expect((await rollups.find(`req-${n}`))?.event['user.id']).toBe('dave');
    expect(await rollups.find('no-such-request')).toBeUndefined();
    expect(await new JournalRollups(dir).find('req-3')).toEqual(firstOf('req-3'));
  });

  it('reads on from where the last view stopped: later calls, across the end of a day, each counted once', async () => {
    const rollups = new JournalRollups(dir);
    await call('alice', ['platform'], 10, 0.001);
    expect((await read(rollups)).map((r) => r.calls)).toEqual([1]);
    await call('alice', ['platform'], 20, 0.002);
    now = DAY2;
    await call('carol', ['data'], 30, 0.003);
    const rows = await read(rollups);
    expect(rows.map((r) => [r.day, r.user, r.calls, r.inputTokens])).toEqual([
      ['2026-11-02', 'alice', 2, 30],
      ['2026-11-03', 'carol', 1, 30],
    ]);
    expect(rows).toEqual(await reportRows());
    expect(await read(rollups)).toEqual(rows);
  });

  it('counts a line still being written only once it is whole', async () => {
    const rollups = new JournalRollups(dir);
    await call('alice', ['platform'], 10, 0.001);
    await read(rollups);
    const event = { 'request.id': 'req-late', outcome: 'success', 'user.id': 'dave', 'user.teams': ['data'], 'gen_ai.usage.input_tokens': 5 };
    const line = `${JSON.stringify(chained(journal.head().seq + 1, journal.head().link, { kind: 'refuse', id: 'req-late', at: now, event }))}\n`;
    appendFileSync(join(dir, 'journal.jsonl'), line.slice(0, 40));
    expect((await read(rollups)).map((r) => r.user)).toEqual(['alice']);
    appendFileSync(join(dir, 'journal.jsonl'), line.slice(40));
    expect((await read(rollups)).map((r) => [r.user, r.calls, r.inputTokens])).toEqual([
      ['alice', 1, 10],
      ['dave', 1, 5],
    ]);
  });

  it('saves an ended segment rollup beside it, which the next start reads instead of the segment', async () => {
    await threeDays();
    await read(new JournalRollups(dir));
    const saved = join(dir, 'rollups', 'journal-000000000001.json');
    expect(existsSync(saved)).toBe(true);
    // Marked so that reading it shows: a start that rolled the segment up again would show 2 calls.
    const s = JSON.parse(readFileSync(saved, 'utf8')) as { rows: UsageRollup[] };
    for (const r of s.rows) if (r.user === 'alice') r.calls = 99;
    writeFileSync(saved, JSON.stringify(s));
    const alice1 = async () => (await read(new JournalRollups(dir))).find((r) => r.user === 'alice' && r.day === '2026-11-02')?.calls;
    expect(await alice1()).toBe(99);
    // A segment that changed since (here, a line added) is rolled up again.
    const segment = join(dir, 'journal-000000000001.jsonl');
    const size = statSync(segment).size;
    appendFileSync(segment, readFileSync(segment, 'utf8').split('\n')[1]! + '\n');
    expect(statSync(segment).size).toBeGreaterThan(size);
    expect(await alice1()).toBe(2);
  });

  it('forgets a segment archived away, and deletes its saved rollup', async () => {
    await threeDays();
    const rollups = new JournalRollups(dir);
    expect((await read(rollups)).map((r) => r.day)).toContain('2026-11-02');
    renameSync(join(dir, 'journal-000000000001.jsonl'), join(work, 'archived.jsonl'));
    expect((await read(rollups)).map((r) => r.day)).toEqual(['2026-11-03', '2026-11-04']);
    expect(existsSync(join(dir, 'rollups', 'journal-000000000001.json'))).toBe(false);
    expect(await read(rollups)).toEqual(await reportRows());
  });

  it('refuses a journal with a line that is not an entry, as usage report does', async () => {
    await threeDays();
    const segment = join(dir, 'journal-000000000001.jsonl');
    const lines = readFileSync(segment, 'utf8').split('\n');
    lines.splice(1, 0, 'not json');
    writeFileSync(segment, lines.join('\n'));
    await expect(read(new JournalRollups(dir))).rejects.toThrow(/^the journal in .* has a line that is not an entry \(journal-000000000001\.jsonl line 2: the line is not JSON\)/);
    await expect(reportRows()).rejects.toThrow(/has a line that is not an entry \(journal-000000000001\.jsonl line 2: the line is not JSON\)/);
  });
});
