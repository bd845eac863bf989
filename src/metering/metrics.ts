/**
 * Prometheus metrics, fed by the decision events through a sink rather than by instrumenting the
 * pipeline: whatever an event says, the metrics say. Each gateway has its own Registry (not
 * prom-client's global one), so two gateways in one process, as in the tests, never mix counts.
 *
 * The OpenTelemetry metric `gen_ai.client.token.usage` (histogram, unit `{token}`) is exposed under
 * its Prometheus form `gen_ai_client_token_usage`: dots become underscores, the annotation unit
 * `{token}` is dropped, and attributes become labels the same way (`gen_ai.token.type` ->
 * `gen_ai_token_type`). Buckets are the ones the GenAI conventions recommend.
 */
import { timingSafeEqual } from 'node:crypto';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DecisionEvent, EventSink } from './events.js';
import type { SiemStats } from './siem.js';

/** The OpenTelemetry GenAI conventions' advised bucket boundaries for token usage. */
export const TOKEN_USAGE_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
/** Seconds; from a few milliseconds of gateway work up to long completions. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const OVERHEAD_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** Label value for a principal with no cost centre. */
export const NO_COST_CENTER = 'none';
/** Label value for a principal in no team. */
export const NO_TEAM = 'none';
/** Label value for the teams beyond the cap (`maxTeams`). */
export const OTHER_TEAMS = 'other';
/** Default of `maxTeams` (TOLLGATE_METRICS_MAX_TEAMS). */
export const DEFAULT_MAX_TEAMS = 200;

export interface MetricsOptions {
  /**
   * Most distinct teams that get a `team` label value of their own; teams seen after that many
   * are counted as `other`. Each team value multiplies the series of the metrics that carry it
   * (cost centres x models x tiers), so this bounds what a scrape can grow to. 0: every team is `other`.
   */
  maxTeams?: number;
}

/**
 * The `team` label: a call counts under the first team its principal lists (so the series still
 * add up to the total: a call is never counted twice), `none` without a team. The first `max`
 * distinct teams seen by this process keep their own value, for the life of the process; later
 * ones are `other`.
 */
export function teamLabeler(max: number): (teams: readonly string[] | undefined) => string {
  const known = new Set<string>();
  return (teams) => {
    const team = teams?.[0];
    if (team === undefined) return NO_TEAM;
    if (known.has(team)) return team;
    if (known.size >= max) return OTHER_TEAMS;
    known.add(team);
    return team;
  };
}

export interface GatewayMetrics {
  registry: Registry;
  /** The exposition text /metrics serves: this registry's, or every worker's summed in a cluster. */
  text(): Promise<string>;
  /** Feeds the metrics; compose it next to the event log sink. */
  sink: EventSink;
  /** Exposes a SIEM sink's delivery counts (delivered, dropped, rejected, buffered). */
  trackSiem(stats: () => SiemStats): void;
  /** Exposes the alerts' counts (fired, delivered, failed, events dropped). */
  trackAlerts(stats: () => AlertCounts): void;
}

/** What the alert engine counts (src/alerts/engine.ts). */
export interface AlertCounts {
  fired: number;
  delivered: number;
  failed: number;
  dropped: number;
}

/** Events whose metric updates are held before they are handed to prom-client (see `Batch`). */
const BATCH_EVENTS = 256;

/**
 * Metric updates held and handed to prom-client together: a counter's increments with the same
 * labels are summed first, so N calls cost one `inc` per label set instead of N, and each
 * update made during a call is a Map lookup on a key of label values joined (prom-client validates
 * and hashes the label object on every `inc` and `observe`). Handed over every BATCH_EVENTS events
 * and whenever the registry is read (a scrape, or a cluster's primary asking this worker), through
 * each metric's `collect` hook: what a scrape shows is every event emitted before it.
 */
class Batch {
  private readonly counts = new Map<Counter<string>, Map<string, { labels: Record<string, string>; value: number }>>();
  private readonly observed = new Map<Histogram<string>, Map<string, { labels: Record<string, string>; values: number[] }>>();
  private events = 0;

  inc<L extends string>(metric: Counter<L>, key: string, labels: () => Record<L, string>, value = 1): void {
    // What prom-client refuses (a negative or not finite amount) is refused now, with the event.
    if (!(value >= 0) || !Number.isFinite(value)) {
      metric.inc(labels(), value);
      return;
    }
    let byKey = this.counts.get(metric as Counter<string>);
    if (!byKey) this.counts.set(metric as Counter<string>, (byKey = new Map()));
    const held = byKey.get(key);
    if (held) held.value += value;
    else byKey.set(key, { labels: labels(), value });
  }

  observe<L extends string>(metric: Histogram<L>, key: string, labels: () => Record<L, string>, value: number): void {
    let byKey = this.observed.get(metric as Histogram<string>);
    if (!byKey) this.observed.set(metric as Histogram<string>, (byKey = new Map()));
    const held = byKey.get(key);
    if (held) held.values.push(value);
    else byKey.set(key, { labels: labels(), values: [value] });
  }

  /** One event's updates are in: hands them over once BATCH_EVENTS have gathered. */
  eventDone(): void {
    if (++this.events >= BATCH_EVENTS) this.flush();
  }

  flush(): void {
    this.events = 0;
    for (const [metric, byKey] of this.counts) {
      for (const { labels, value } of byKey.values()) metric.inc(labels, value);
      byKey.clear();
    }
    for (const [metric, byKey] of this.observed) {
      for (const { labels, values } of byKey.values()) for (const v of values) metric.observe(labels, v);
      byKey.clear();
    }
  }
}

export function createMetrics(opts: MetricsOptions = {}): GatewayMetrics {
  const teamOf = teamLabeler(opts.maxTeams ?? DEFAULT_MAX_TEAMS);
  const registry = new Registry();
  const registers = [registry];
  const batch = new Batch();
  // Every metric fed by events hands over what the batch holds when the registry reads it.
  const collect = (): void => batch.flush();
  const tokens = new Counter({
    name: 'tollgate_tokens_total',
    help: 'Tokens consumed, as reported by the provider, by cost centre, team (the first listed; "other" past the cap), model, tier and direction (input or output).',
    labelNames: ['cost_center', 'team', 'model', 'tier', 'direction'] as const,
    registers,
    collect,
  });
  const cost = new Counter({
    name: 'tollgate_cost_usd_total',
    help: 'Cost in USD at the configured list prices, by cost centre, team (the first listed; "other" past the cap), model and tier.',
    labelNames: ['cost_center', 'team', 'model', 'tier'] as const,
    registers,
    collect,
  });
  const decisions = new Counter({
    name: 'tollgate_decisions_total',
    help: 'Decision events by effect, outcome, deciding rule or budget, and error code ("" when none).',
    labelNames: ['effect', 'outcome', 'rule_id', 'budget_id', 'error_code'] as const,
    registers,
    collect,
  });
  const upstream = new Histogram({
    name: 'tollgate_upstream_latency_seconds',
    help: 'Time spent waiting on providers per call (every failover attempt included), by provider and served model.',
    labelNames: ['provider', 'model'] as const,
    buckets: LATENCY_BUCKETS,
    registers,
    collect,
  });
  const overhead = new Histogram({
    name: 'tollgate_gateway_overhead_seconds',
    help: 'Time tollgate adds to a call: total latency minus upstream time, by transport.',
    labelNames: ['transport'] as const,
    buckets: OVERHEAD_BUCKETS,
    registers,
    collect,
  });
  const storeErrors = new Counter({
    name: 'tollgate_store_errors_total',
    help: 'Calls that met a quota store failure: unavailable (refused), fail_open (local ledger), settle_failed (queued).',
    labelNames: ['kind'] as const,
    registers,
    collect,
  });
  const overruns = new Counter({
    name: 'tollgate_budget_overruns_total',
    help: 'Budget lines charged more than their reservation (the provider reported more than admission allowed for), by budget.',
    labelNames: ['budget_id'] as const,
    registers,
    collect,
  });
  const overrunAmount = new Counter({
    name: 'tollgate_budget_overrun_amount_total',
    help: 'What was charged beyond reservations, in the budget\'s ledger unit (tokens or micro_usd), by budget.',
    labelNames: ['budget_id', 'unit'] as const,
    registers,
    collect,
  });
  const tokenUsage = new Histogram({
    name: 'gen_ai_client_token_usage',
    help: 'OpenTelemetry gen_ai.client.token.usage: input and output tokens per call.',
    labelNames: ['gen_ai_operation_name', 'gen_ai_provider_name', 'gen_ai_request_model', 'gen_ai_response_model', 'gen_ai_token_type'] as const,
    buckets: TOKEN_USAGE_BUCKETS,
    registers,
    collect,
  });

  const dryRuns = new Counter({
    name: 'tollgate_dry_runs_total',
    help: 'Dry runs (estimate, count_tokens), which charge nothing, by kind, the effect the call would get, outcome and error code.',
    labelNames: ['kind', 'effect', 'outcome', 'error_code'] as const,
    registers,
    collect,
  });

  loopDelay();
  new Gauge({
    name: 'tollgate_event_loop_stall_seconds',
    help: "The longest the event loop was held since the previous scrape (a stall delays every call in flight, its caller's hang-up and its timers); the largest of the workers'.",
    registers,
    aggregator: 'max',
    collect() {
      const h = loopDelay();
      // The histogram holds the time between the monitor's ticks: the stall is what exceeds its period.
      this.set(h.count === 0 ? 0 : Math.max(0, h.max / 1e9 - LOOP_TICK_MS / 1000));
      h.reset();
    },
  });

  // Keys are the label values in the metric's label order, joined with a character no label holds.
  const SEP = '\u0000';

  function record(e: DecisionEvent): void {
    update(e);
    batch.eventDone();
  }

  function update(e: DecisionEvent): void {
    const dryRun = e['tollgate.dry_run'];
    if (dryRun) {
      const error_code = e['error.code'] ?? '';
      batch.inc(dryRuns, dryRun + SEP + e.effect + SEP + e.outcome + SEP + error_code, () => ({ kind: dryRun, effect: e.effect, outcome: e.outcome, error_code }));
      return;
    }
    const rule_id = e['policy.rule_id'] ?? '';
    const budget_id = e['policy.budget_id'] ?? '';
    const error_code = e['error.code'] ?? '';
    batch.inc(decisions, e.effect + SEP + e.outcome + SEP + rule_id + SEP + budget_id + SEP + error_code, () => ({ effect: e.effect, outcome: e.outcome, rule_id, budget_id, error_code }));
    const storeError = e['tollgate.store_error'];
    if (storeError) batch.inc(storeErrors, storeError, () => ({ kind: storeError }));
    for (const o of e['tollgate.overrun'] ?? []) {
      batch.inc(overruns, o.budget, () => ({ budget_id: o.budget }));
      batch.inc(overrunAmount, o.budget + SEP + o.unit, () => ({ budget_id: o.budget, unit: o.unit }), o.amount);
    }
    const upstreamMs = e['tollgate.upstream_ms'];
    batch.observe(overhead, e.transport, () => ({ transport: e.transport }), Math.max(0, e['tollgate.latency_ms'] - (upstreamMs ?? 0)) / 1000);

    const model = e['tollgate.model.served'] ?? e['tollgate.attempts'].at(-1)?.model;
    const providerName = e['gen_ai.provider.name'] ?? '';
    if (upstreamMs !== undefined && model) batch.observe(upstream, providerName + SEP + model, () => ({ provider: providerName, model }), upstreamMs / 1000);

    const input = e['gen_ai.usage.input_tokens'];
    const output = e['gen_ai.usage.output_tokens'];
    if (!model || (input === 0 && output === 0)) return;
    const cc = e['user.cost_center'] ?? NO_COST_CENTER;
    const team = teamOf(e['user.teams']);
    const tier = e['tollgate.tier.served'] ?? '';
    const byModel = cc + SEP + team + SEP + model + SEP + tier;
    batch.inc(tokens, byModel + SEP + 'input', () => ({ cost_center: cc, team, model, tier, direction: 'input' }), input);
    batch.inc(tokens, byModel + SEP + 'output', () => ({ cost_center: cc, team, model, tier, direction: 'output' }), output);
    batch.inc(cost, byModel, () => ({ cost_center: cc, team, model, tier }), e['tollgate.cost_usd']);
    const operation = e['gen_ai.operation.name'];
    const requestModel = e['gen_ai.request.model'] ?? model;
    const responseModel = e['gen_ai.response.model'] ?? '';
    const otel = operation + SEP + providerName + SEP + requestModel + SEP + responseModel;
    const otelLabels = (type: 'input' | 'output') => () => ({
      gen_ai_operation_name: operation,
      gen_ai_provider_name: providerName,
      gen_ai_request_model: requestModel,
      gen_ai_response_model: responseModel,
      gen_ai_token_type: type,
    });
    batch.observe(tokenUsage, otel + SEP + 'input', otelLabels('input'), input);
    batch.observe(tokenUsage, otel + SEP + 'output', otelLabels('output'), output);
  }

  function trackSiem(stats: () => SiemStats): void {
    new Counter({
      name: 'tollgate_siem_events_total',
      help: 'Decision events handed to the SIEM sink, by what became of them: delivered, dropped (buffer full, oldest first) or rejected (400/413).',
      labelNames: ['result'] as const,
      registers,
      collect() {
        const s = stats();
        this.reset();
        this.inc({ result: 'delivered' }, s.delivered);
        this.inc({ result: 'dropped' }, s.dropped);
        this.inc({ result: 'rejected' }, s.rejected);
      },
    });
    new Gauge({
      name: 'tollgate_siem_buffered_events',
      help: 'Decision events waiting to be sent to the SIEM.',
      registers,
      collect() {
        this.set(stats().buffered);
      },
    });
  }

  function trackAlerts(stats: () => AlertCounts): void {
    new Counter({
      name: 'tollgate_alerts_total',
      help: 'Alerts by what became of them: fired (this process won the once-only mark), and per webhook delivered or failed (after its retries).',
      labelNames: ['result'] as const,
      registers,
      collect() {
        const s = stats();
        this.reset();
        this.inc({ result: 'fired' }, s.fired);
        this.inc({ result: 'delivered' }, s.delivered);
        this.inc({ result: 'failed' }, s.failed);
      },
    });
    new Counter({
      name: 'tollgate_alert_events_dropped_total',
      help: 'Decision events not evaluated for alerts because the alert queue was full (alerts.delivery.maxQueue).',
      registers,
      collect() {
        this.reset();
        this.inc(stats().dropped);
      },
    });
  }

  return { registry, text: () => registry.metrics(), sink: { emit: record }, trackSiem, trackAlerts };
}

/** The period of the event-loop monitor, in ms. */
const LOOP_TICK_MS = 10;
let loopHistogram: IntervalHistogram | undefined;

/** One monitor of the event loop per process (a timer every LOOP_TICK_MS that keeps nothing alive), made on first use. */
function loopDelay(): IntervalHistogram {
  if (!loopHistogram) {
    loopHistogram = monitorEventLoopDelay({ resolution: LOOP_TICK_MS });
    loopHistogram.enable();
  }
  return loopHistogram;
}

/**
 * True when `/metrics` may be served to this request: always without a configured token, else
 * only with `Authorization: Bearer <token>` (compared in constant time).
 */
export function metricsAuthorized(authorization: string | undefined, token: string | undefined): boolean {
  if (!token) return true;
  const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
  if (!m) return false;
  const given = Buffer.from(m[1]!.trim());
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}
