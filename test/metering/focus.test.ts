/**
 * `tollgate usage export` over the decision events of known calls: the FOCUS rows reconcile with
 * the events to the micro-dollar and with the ledger to the token.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runUsageCommand } from '../../src/admin/cli.js';
import { aggregateUsage, FOCUS_COLUMNS, parseEventLines, toFocusRows, type FocusRow } from '../../src/metering/focus.js';
import { pinoSink } from '../../src/metering/sink.js';
import type { BudgetView } from '../../src/call/budget.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

const DAY1 = Date.parse('2026-11-25T10:00:00.000Z');
const DAY2 = Date.parse('2026-11-26T09:00:00.000Z');
const micro = (usd: string) => Math.round(Number(usd) * 1e6);

describe('usage export (CSV and FOCUS 1.2)', () => {
  let gw: TestGateway;
  let dir: string;
  let file: string;
  let rows: FocusRow[];
  const budgets: Record<string, BudgetView[]> = {};
  let now = DAY1;

  beforeAll(async () => {
    gw = await startTestGateway(
      basicPolicy({
        userTokens: 1_000_000,
        extraBudgets: `
  - id: team-usd
    scope: team
    window: { calendar: month, timezone: UTC }
    limit: { usd: 10 }
  - id: cc-tokens
    scope: costCenter
    window: { calendar: month, timezone: UTC }
    limit: { tokens: 1000000 }`,
      }),
      { now: () => now },
    );
    const clients: Record<string, Client> = {};
    for (const who of ['alice', 'bob', 'carol'] as const) clients[who] = await connectHttp(gw.mcpUrl, KEYS[who]);
    const call = (who: string, args: Record<string, unknown>) => clients[who]!.callTool({ name: 'complete', arguments: args });
    await call('alice', { prompt: 'hello' });
    await call('alice', { prompt: 'hello' });
    await call('alice', { prompt: 'hello there', tier: 'premium' });
    await call('carol', { prompt: 'hi', tier: 'economy' });
    await call('bob', { prompt: 'hi', tier: 'premium' }); // denied: no usage
    await call('bob', { prompt: 'question?' });
    now = DAY2;
    await call('alice', { prompt: 'hello' });
    await call('carol', { prompt: 'hi again' });
    for (const c of Object.values(clients)) await c.close();
    for (const who of ['alice', 'bob', 'carol'] as const) budgets[who] = await gw.runtime.gateway.myBudget(keyPrincipal(gw.runtime.gateway, KEYS[who]));

    dir = mkdtempSync(join(tmpdir(), 'tollgate-focus-'));
    file = join(dir, 'events.jsonl');
    // The event log's own shape: pino's level field, another log line, a trailing newline.
    const lines = gw.events.map((e) => JSON.stringify({ level: 30, ...e }));
    writeFileSync(file, [JSON.stringify({ level: 30, name: 'tollgate', msg: 'tollgate ready' }), ...lines, ''].join('\n'));
    rows = toFocusRows(aggregateUsage(parseEventLines(gw.events.map((e) => JSON.stringify(e)).join('\n')).events, { from: DAY1 - 86_400_000, to: DAY2 + 86_400_000 }));
  });
  afterAll(async () => {
    await gw.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes one row per day, model and principal, with FOCUS columns and values', () => {
    expect(rows.map((r) => [r.ChargePeriodStart, (JSON.parse(r.Tags as string) as { user: string }).user, r.SkuId, r.x_RequestCount])).toEqual([
      ['2026-11-25T00:00:00.000Z', 'alice', 'demo/large', 1],
      ['2026-11-25T00:00:00.000Z', 'alice', 'demo/medium', 2],
      ['2026-11-25T00:00:00.000Z', 'bob', 'demo/medium', 1],
      ['2026-11-25T00:00:00.000Z', 'carol', 'demo/small', 1],
      ['2026-11-26T00:00:00.000Z', 'alice', 'demo/medium', 1],
      ['2026-11-26T00:00:00.000Z', 'carol', 'demo/medium', 1],
    ]);
    // alice's two standard calls on the first day: 2 x (2 in + 4 out) at $3/$15 per million.
    expect(rows[1]).toEqual({
      BilledCost: '0.000132',
      BillingAccountId: 'tollgate',
      BillingAccountName: 'tollgate',
      BillingCurrency: 'USD',
      BillingPeriodStart: '2026-11-01T00:00:00.000Z',
      BillingPeriodEnd: '2026-12-01T00:00:00.000Z',
      ChargeCategory: 'Usage',
      ChargeClass: null,
      ChargeDescription: '12 tokens on demo/medium (2 requests) for alice',
      ChargeFrequency: 'Usage-Based',
      ChargePeriodStart: '2026-11-25T00:00:00.000Z',
      ChargePeriodEnd: '2026-11-26T00:00:00.000Z',
      ConsumedQuantity: 12,
      ConsumedUnit: 'Tokens',
      ContractedCost: '0.000132',
      EffectiveCost: '0.000132',
      InvoiceIssuerName: 'demo',
      ListCost: '0.000132',
      ListUnitPrice: null,
      PricingCategory: 'Standard',
      PricingQuantity: 12,
      PricingUnit: 'Tokens',
      ProviderName: 'tollgate',
      PublisherName: 'demo',
      ServiceCategory: 'AI and Machine Learning',
      ServiceSubcategory: 'Generative AI',
      ServiceName: 'demo models via tollgate',
      SkuId: 'demo/medium',
      Tags: '{"user":"alice","team":"platform","costCenter":"cc-1"}',
      x_InputTokens: 4,
      x_OutputTokens: 8,
      x_CachedInputTokens: 0,
      x_RequestCount: 2,
      x_Tier: 'standard',
    });
    expect(Object.keys(rows[0]!)).toEqual([...FOCUS_COLUMNS]);
  });

  it('totals the same cost as the events, to the micro-dollar', () => {
    const fromEvents = gw.events.reduce((n, e) => n + Math.round(e['tollgate.cost_usd'] * 1e6), 0);
    expect(rows.reduce((n, r) => n + micro(r.BilledCost as string), 0)).toBe(fromEvents);
    expect(fromEvents).toBe(132 + 420 + 21 + 69 + 66 + 81); // the six served calls, in micro-dollars
  });

  it('gives a row of an export window that cuts a day only the part of the day inside the window, so adjacent exports do not overlap', () => {
    const events = parseEventLines(gw.events.map((e) => JSON.stringify(e)).join('\n')).events;
    const HOUR = 3_600_000;
    const inside = toFocusRows(aggregateUsage(events, { from: DAY1 - HOUR, to: DAY1 + HOUR }));
    expect(inside.length).toBeGreaterThan(0);
    for (const r of inside) expect([r.ChargePeriodStart, r.ChargePeriodEnd]).toEqual([new Date(DAY1 - HOUR).toISOString(), new Date(DAY1 + HOUR).toISOString()]);
    // The day's export still gives the whole day, with the same charges.
    const day = DAY1 - (DAY1 % 86_400_000);
    const whole = toFocusRows(aggregateUsage(events, { from: day, to: day + 86_400_000 }));
    expect(whole.every((r) => r.ChargePeriodStart === new Date(day).toISOString() && r.ChargePeriodEnd === new Date(day + 86_400_000).toISOString())).toBe(true);
    const sum = (rows: typeof whole) => rows.reduce((n, r) => n + micro(r.BilledCost as string), 0);
    expect(sum(inside)).toBe(sum(whole));
  });

  it('totals the tokens and dollars the ledger charged each budget', () => {
    const tagOf = (r: FocusRow) => JSON.parse(r.Tags as string) as { user: string; team: string; costCenter: string };
    const tokens = (pick: (r: FocusRow) => boolean) => rows.filter(pick).reduce((n, r) => n + (r.x_InputTokens as number) + (r.x_OutputTokens as number), 0);
    const used = (who: string, id: string, subject: string) => budgets[who]!.find((b) => b.id === id && b.subject === subject)!.used;
    for (const who of ['alice', 'bob', 'carol']) expect(tokens((r) => tagOf(r).user === who)).toBe(used(who, 'user-weekly', who));
    expect(tokens((r) => tagOf(r).costCenter === 'cc-1')).toBe(used('alice', 'cc-tokens', 'cc-1'));
    const platformMicro = rows.filter((r) => tagOf(r).team.split(',').includes('platform')).reduce((n, r) => n + micro(r.BilledCost as string), 0);
    expect(platformMicro).toBe(Math.round(used('alice', 'team-usd', 'platform') * 1e6));
    const dataMicro = rows.filter((r) => tagOf(r).team === 'data').reduce((n, r) => n + micro(r.BilledCost as string), 0);
    expect(dataMicro).toBe(Math.round(used('carol', 'team-usd', 'data') * 1e6));
  });

  it('exports CSV for one user from the event log, counting an event repeated across files once', async () => {
    const out = await runUsageCommand(['export', '--events', file, '--events', file, '--from', '2026-11-25T00:00:00Z', '--to', '2026-11-27T00:00:00Z', '--user', 'carol'], {});
    expect(out).toBe(
      [
        'period_start,period_end,user,teams,cost_center,provider,model,tier,requests,input_tokens,output_tokens,cached_input_tokens,cost_usd',
        '2026-11-25T00:00:00.000Z,2026-11-26T00:00:00.000Z,carol,data,,demo,demo/small,economy,1,1,4,0,0.000021',
        '2026-11-26T00:00:00.000Z,2026-11-27T00:00:00.000Z,carol,data,,demo,demo/medium,standard,1,2,5,0,0.000081',
        '',
      ].join('\n'),
    );
  });

  it('exports FOCUS CSV for a window, leaving out calls outside it', async () => {
    const out = await runUsageCommand(['export', file, '--from', '2026-11-26T00:00:00Z', '--to', '2026-11-27T00:00:00Z', '--format', 'focus'], {});
    const [header, ...lines] = out.trimEnd().split('\n');
    expect(header).toBe(FOCUS_COLUMNS.join(','));
    expect(lines).toEqual([
      '0.000066,tollgate,tollgate,USD,2026-11-01T00:00:00.000Z,2026-12-01T00:00:00.000Z,Usage,,6 tokens on demo/medium (1 request) for alice,Usage-Based,2026-11-26T00:00:00.000Z,2026-11-27T00:00:00.000Z,6,Tokens,0.000066,0.000066,demo,0.000066,,Standard,6,Tokens,tollgate,demo,AI and Machine Learning,Generative AI,demo models via tollgate,demo/medium,"{""user"":""alice"",""team"":""platform"",""costCenter"":""cc-1""}",2,4,0,1,standard',
      '0.000081,tollgate,tollgate,USD,2026-11-01T00:00:00.000Z,2026-12-01T00:00:00.000Z,Usage,,7 tokens on demo/medium (1 request) for carol,Usage-Based,2026-11-26T00:00:00.000Z,2026-11-27T00:00:00.000Z,7,Tokens,0.000081,0.000081,demo,0.000081,,Standard,7,Tokens,tollgate,demo,AI and Machine Learning,Generative AI,demo models via tollgate,demo/medium,"{""user"":""carol"",""team"":""data"",""costCenter"":""""}",2,5,0,1,standard',
    ]);
  });

  it('reads back exactly what the event log sink wrote', async () => {
    const path = join(dir, 'pino.jsonl');
    const sink = pinoSink(path);
    for (const e of gw.events) sink.emit(e);
    await sink.close!();
    const parsed = parseEventLines(readFileSync(path, 'utf8'));
    expect(parsed.malformed).toEqual([]);
    expect(parsed.events.map((e) => ({ ...e, level: undefined }))).toEqual(JSON.parse(JSON.stringify(gw.events)));
  });

  it('refuses an export without a window', async () => {
    await expect(runUsageCommand(['export', '--events', file], {})).rejects.toThrow('usage: tollgate usage export --events <file>... --from <ISO> --to <ISO> [--format csv|focus]');
  });
});
