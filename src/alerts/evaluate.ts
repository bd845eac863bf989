/**
 * What a decision event may raise, worked out without I/O: the budget lines whose usage should be
 * read against their thresholds, the refusal counters to add to, and the overruns that fire. The
 * engine (engine.ts) then reads and marks the store. Keys built here are the alerts' once-only
 * marks: the same crossing gives the same key on every replica and after a restart.
 */
import type { DecisionEvent } from '../metering/events.js';
import type { BudgetAlertConfig, OverrunAlertConfig, RefusalAlertConfig } from '../policy/alertsConfig.js';
import { lineKeys } from '../policy/budgets.js';
import type { CompiledBudget, Policy } from '../policy/load.js';
import { resolveWindow } from '../quota/windows.js';
import type { AlertScope } from './alert.js';

/** A budget window as alerts see it: where marks start and when they lapse. */
export interface AlertWindow {
  /** Part of a mark's key: the calendar window's start, or `rolling` (a mark then lasts one span). */
  tag: string;
  start: number;
  end: number;
  /** When the marks of this window may lapse. */
  markUntil: number;
}

/** A budget line to read against its thresholds. */
export interface BudgetCheck {
  /** budget|subject|window: one check per line and window, however many events named it. */
  key: string;
  budget: CompiledBudget;
  subject: string;
  window: AlertWindow;
  readKeys: string[];
  reservedKey: string;
  rules: BudgetAlertConfig[];
  requestId: string;
  policyVersion: string;
}

/** Refusals to add to one subject's counter of one window. */
export interface RefusalCount {
  key: string;
  rule: RefusalAlertConfig;
  scope: AlertScope;
  subject: string;
  start: number;
  end: number;
  n: number;
  requestId: string;
  policyVersion: string;
}

/** An overrun that fires (once per rule, budget line and window). */
export interface OverrunHit {
  key: string;
  rule: OverrunAlertConfig;
  budget: CompiledBudget;
  subject: string;
  window: AlertWindow;
  amount: number;
  requestId: string;
  policyVersion: string;
}

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** A subject inside a key: `:` and `|` cannot appear in it, so keys cannot collide. */
export const keyPart = (s: string): string => encodeURIComponent(s);

/** The budget window holding `at`, for marks. */
export function alertWindow(budget: CompiledBudget, at: number): AlertWindow {
  const spec = budget.config.window;
  const w = resolveWindow(spec, at);
  if ('calendar' in spec) return { tag: String(w.start), start: w.start, end: w.resetsAt, markUntil: w.resetsAt };
  const span = ((spec.rolling.days ?? 0) * 24 + (spec.rolling.hours ?? 0)) * HOUR;
  return { tag: 'rolling', start: at - span, end: at, markUntil: at + span };
}

function watches(rule: { budgets?: string[]; scope?: string }, budget: CompiledBudget): boolean {
  if (rule.budgets && !rule.budgets.includes(budget.config.id)) return false;
  if ('scope' in rule && rule.scope && rule.scope !== budget.config.scope) return false;
  return true;
}

/** True when the policy has any alert that could fire. */
export function hasAlerts(policy: Policy): boolean {
  const a = policy.config.alerts;
  return a.budgets.length + a.refusals.length + a.overruns.length > 0;
}

/** The budget lines this event charged that some threshold alert watches. */
export function budgetChecks(policy: Policy, e: DecisionEvent, prefix: string): BudgetCheck[] {
  const rules = policy.config.alerts.budgets;
  const charged = e['tollgate.charged'];
  if (rules.length === 0 || !charged) return [];
  const at = Date.parse(e.time);
  const out: BudgetCheck[] = [];
  for (const c of charged) {
    if (c.amount <= 0) continue;
    const budget = policy.budgets.find((b) => b.config.id === c.budget);
    if (!budget) continue;
    const watching = rules.filter((r) => watches(r, budget));
    if (watching.length === 0) continue;
    const window = alertWindow(budget, at);
    const w = resolveWindow(budget.config.window, at);
    const keys = lineKeys(prefix, budget.config.id, c.subject, w.readStarts, w.start);
    out.push({
      key: `${budget.config.id}|${keyPart(c.subject)}|${window.tag}`,
      budget,
      subject: c.subject,
      window,
      readKeys: keys.readKeys,
      reservedKey: keys.reservedKey,
      rules: watching,
      requestId: e['request.id'],
      policyVersion: e['policy.version'],
    });
  }
  return out;
}

/** Whom a refusal counts for under `per`: none when the event has no such subject (a user without a team). */
function refusalSubjects(per: AlertScope, e: DecisionEvent): string[] {
  switch (per) {
    case 'user':
      if (e['user.id']) return [e['user.id']];
      return [e['auth.credential.fingerprint'] ? `unidentified:${e['auth.credential.fingerprint']}` : 'unidentified'];
    case 'team':
      return e['user.teams'] ?? [];
    case 'costCenter':
      return e['user.cost_center'] ? [e['user.cost_center']] : [];
    case 'application':
      return e['user.app'] ? [e['user.app']] : [];
    case 'global':
      return ['*'];
  }
}

/** The refusal counters this event adds one to. */
export function refusalCounts(policy: Policy, e: DecisionEvent): RefusalCount[] {
  const out: RefusalCount[] = [];
  const code = e['error.code'];
  const at = Date.parse(e.time);
  for (const rule of policy.config.alerts.refusals) {
    const counted = rule.codes ? code !== undefined && rule.codes.includes(code) : e.outcome === 'refused';
    if (!counted) continue;
    const length = (rule.window.minutes ?? 0) * MINUTE + (rule.window.hours ?? 0) * HOUR;
    const start = Math.floor(at / length) * length;
    for (const subject of refusalSubjects(rule.per, e)) {
      out.push({
        key: `refusals:${rule.id}:${keyPart(subject)}:${start}`,
        rule,
        scope: rule.per,
        subject,
        start,
        end: start + length,
        n: 1,
        requestId: e['request.id'],
        policyVersion: e['policy.version'],
      });
    }
  }
  return out;
}

/** The overruns of this event that an overrun alert watches. */
export function overrunHits(policy: Policy, e: DecisionEvent): OverrunHit[] {
  const rules = policy.config.alerts.overruns;
  const overruns = e['tollgate.overrun'];
  if (rules.length === 0 || !overruns) return [];
  const at = Date.parse(e.time);
  const out: OverrunHit[] = [];
  for (const o of overruns) {
    const budget = policy.budgets.find((b) => b.config.id === o.budget);
    if (!budget) continue;
    for (const rule of rules) {
      if (!watches(rule, budget)) continue;
      const window = alertWindow(budget, at);
      out.push({
        key: `overrun:${rule.id}:${budget.config.id}:${keyPart(o.subject)}:${window.tag}`,
        rule,
        budget,
        subject: o.subject,
        window,
        amount: o.amount,
        requestId: e['request.id'],
        policyVersion: e['policy.version'],
      });
    }
  }
  return out;
}

/** The mark of one threshold of a budget alert on a line, in a window. */
export function thresholdKey(rule: BudgetAlertConfig, check: BudgetCheck, threshold: number): string {
  return `budget:${rule.id}:${check.budget.config.id}:${keyPart(check.subject)}:${check.window.tag}:${threshold}`;
}
