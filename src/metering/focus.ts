/**
 * Usage export from decision events, as plain CSV or as FinOps FOCUS 1.2 cost and usage rows.
 *
 * The events are the honest source: the ledger keeps a total per budget line, not per model, while
 * every event carries the model that served it, the tokens the provider reported and the cost
 * the ledger was charged. Rows aggregate one charge period (a UTC day or month) x served model x
 * tier x principal. Costs are summed in integer micro-dollars, so the export's total equals the
 * events' total exactly, and its token totals equal what the ledger charged token budgets.
 *
 * Costs are tollgate's list-price estimates (the policy's price table), not a provider invoice:
 * BilledCost, EffectiveCost, ListCost and ContractedCost are all that figure.
 */
import type { DecisionEvent } from './events.js';

export type Granularity = 'day' | 'month';

export interface ExportFilter {
  /** Inclusive start and exclusive end of the export window (event times, UTC ms). */
  from: number;
  to: number;
  granularity?: Granularity;
  user?: string;
  team?: string;
  costCenter?: string;
}

/** One aggregated line: a charge period, a model and tier, a principal. */
export interface UsageGroup {
  periodStart: string;
  periodEnd: string;
  user: string;
  teams: string[];
  costCenter: string;
  provider: string;
  model: string;
  tier: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens: number;
  costMicroUsd: number;
}

export interface ParsedEvents {
  events: DecisionEvent[];
  /** Lines that were not JSON (e.g. a line cut by a crash), by 1-based line number. */
  malformed: number[];
}

/** Decision events from JSON lines (the event log's format); other log lines are skipped. */
export function parseEventLines(text: string): ParsedEvents {
  const events: DecisionEvent[] = [];
  const malformed: number[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      malformed.push(i + 1);
      return;
    }
    if (parsed && typeof parsed === 'object' && (parsed as { event?: unknown }).event === 'tollgate.decision') events.push(parsed as DecisionEvent);
  });
  return { events, malformed };
}

/** Micro-dollars as an exact decimal string, e.g. 66 -> "0.000066". */
export function formatMicroUsd(micro: number): string {
  const sign = micro < 0 ? '-' : '';
  const abs = Math.abs(micro);
  return `${sign}${Math.floor(abs / 1e6)}.${String(abs % 1e6).padStart(6, '0')}`;
}

function periodOf(time: number, g: Granularity): { start: Date; end: Date } {
  const d = new Date(time);
  if (g === 'month') {
    return { start: new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)), end: new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)) };
  }
  const start = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  return { start, end: new Date(start.getTime() + 86_400_000) };
}

/** The model an event's usage was charged for: the one that served it, else the last one tried (a cut stream). */
function chargedModel(e: DecisionEvent): string | undefined {
  return e['tollgate.model.served'] ?? e['tollgate.attempts'].at(-1)?.model;
}

/** When an event's call was committed, as an event alone tells it: its start plus its latency. */
export function committedAt(e: DecisionEvent): number {
  const latency = e['tollgate.latency_ms'];
  return Date.parse(e.time) + (typeof latency === 'number' && Number.isFinite(latency) ? latency : 0);
}

/**
 * Aggregates the events with charged usage inside the window, each in the period it was committed
 * in (`atOf`: the journal entry's time where there is one, else `committedAt`), as the usage report,
 * the ledger and the rollups count it: a call started before midnight and answered after it is the
 * next day's. An event seen twice (the same request id in two files) counts once. A refused call
 * reached no provider and costs nothing: it is left out, whatever its event says.
 */
export function aggregateUsage(events: Iterable<DecisionEvent>, filter: ExportFilter, atOf: (e: DecisionEvent) => number = committedAt): UsageGroup[] {
  const g = filter.granularity ?? 'day';
  const seen = new Set<string>();
  const groups = new Map<string, UsageGroup>();
  for (const e of events) {
    if (e.outcome === 'refused' || e['tollgate.dry_run'] !== undefined) continue;
    const t = atOf(e);
    if (!(t >= filter.from && t < filter.to)) continue;
    const input = e['gen_ai.usage.input_tokens'];
    const output = e['gen_ai.usage.output_tokens'];
    const model = chargedModel(e);
    if ((input === 0 && output === 0) || !model) continue;
    if (seen.has(e['request.id'])) continue;
    seen.add(e['request.id']);
    const user = e['user.id'] ?? '';
    const teams = e['user.teams'] ?? [];
    const costCenter = e['user.cost_center'] ?? '';
    if (filter.user !== undefined && user !== filter.user) continue;
    if (filter.team !== undefined && !teams.includes(filter.team)) continue;
    if (filter.costCenter !== undefined && costCenter !== filter.costCenter) continue;
    // The part of the period inside the window: two adjacent exports that cut a day between them
    // each claim their own part of it, not both the whole day.
    const period = periodOf(t, g);
    const start = Number.isFinite(filter.from) && filter.from > period.start.getTime() ? new Date(filter.from) : period.start;
    const end = Number.isFinite(filter.to) && filter.to < period.end.getTime() ? new Date(filter.to) : period.end;
    const tier = e['tollgate.tier.served'] ?? '';
    const provider = e['gen_ai.provider.name'] ?? model.slice(0, model.indexOf('/'));
    const key = JSON.stringify([start.getTime(), model, tier, user, teams, costCenter]);
    let row = groups.get(key);
    if (!row) {
      row = {
        periodStart: start.toISOString(),
        periodEnd: end.toISOString(),
        user,
        teams: [...teams],
        costCenter,
        provider,
        model,
        tier,
        requests: 0,
        inputTokens: 0,
        outputTokens: 0,
        cachedInputTokens: 0,
        costMicroUsd: 0,
      };
      groups.set(key, row);
    }
    row.requests++;
    row.inputTokens += input;
    row.outputTokens += output;
    row.cachedInputTokens += e['gen_ai.usage.cached_input_tokens'] ?? 0;
    row.costMicroUsd += Math.round(e['tollgate.cost_usd'] * 1e6);
  }
  return [...groups.values()].sort(
    (a, b) => a.periodStart.localeCompare(b.periodStart) || a.user.localeCompare(b.user) || a.model.localeCompare(b.model) || a.tier.localeCompare(b.tier),
  );
}

/** The FOCUS 1.2 columns written, in order; `x_` columns are tollgate's own. */
export const FOCUS_COLUMNS = [
  'BilledCost',
  'BillingAccountId',
  'BillingAccountName',
  'BillingCurrency',
  'BillingPeriodStart',
  'BillingPeriodEnd',
  'ChargeCategory',
  'ChargeClass',
  'ChargeDescription',
  'ChargeFrequency',
  'ChargePeriodStart',
  'ChargePeriodEnd',
  'ConsumedQuantity',
  'ConsumedUnit',
  'ContractedCost',
  'EffectiveCost',
  'InvoiceIssuerName',
  'ListCost',
  'ListUnitPrice',
  'PricingCategory',
  'PricingQuantity',
  'PricingUnit',
  'ProviderName',
  'PublisherName',
  'ServiceCategory',
  'ServiceSubcategory',
  'ServiceName',
  'SkuId',
  'Tags',
  'x_InputTokens',
  'x_OutputTokens',
  'x_CachedInputTokens',
  'x_RequestCount',
  'x_Tier',
] as const;

export type FocusRow = Record<(typeof FOCUS_COLUMNS)[number], string | number | null>;

function billingMonth(periodStart: string): { start: string; end: string } {
  const p = periodOf(Date.parse(periodStart), 'month');
  return { start: p.start.toISOString(), end: p.end.toISOString() };
}

/**
 * FOCUS rows, one per usage group. Cost columns are decimal strings in USD with six places, so
 * they add up exactly. ListUnitPrice is null: a row mixes input and output tokens, which are
 * priced differently, so no single unit price multiplies PricingQuantity into ListCost.
 */
export function toFocusRows(groups: readonly UsageGroup[], account = { id: 'tollgate', name: 'tollgate' }): FocusRow[] {
  return groups.map((g) => {
    const cost = formatMicroUsd(g.costMicroUsd);
    const tokens = g.inputTokens + g.outputTokens;
    const billing = billingMonth(g.periodStart);
    const tags: Record<string, string> = { user: g.user, team: g.teams.join(','), costCenter: g.costCenter };
    return {
      BilledCost: cost,
      BillingAccountId: account.id,
      BillingAccountName: account.name,
      BillingCurrency: 'USD',
      BillingPeriodStart: billing.start,
      BillingPeriodEnd: billing.end,
      ChargeCategory: 'Usage',
      ChargeClass: null,
      ChargeDescription: `${tokens} tokens on ${g.model} (${g.requests} request${g.requests === 1 ? '' : 's'}) for ${g.user}`,
      ChargeFrequency: 'Usage-Based',
      ChargePeriodStart: g.periodStart,
      ChargePeriodEnd: g.periodEnd,
      ConsumedQuantity: tokens,
      ConsumedUnit: 'Tokens',
      ContractedCost: cost,
      EffectiveCost: cost,
      InvoiceIssuerName: g.provider,
      ListCost: cost,
      ListUnitPrice: null,
      PricingCategory: 'Standard',
      PricingQuantity: tokens,
      PricingUnit: 'Tokens',
      ProviderName: 'tollgate',
      PublisherName: g.provider,
      ServiceCategory: 'AI and Machine Learning',
      ServiceSubcategory: 'Generative AI',
      ServiceName: `${g.provider} models via tollgate`,
      SkuId: g.model,
      Tags: JSON.stringify(tags),
      x_InputTokens: g.inputTokens,
      x_OutputTokens: g.outputTokens,
      x_CachedInputTokens: g.cachedInputTokens,
      x_RequestCount: g.requests,
      x_Tier: g.tier,
    };
  });
}

/** The plain CSV columns, for spreadsheets (written by src/admin/csv.ts). */
export const CSV_COLUMNS = ['period_start', 'period_end', 'user', 'teams', 'cost_center', 'provider', 'model', 'tier', 'requests', 'input_tokens', 'output_tokens', 'cached_input_tokens', 'cost_usd'] as const;
