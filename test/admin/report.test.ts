/**
 * `tollgate usage report`, `usage refusals` and `usage export` reading the journal a real gateway
 * wrote (the embedded store on a data directory), against the ledger's own charges: the report's
 * total counts each call once and equals what the ledger charged a budget every call pays into;
 * `--by team` counts a call of a user in two teams under each team, and its rows add up to what
 * the ledger charged the team budget; refused calls are in the refusals report and in no cost.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { runUsageCommand } from '../../src/admin/cli.js';
import { journalDecisions } from '../../src/admin/journalReader.js';
import { buildReport, rollupDecisions, type UsageReport } from '../../src/admin/report.js';
import { recoveryEvent } from '../../src/quota/journal.js';
import { applicableLines } from '../../src/policy/budgets.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const DAY1 = Date.parse('2026-11-25T10:00:00.000Z'); // a Wednesday
const DAY2 = Date.parse('2026-11-26T09:00:00.000Z');
const DAY3 = Date.parse('2026-12-01T08:00:00.000Z'); // the next Tuesday, and the next month

const KEYS = { alice: 'key-alice', bob: 'key-bob', carol: 'key-carol', dave: 'key-dave' } as const;

/** dave is in two teams; his own small budget runs out on the second day. */
const POLICY = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
  economy: [demo/small]
defaultTier: standard
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform], costCenter: cc-1, groups: [employees] }
  - { id: k-bob, sha256: ${sha(KEYS.bob)}, user: bob, teams: [platform], costCenter: cc-1, groups: [contractors] }
  - { id: k-carol, sha256: ${sha(KEYS.carol)}, user: carol, teams: [data], groups: [employees] }
  - { id: k-dave, sha256: ${sha(KEYS.dave)}, user: dave, teams: [platform, data], costCenter: cc-2, groups: [employees] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 1000000 }
  - id: team-usd
    scope: team
    window: { calendar: month, timezone: UTC }
    limit: { usd: 10 }
  - id: all-usd
    scope: global
    window: { calendar: month, timezone: UTC }
    limit: { usd: 100 }
  - id: dave-cap
    scope: user
    when: "principal.user == 'dave'"
    window: { calendar: month, timezone: UTC }
    limit: { tokens: 30 }
rules:
  - id: contractors-no-premium
    when: "'contractors' in principal.groups && request.tier == 'premium'"
    effect: deny
    message: Contractors may use standard and economy models only.
`;

let gw: TestGateway;
let dir: string;
let work: string;
let eventsFile: string;
let now = DAY1;
/** The commands read the journal through the policy that wrote it. */
let policyEnv: NodeJS.ProcessEnv = {};
const clock = () => now;

/** The embedded store on a journal in `dir`, as `tollgate serve` builds it. */
function journaledStore(at: string): { store: MemoryQuotaStore; journal: FileJournal } {
  const { journal, replay } = FileJournal.open({ dir: at, now: clock });
  const store = new MemoryQuotaStore(clock, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  return { store, journal };
}

const report = async (...args: string[]) => runUsageCommand(['report', '--data-dir', dir, ...args], policyEnv);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-report-'));
  dir = join(work, 'data');
  eventsFile = join(work, 'events.jsonl');
  writeFileSync(join(work, 'policy.yaml'), POLICY);
  policyEnv = { TOLLGATE_POLICY: join(work, 'policy.yaml') };
  gw = await startTestGateway(POLICY, { now: clock, store: journaledStore(dir).store });
  const clients: Record<string, Client> = {};
  for (const who of ['alice', 'bob', 'carol', 'dave'] as const) clients[who] = await connectHttp(gw.mcpUrl, KEYS[who]);
  const call = async (who: string, args: Record<string, unknown>) => {
    await clients[who]!.callTool({ name: 'complete', arguments: args });
    await gw.idle();
  };
  const estimate = async (who: string, args: Record<string, unknown>) => {
    await clients[who]!.callTool({ name: 'estimate', arguments: args });
    await gw.idle();
  };
  // Dry runs, journaled and counted nowhere: a call that would be served, one a rule would refuse, one with bad arguments.
  await estimate('alice', { prompt: 'hello' });
  await estimate('bob', { prompt: 'hi', tier: 'premium' });
  await estimate('bob', { prompt: 'hi', max_tokens: 0 });
  await call('alice', { prompt: 'hello' });
  await call('alice', { prompt: 'hello' });
  await call('alice', { prompt: 'hello there', tier: 'premium' });
  await call('bob', { prompt: 'hi', tier: 'premium' }); // refused: contractors-no-premium
  await call('bob', { prompt: 'question?' });
  await call('carol', { prompt: 'hi', tier: 'economy' });
  await call('dave', { prompt: 'hello' });
  now = DAY2;
  await call('alice', { prompt: 'hello' });
  await call('dave', { prompt: 'hi again' });
  await call('dave', { prompt: 'and again' }); // refused: dave-cap is spent
  await estimate('dave', { prompt: 'and again' }); // would be refused: dave-cap is spent
  now = DAY3;
  await call('carol', { prompt: 'hi again' });
  await call('bob', { prompt: 'hi', tier: 'premium' }); // refused again
  // A caller whose key is unknown is refused at the edge and fingerprinted.
  await expect(connectHttp(gw.mcpUrl, 'key-mallory')).rejects.toThrow();
  for (const c of Object.values(clients)) await c.close();
  await gw.idle();
  writeFileSync(eventsFile, gw.events.map((e) => `${JSON.stringify(e)}\n`).join(''));
  await gw.close();
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** What the ledger charged each budget, summed from the journal's settle and recover entries. */
function ledgerCharges(at: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of journalDecisions(at)) for (const c of d.charges) out[c.budgetId] = (out[c.budgetId] ?? 0) + c.amount;
  return out;
}

describe('usage report from the embedded journal', () => {
  it('holds each estimate as a dry run that changes no counter, and verifies', () => {
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true, snapshots: 2 });
    const dry = [...journalDecisions(dir)].filter((d) => d.event['tollgate.dry_run'] !== undefined);
    expect(dry.map((d) => [d.kind, d.event['user.id'], d.event.effect, d.event.outcome, d.event['error.code'] ?? d.event['tollgate.estimate']?.code, d.charges.length])).toEqual([
      ['refuse', 'alice', 'allow', 'success', undefined, 0],
      ['refuse', 'bob', 'deny', 'success', 'POLICY_DENIED', 0],
      ['refuse', 'bob', 'error', 'failed', 'INVALID_REQUEST', 0],
      ['refuse', 'dave', 'deny', 'success', 'BUDGET_EXHAUSTED', 0],
    ]);
  });

  it('reads a journal that verifies, holding one event per call', () => {
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true, snapshots: 2 });
    expect([...journalDecisions(dir)].filter((d) => d.event['tollgate.dry_run'] === undefined).map((d) => `${d.kind} ${d.event['user.id'] ?? d.event['auth.credential.kind']} ${d.event.outcome} ${new Date(d.at).toISOString().slice(0, 10)}`)).toEqual([
      'settle alice success 2026-11-25',
      'settle alice success 2026-11-25',
      'settle alice success 2026-11-25',
      'refuse bob refused 2026-11-25',
      'settle bob success 2026-11-25',
      'settle carol success 2026-11-25',
      'settle dave success 2026-11-25',
      'settle alice success 2026-11-26',
      'settle dave success 2026-11-26',
      'refuse dave refused 2026-11-26',
      'settle carol success 2026-12-01',
      'refuse bob refused 2026-12-01',
      'refuse api_key refused 2026-12-01',
    ]);
  });

  it('prints one row per day and user', async () => {
    // alice's standard calls are 2 + 4 tokens at $3/$15 per million (66 micro-dollars), her premium one 3 + 5 at $15/$75.
    expect(await report('--by', 'user', '--window', 'day')).toBe(
      [
        'day         user    calls  tokens in  tokens out  cost USD  refused                                                  failed  recovered',
        '2026-11-25  alice       3          7          13  0.000552  0                                                             0          0',
        '2026-11-25  bob         2          3           4  0.000069  1 (POLICY_DENIED 1)                                           0          0',
        '2026-11-25  carol       1          1           4  0.000021  0                                                             0          0',
        '2026-11-25  dave        1          2           4  0.000066  0                                                             0          0',
        '2026-11-26  alice       1          2           4  0.000066  0                                                             0          0',
        '2026-11-26  dave        2          2           5  0.000081  1 (BUDGET_EXHAUSTED 1)                                        0          0',
        '2026-12-01  (none)      1          0           0  0.000000  1 (AUTH_INVALID 1)                                            0          0',
        '2026-12-01  bob         1          0           0  0.000000  1 (POLICY_DENIED 1)                                           0          0',
        '2026-12-01  carol       1          2           5  0.000081  0                                                             0          0',
        'total                  13         19          39  0.000936  4 (AUTH_INVALID 1, BUDGET_EXHAUSTED 1, POLICY_DENIED 2)       0          0',
        'ledger charges: all-usd 0.000936 USD; dave-cap 13 tokens; team-usd 0.001083 USD; user-weekly 58 tokens',
        '',
      ].join('\n'),
    );
  });

  it('totals each call once, equal to what the ledger charged the budgets every call pays into', async () => {
    const r = JSON.parse(await report('--by', 'team', '--window', 'month', '--format', 'json')) as UsageReport;
    const charged = ledgerCharges(dir);
    expect(r.total.inputTokens + r.total.outputTokens).toBe(charged['user-weekly']);
    expect(r.total.costMicroUsd).toBe(charged['all-usd']);
    // A call by dave counts under platform and under data: the team rows add up to the team budget's charges.
    expect(r.rows.reduce((n, x) => n + x.costMicroUsd, 0)).toBe(charged['team-usd']);
    expect(r.rows.reduce((n, x) => n + x.costMicroUsd, 0)).toBeGreaterThan(r.total.costMicroUsd);
    expect(r.notes).toEqual(['A call by a user in several teams counts under each of their teams, so the team rows can add up to more than the total; the total counts each call once.']);
    expect(r.total).toEqual({ calls: 13, inputTokens: 19, outputTokens: 39, costMicroUsd: 936, recovered: 0, refused: { AUTH_INVALID: 1, BUDGET_EXHAUSTED: 1, POLICY_DENIED: 2 }, failed: {} });
    expect(r.charges).toEqual([
      { budgetId: 'all-usd', unit: 'micro_usd', amount: 936 },
      { budgetId: 'dave-cap', unit: 'tokens', amount: 13 },
      { budgetId: 'team-usd', unit: 'micro_usd', amount: 1083 },
      { budgetId: 'user-weekly', unit: 'tokens', amount: 58 },
    ]);
  });

  it('prints a team report by week as a table, with the footnote and the ledger beside it', async () => {
    expect(await report('--by', 'team', '--window', 'week')).toBe(
      [
        'week of     team      calls  tokens in  tokens out  cost USD  refused                                                  failed  recovered',
        '2026-11-23  data          4          5          13  0.000168  1 (BUDGET_EXHAUSTED 1)                                        0          0',
        '2026-11-23  platform      9         16          30  0.000834  2 (BUDGET_EXHAUSTED 1, POLICY_DENIED 1)                       0          0',
        '2026-11-30  (none)        1          0           0  0.000000  1 (AUTH_INVALID 1)                                            0          0',
        '2026-11-30  data          1          2           5  0.000081  0                                                             0          0',
        '2026-11-30  platform      1          0           0  0.000000  1 (POLICY_DENIED 1)                                           0          0',
        'total                    13         19          39  0.000936  4 (AUTH_INVALID 1, BUDGET_EXHAUSTED 1, POLICY_DENIED 2)       0          0',
        'ledger charges: all-usd 0.000936 USD; dave-cap 13 tokens; team-usd 0.001083 USD; user-weekly 58 tokens',
        '* A call by a user in several teams counts under each of their teams, so the team rows can add up to more than the total; the total counts each call once.',
        '',
      ].join('\n'),
    );
  });

  it('writes CSV by model per month, within --from and --to', async () => {
    // A refusal was served by no model: its row is (none).
    expect(await report('--by', 'model', '--window', 'month', '--format', 'csv', '--from', '2026-11-26T00:00:00Z', '--to', '2026-12-31T00:00:00Z')).toBe(
      [
        'period_start,period_end,model,calls,input_tokens,output_tokens,cost_usd,refused,refused_AUTH_INVALID,refused_BUDGET_EXHAUSTED,refused_POLICY_DENIED,failed,recovered',
        '2026-11-01,2026-12-01,(none),1,0,0,0.000000,1,0,1,0,0,0',
        '2026-11-01,2026-12-01,demo/medium,2,4,9,0.000147,0,0,0,0,0,0',
        '2026-12-01,2027-01-01,(none),2,0,0,0.000000,2,1,0,1,0,0',
        '2026-12-01,2027-01-01,demo/medium,1,2,5,0.000081,0,0,0,0,0,0',
        '',
      ].join('\n'),
    );
  });

  it('reads the same report from the event log as from the journal', async () => {
    for (const by of ['team', 'cost-center', 'user', 'model', 'tier']) {
      const fromEvents = await runUsageCommand(['report', '--events', eventsFile, '--by', by, '--window', 'day', '--format', 'json'], policyEnv);
      expect(fromEvents).toBe(await report('--by', by, '--window', 'day', '--format', 'json'));
    }
  });

  it('counts a call recovery charged at its reservation, whose tokens are unknown, apart', async () => {
    const copy = join(work, 'recovered');
    cpSync(dir, copy, { recursive: true });
    now = DAY3 + 60_000;
    // A call of carol's is at the provider when the process dies...
    const first = journaledStore(copy);
    const g = gw.runtime.gateway;
    const lines = applicableLines(g.policy.budgets, keyPrincipal(g, KEYS.carol), now, 'tollgate:');
    await first.store.reserve('lost', lines.map((l) => ({ ...l.line, amount: l.budget.unit === 'usd' ? 500 : 40 })), 60_000, {
      user: 'carol', teams: ['data'], tier: 'standard', model: 'demo/medium', transport: 'http', units: { 'user-weekly': 'tokens', 'team-usd': 'micro_usd', 'all-usd': 'micro_usd' },
    });
    await first.store.dispatch('lost');
    // ...and the next start charges it at its reservation.
    const second = journaledStore(copy);
    second.store.recover((id, r) => recoveryEvent(id, r, now, 'stopped'));
    await second.journal.close();
    expect(verifyJournalDir(copy).ok).toBe(true);
    const { rollups, charges } = await rollupDecisions(journalDecisions(copy), {});
    const r = buildReport(rollups, 'user', 'month');
    expect(r.rows.find((x) => x.key === 'carol' && x.periodStart === '2026-12-01')).toMatchObject({ calls: 2, recovered: 1 });
    const byBudget = Object.fromEntries(charges.map((c) => [c.budgetId, c.amount]));
    expect(r.total.inputTokens + r.total.outputTokens + 40).toBe(byBudget['user-weekly']);
    expect(r.total.costMicroUsd + 500).toBe(byBudget['all-usd']);
  });
});

describe('usage refusals', () => {
  it('lists who was refused, by which rule or budget, with which code', async () => {
    expect(await runUsageCommand(['refusals', '--data-dir', dir, '--from', '2026-11-01T00:00:00Z', '--to', '2026-12-31T00:00:00Z'], policyEnv)).toBe(
      [
        'user                                 rule                    budget    code              refusals  last',
        'bob                                  contractors-no-premium  -         POLICY_DENIED            2  2026-12-01T08:00:00.000Z',
        '(unidentified api_key 929bf1320a1c)  -                       -         AUTH_INVALID             1  2026-12-01T08:00:00.000Z',
        'dave                                 -                       dave-cap  BUDGET_EXHAUSTED         1  2026-11-26T09:00:00.000Z',
        '4 refused calls',
        '',
      ].join('\n'),
    );
  });

  it('counts by team, a user in two teams under each', async () => {
    expect(await runUsageCommand(['refusals', '--data-dir', dir, '--from', '2026-11-01T00:00:00Z', '--to', '2026-12-31T00:00:00Z', '--by', 'team', '--format', 'csv'], policyEnv)).toBe(
      ['team,refusals,last', 'platform,3,2026-12-01T08:00:00.000Z', '(none),1,2026-12-01T08:00:00.000Z', 'data,1,2026-11-26T09:00:00.000Z', ''].join('\n'),
    );
  });

  it('counts by code within the window', async () => {
    const out = await runUsageCommand(['refusals', '--events', eventsFile, '--from', '2026-11-25T00:00:00Z', '--to', '2026-11-26T00:00:00Z', '--by', 'code', '--format', 'json'], policyEnv);
    expect(JSON.parse(out)).toEqual({ by: ['code'], rows: [{ keys: { code: 'POLICY_DENIED' }, refusals: 1, last: '2026-11-25T10:00:00.000Z' }], total: 1, notes: [] });
  });
});

describe('usage export from the journal', () => {
  it('exports the same rows from the journal as from the event log, refused calls left out', async () => {
    const window = ['--from', '2026-11-01T00:00:00Z', '--to', '2026-12-31T00:00:00Z'];
    const fromJournal = await runUsageCommand(['export', '--data-dir', dir, ...window, '--format', 'focus'], policyEnv);
    expect(fromJournal).toBe(await runUsageCommand(['export', '--events', eventsFile, ...window, '--format', 'focus'], policyEnv));
    expect(await runUsageCommand(['export', '--data-dir', dir, ...window], policyEnv)).toBe(
      [
        'period_start,period_end,user,teams,cost_center,provider,model,tier,requests,input_tokens,output_tokens,cached_input_tokens,cost_usd',
        '2026-11-25T00:00:00.000Z,2026-11-26T00:00:00.000Z,alice,platform,cc-1,demo,demo/large,premium,1,3,5,0,0.000420',
        '2026-11-25T00:00:00.000Z,2026-11-26T00:00:00.000Z,alice,platform,cc-1,demo,demo/medium,standard,2,4,8,0,0.000132',
        '2026-11-25T00:00:00.000Z,2026-11-26T00:00:00.000Z,bob,platform,cc-1,demo,demo/medium,standard,1,3,4,0,0.000069',
        '2026-11-25T00:00:00.000Z,2026-11-26T00:00:00.000Z,carol,data,,demo,demo/small,economy,1,1,4,0,0.000021',
        '2026-11-25T00:00:00.000Z,2026-11-26T00:00:00.000Z,dave,platform;data,cc-2,demo,demo/medium,standard,1,2,4,0,0.000066',
        '2026-11-26T00:00:00.000Z,2026-11-27T00:00:00.000Z,alice,platform,cc-1,demo,demo/medium,standard,1,2,4,0,0.000066',
        '2026-11-26T00:00:00.000Z,2026-11-27T00:00:00.000Z,dave,platform;data,cc-2,demo,demo/medium,standard,1,2,5,0,0.000081',
        '2026-12-01T00:00:00.000Z,2026-12-02T00:00:00.000Z,carol,data,,demo,demo/medium,standard,1,2,5,0,0.000081',
        '',
      ].join('\n'),
    );
  });

  it('takes one source only', async () => {
    await expect(runUsageCommand(['export', '--data-dir', dir, '--events', eventsFile, '--from', '2026-11-01T00:00:00Z', '--to', '2026-12-31T00:00:00Z'], policyEnv)).rejects.toThrow(
      'read from one source: --data-dir <dir> (the embedded journal), --redis <url> (the Redis journal) or --events <file>... (event logs)',
    );
  });
});
