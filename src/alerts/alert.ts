/**
 * An alert as webhooks receive it, in tollgate's generic JSON format (the object itself) or as a
 * Slack incoming-webhook message (`text` for notifications, `blocks` for the message). The same
 * object, with `status: fired`, is the journal's `alert` entry.
 */

export type AlertKind = 'budget_threshold' | 'refusal_spike' | 'budget_overrun';
export type AlertScope = 'user' | 'team' | 'costCenter' | 'application' | 'global';

export interface Alert {
  type: 'tollgate.alert';
  /** Stable per crossing: the once-only mark it took (kind, alert, subject, window, threshold). */
  id: string;
  kind: AlertKind;
  /** The id of the alert in the policy that raised it. */
  alert: string;
  /** ISO time it fired. */
  firedAt: string;
  /** One line, for people. */
  summary: string;
  /** Whom it is about: a budget's subject, or whom refusals were counted for. */
  subject: { scope: AlertScope; id: string };
  /** The budget window, or the refusal-counting window, it fired in (ISO). */
  window: { start: string; end: string };
  /** Budget alerts: the budget's state when it fired; usd amounts in dollars. */
  budget?: { id: string; unit: 'tokens' | 'usd'; limit: number; used: number; percent: number };
  /** Budget thresholds: the percentage crossed. */
  threshold?: number;
  /** Refusal spikes: how many refusals were counted in the window when it fired, and the alert's count. */
  refusals?: { count: number; threshold: number; codes?: string[] };
  /** Overruns: the excess charged beyond the call's reservation. */
  overrun?: { amount: number; unit: 'tokens' | 'usd' };
  /** The call whose decision event raised it. */
  requestId?: string;
  policyVersion: string;
}

/** A Slack incoming-webhook payload: `text` is the notification and fallback, `blocks` the message. */
export interface SlackMessage {
  text: string;
  blocks: Record<string, unknown>[];
}

const TITLES: Record<AlertKind, string> = {
  budget_threshold: 'Budget threshold crossed',
  refusal_spike: 'Refusal spike',
  budget_overrun: 'Budget overrun',
};

/** Slack reads `&`, `<` and `>` as markup (`<!channel>` would notify a whole channel): escape them. */
export function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** The alert as a Slack message: a header, the summary, the facts as fields, and its id and time as context. */
export function slackMessage(a: Alert): SlackMessage {
  const fields: string[] = [`*Subject*\n${a.subject.scope} ${a.subject.id}`, `*Window*\n${a.window.start} – ${a.window.end}`];
  if (a.budget) fields.push(`*Budget*\n${a.budget.id}: ${formatAmount(a.budget.used, a.budget.unit)} of ${formatAmount(a.budget.limit, a.budget.unit)} (${a.budget.percent}%)`);
  if (a.threshold !== undefined) fields.push(`*Threshold*\n${a.threshold}%`);
  if (a.refusals) fields.push(`*Refusals*\n${a.refusals.count} (alert at ${a.refusals.threshold})`);
  if (a.overrun) fields.push(`*Overrun*\n${formatAmount(a.overrun.amount, a.overrun.unit)}`);
  return {
    text: slackEscape(`${TITLES[a.kind]}: ${a.summary}`),
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: `tollgate: ${TITLES[a.kind]}` } },
      { type: 'section', text: { type: 'mrkdwn', text: slackEscape(a.summary) } },
      { type: 'section', fields: fields.map((f) => ({ type: 'mrkdwn', text: slackEscape(f) })) },
      { type: 'context', elements: [{ type: 'mrkdwn', text: slackEscape(`alert ${a.alert} · ${a.id} · fired ${a.firedAt}${a.requestId ? ` · request ${a.requestId}` : ''}`) }] },
    ],
  };
}

/** An amount in a budget's unit for people: `1,234 tokens` or `$12.34`. */
export function formatAmount(amount: number, unit: 'tokens' | 'usd'): string {
  return unit === 'usd' ? `$${amount.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 6 })}` : `${amount.toLocaleString('en-US')} tokens`;
}

/** The request body a webhook of `format` receives for `alert`. */
export function webhookBody(alert: Alert, format: 'json' | 'slack'): string {
  return JSON.stringify(format === 'slack' ? slackMessage(alert) : alert);
}
