/**
 * Alerts, evaluated from the decision events the journal commits, off every call's path: `emit`
 * (the event sink's) only appends the event to a bounded queue and returns; a background loop takes
 * the queue in batches, reads what it must from the store, and fires.
 *
 * Once per crossing: every alert takes a once-only mark in the shared store before it fires
 * (`claimAlert`: SET NX on Redis, in the same Lua step as its journal entry; a map journaled with
 * the embedded store, so restored after a restart). Two replicas that see the same crossing race
 * for one mark, and one fires.
 * - Budget thresholds: after a charge, the line's usage (settled) is read and each threshold it
 *   has reached is claimed: `budget:<alert>:<budget>:<subject>:<window start>:<threshold>`, kept
 *   until the window ends (a rolling window: for one span). A charge that jumps two thresholds
 *   fires both. Lines named by several events of one batch are read once.
 * - Refusal spikes: a counter per alert, subject and fixed window (`countAlert`, INCRBY on Redis)
 *   takes the batch's refusals; when it reaches `count`, the window's mark is claimed.
 * - Overruns: the first overrun of a budget line in its window fires.
 *
 * Overflow: beyond `alerts.delivery.maxQueue` waiting events, new events are not evaluated; they
 * are counted (`stats().dropped`, tollgate_alert_events_dropped_total) and logged. A threshold
 * missed that way fires at the line's next charge (its usage is read again then); a refusal not
 * counted is lost to its window's count. The calls themselves are never slowed or refused.
 */
import type { Logger } from 'pino';
import type { DecisionEvent, EventSink } from '../metering/events.js';
import type { Policy } from '../policy/load.js';
import type { AlertLedger, QuotaStore } from '../quota/store.js';
import { formatAmount, type Alert } from './alert.js';
import { Deliverer, type DeliveryStats } from './deliver.js';
import { budgetChecks, hasAlerts, overrunHits, refusalCounts, thresholdKey, type BudgetCheck, type OverrunHit, type RefusalCount } from './evaluate.js';

export interface AlertEngineOptions {
  /** The shared store: reads budget usage, holds the marks and counters, journals alerts. */
  store: QuotaStore & AlertLedger;
  /** The policy in force (a reload moves alerts with it). */
  policy: () => Policy;
  /** The ledger's key prefix (e.g. `tollgate:`), to read budget lines. */
  keyPrefix: string;
  now?: () => number;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  fetch?: typeof fetch;
}

export interface AlertStats extends DeliveryStats {
  fired: number;
  /** Claims this process lost: another replica (or an earlier process) had taken the mark. */
  lost: number;
  /** Decision events not evaluated because the queue was full. */
  dropped: number;
  queued: number;
}

const BATCH = 500;
/** Marks this process knows are taken, so it does not ask the store again; cleared when this large. */
const KNOWN_MARKS_MAX = 50_000;

export class AlertEngine implements EventSink {
  private queue: DecisionEvent[] = [];
  private pumping: Promise<void> | undefined;
  private readonly deliverer: Deliverer;
  private readonly known = new Map<string, number>();
  private readonly counts = { fired: 0, lost: 0, dropped: 0 };
  private droppedSinceLog = 0;
  private closed = false;
  private readonly now: () => number;

  constructor(private readonly opts: AlertEngineOptions) {
    this.now = opts.now ?? Date.now;
    this.deliverer = new Deliverer({
      settings: () => {
        const p = opts.policy();
        return { delivery: p.config.alerts.delivery, egressAllow: p.config.egress.allow };
      },
      note: (note) => opts.store.noteAlert(note),
      logger: opts.logger,
      fetch: opts.fetch,
    });
  }

  /** The sink's entry point: queues the event (or counts it dropped) and returns at once. */
  emit(event: DecisionEvent): void {
    if (this.closed) return;
    const policy = this.opts.policy();
    if (!hasAlerts(policy) || !mayRaise(policy, event)) return;
    if (this.queue.length >= policy.config.alerts.delivery.maxQueue) {
      this.counts.dropped += 1;
      if (this.droppedSinceLog++ === 0) {
        this.opts.logger.warn({ event: 'alert_queue_full', maxQueue: policy.config.alerts.delivery.maxQueue }, 'the alert queue is full; decision events are not evaluated for alerts until it drains');
      }
      return;
    }
    this.queue.push(event);
    // Started as a microtask, not on a later turn of the event loop: calls that never leave it (an
    // in-process store and provider) would otherwise fill the queue before it ever ran. The call
    // that emitted has already been answered or is not waiting on this.
    if (!this.pumping) this.pumping = Promise.resolve().then(() => this.pump());
  }

  stats(): AlertStats {
    return { ...this.counts, ...this.deliverer.stats(), queued: this.queue.length };
  }

  /** Resolves once every event queued so far is evaluated and every alert fired is delivered or failed (and journaled). */
  async idle(): Promise<void> {
    while (this.pumping || this.deliverer.stats().pending > 0) {
      await this.pumping;
      await this.deliverer.idle();
    }
  }

  /** Evaluates what is queued, then ends deliveries (a retry still waiting fails as shut down). Call before the store closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.pumping;
    this.closed = true;
    await this.deliverer.close();
  }

  private async pump(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, BATCH);
        if (this.droppedSinceLog > 0) {
          this.opts.logger.error({ event: 'alert_events_dropped', dropped: this.droppedSinceLog, droppedTotal: this.counts.dropped }, 'decision events were not evaluated for alerts (queue full)');
          this.droppedSinceLog = 0;
        }
        try {
          await this.evaluate(batch);
        } catch (err) {
          this.opts.logger.error({ err, event: 'alert_evaluation_failed', events: batch.length }, 'alerts could not be evaluated for a batch of decision events');
        }
      }
    } finally {
      this.pumping = undefined;
    }
  }

  private async evaluate(batch: DecisionEvent[]): Promise<void> {
    const policy = this.opts.policy();
    const lines = new Map<string, BudgetCheck>();
    const refusals = new Map<string, RefusalCount>();
    const overruns = new Map<string, OverrunHit>();
    for (const e of batch) {
      for (const c of budgetChecks(policy, e, this.opts.keyPrefix)) lines.set(c.key, c);
      for (const r of refusalCounts(policy, e)) {
        const seen = refusals.get(r.key);
        if (seen) {
          seen.n += 1;
          seen.requestId = r.requestId;
        } else refusals.set(r.key, r);
      }
      for (const o of overrunHits(policy, e)) if (!overruns.has(o.key)) overruns.set(o.key, o);
    }
    const work = [...[...lines.values()].map((c) => this.checkThresholds(policy, c)), ...[...refusals.values()].map((r) => this.countRefusals(policy, r)), ...[...overruns.values()].map((o) => this.fire(policy, o.key, o.window.markUntil, overrunAlert(o, this.now()), o.rule.notify))];
    const results = await Promise.allSettled(work);
    for (const r of results) if (r.status === 'rejected') this.opts.logger.warn({ err: r.reason as unknown, event: 'alert_check_failed' }, 'an alert check failed (the store may be unreachable)');
  }

  private async checkThresholds(policy: Policy, c: BudgetCheck): Promise<void> {
    const now = this.now();
    const open = c.rules.flatMap((rule) => [...new Set(rule.thresholds)].sort((a, b) => a - b).map((t) => ({ rule, t, key: thresholdKey(rule, c, t) }))).filter((x) => !this.isKnown(x.key, now));
    if (open.length === 0) return;
    const [state] = await this.opts.store.read([{ readKeys: c.readKeys, reservedKey: c.reservedKey }]);
    const used = state?.used ?? 0;
    for (const { rule, t, key } of open) {
      if (used * 100 < t * c.budget.limit) continue;
      await this.fire(policy, key, c.window.markUntil, thresholdAlert(c, rule.id, t, used, key, now), rule.notify);
    }
  }

  private async countRefusals(policy: Policy, r: RefusalCount): Promise<void> {
    const now = this.now();
    const count = await this.opts.store.countAlert(r.key, r.n, r.end + 60_000);
    if (count < r.rule.count || this.isKnown(r.key, now)) return;
    await this.fire(policy, r.key, r.end, refusalAlert(r, count, now), r.rule.notify);
  }

  /** Claims the mark; if this process won it, counts the alert and hands it to each webhook. */
  private async fire(policy: Policy, key: string, until: number, alert: Alert, notify: readonly string[]): Promise<void> {
    const won = await this.opts.store.claimAlert(key, until, { ...alert, status: 'fired', notify: [...notify] });
    this.remember(key, until);
    if (!won) {
      this.counts.lost += 1;
      return;
    }
    this.counts.fired += 1;
    this.opts.logger.info({ event: 'alert_fired', alertId: alert.id, kind: alert.kind, notify }, alert.summary);
    for (const id of notify) {
      const webhook = policy.config.alerts.webhooks.find((w) => w.id === id);
      if (webhook) this.deliverer.send(alert, webhook);
    }
  }

  private isKnown(key: string, now: number): boolean {
    const until = this.known.get(key);
    return until !== undefined && until > now;
  }

  private remember(key: string, until: number): void {
    if (this.known.size >= KNOWN_MARKS_MAX) this.known.clear();
    this.known.set(key, until);
  }
}

/** A cheap test before queueing: could this event raise anything under `policy`? */
function mayRaise(policy: Policy, e: DecisionEvent): boolean {
  const a = policy.config.alerts;
  if (a.budgets.length > 0 && e['tollgate.charged']?.some((c) => c.amount > 0)) return true;
  if (a.overruns.length > 0 && e['tollgate.overrun']?.length) return true;
  return a.refusals.length > 0 && (e.outcome === 'refused' || e['error.code'] !== undefined);
}

const iso = (ms: number) => new Date(ms).toISOString();
/** A ledger amount in the budget's unit for people: tokens, or dollars from micro-dollars. */
const inUnit = (amount: number, unit: 'tokens' | 'usd') => (unit === 'usd' ? amount / 1e6 : amount);
const scopeOf = (c: { budget: { config: { scope: Alert['subject']['scope'] } } }) => c.budget.config.scope;

function thresholdAlert(c: BudgetCheck, ruleId: string, threshold: number, used: number, id: string, now: number): Alert {
  const unit = c.budget.unit;
  const percent = Math.round((used / c.budget.limit) * 1000) / 10;
  const amount = `${formatAmount(inUnit(used, unit), unit)} of ${formatAmount(inUnit(c.budget.limit, unit), unit)}`;
  return {
    type: 'tollgate.alert',
    id,
    kind: 'budget_threshold',
    alert: ruleId,
    firedAt: iso(now),
    summary: `Budget ${c.budget.config.id} for ${scopeOf(c)} ${c.subject} has reached ${threshold}% of its limit: ${amount} used (${percent}%).`,
    subject: { scope: scopeOf(c), id: c.subject },
    window: { start: iso(c.window.start), end: iso(c.window.end) },
    budget: { id: c.budget.config.id, unit, limit: inUnit(c.budget.limit, unit), used: inUnit(used, unit), percent },
    threshold,
    requestId: c.requestId,
    policyVersion: c.policyVersion,
  };
}

function refusalAlert(r: RefusalCount, count: number, now: number): Alert {
  const minutes = Math.round((r.end - r.start) / 60_000);
  return {
    type: 'tollgate.alert',
    id: r.key,
    kind: 'refusal_spike',
    alert: r.rule.id,
    firedAt: iso(now),
    summary: `${count} refusals${r.rule.codes ? ` (${r.rule.codes.join(', ')})` : ''} for ${r.scope} ${r.subject} within ${minutes} minutes (alert at ${r.rule.count}).`,
    subject: { scope: r.scope, id: r.subject },
    window: { start: iso(r.start), end: iso(r.end) },
    refusals: { count, threshold: r.rule.count, ...(r.rule.codes ? { codes: r.rule.codes } : {}) },
    requestId: r.requestId,
    policyVersion: r.policyVersion,
  };
}

function overrunAlert(o: OverrunHit, now: number): Alert {
  const unit = o.budget.unit;
  return {
    type: 'tollgate.alert',
    id: o.key,
    kind: 'budget_overrun',
    alert: o.rule.id,
    firedAt: iso(now),
    summary: `A call was charged ${formatAmount(inUnit(o.amount, unit), unit)} beyond its reservation on budget ${o.budget.config.id} for ${scopeOf(o)} ${o.subject} (the provider reported more than admission allowed for).`,
    subject: { scope: scopeOf(o), id: o.subject },
    window: { start: iso(o.window.start), end: iso(o.window.end) },
    overrun: { amount: inUnit(o.amount, unit), unit },
    requestId: o.requestId,
    policyVersion: o.policyVersion,
  };
}
