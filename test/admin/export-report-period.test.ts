/**
 * The usage export (CSV and FOCUS) and the usage report put a call in the same period: the one it
 * was committed in (the journal entry's time; from an event file, its start plus its latency), as
 * the ledger and the Redis rollups count it. A call started before an instant and committed after
 * it belongs after it, in both.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';

let work: string;
let events: string;
// Started 2 s before midnight, answered 3 s later: committed on the 26th.
const START = '2026-11-25T23:59:58.000Z';
const MIDNIGHT = '2026-11-26T00:00:00Z';

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-export-period-'));
  events = join(work, 'events.jsonl');
  const call = {
    event: 'tollgate.decision',
    'request.id': 'r1',
    time: START,
    outcome: 'success',
    'user.id': 'alice',
    'tollgate.model.served': 'demo/medium',
    'tollgate.tier.served': 'standard',
    'gen_ai.provider.name': 'demo',
    'gen_ai.usage.input_tokens': 3,
    'gen_ai.usage.output_tokens': 4,
    'tollgate.cost_usd': 0.0001,
    'tollgate.latency_ms': 3000,
    'tollgate.charged': [{ budget: 'b', subject: 'alice', amount: 7, unit: 'tokens' }],
  };
  writeFileSync(events, `${JSON.stringify(call)}\n`);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const rowsOf = (csv: string) => csv.trim().split('\n').slice(1);
const reportCalls = async (from: string, to: string) => {
  const report = JSON.parse(await usageCommand('report', { from, to, events: [events], json: true }, [], {})) as { total: { calls: number } };
  return report.total.calls;
};

describe('usage export and usage report over the same range', () => {
  it('count a call started before midnight and committed after it on the day it was committed, both', async () => {
    expect(await reportCalls('2026-11-25', MIDNIGHT)).toBe(0);
    expect(rowsOf(await usageCommand('export', { from: '2026-11-25', to: MIDNIGHT, events: [events] }, [], {}))).toEqual([]);
    expect(rowsOf(await usageCommand('export', { from: '2026-11-25', to: MIDNIGHT, events: [events], format: 'focus' }, [], {}))).toEqual([]);

    expect(await reportCalls(MIDNIGHT, '2026-11-27')).toBe(1);
    const csv = rowsOf(await usageCommand('export', { from: MIDNIGHT, to: '2026-11-27', events: [events] }, [], {}));
    expect(csv).toHaveLength(1);
    expect(csv[0]).toMatch(/^2026-11-26T00:00:00\.000Z,/);
    expect(rowsOf(await usageCommand('export', { from: MIDNIGHT, to: '2026-11-27', events: [events], format: 'focus' }, [], {}))).toHaveLength(1);
  });
});
