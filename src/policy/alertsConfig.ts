/**
 * The policy's `alerts` section: where alerts go (webhooks, in a generic JSON or a Slack-compatible
 * format) and what raises them (budget thresholds, refusal spikes, overruns), with the load-time
 * checks zod alone cannot make. docs/alerts.md is the user's description; src/alerts runs them.
 */
import { z } from 'zod';
import { isEgressAllowed } from '../providers/egress.js';

const id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, 'ids use letters, digits and _ . : -');
const positiveInt = z.number().int().positive();

/** A percentage of a budget's limit: `80`, or `"80%"`; above 100 is allowed (an overspend alert). */
const threshold = z.union([
  z.number().positive().max(1000),
  z.string().regex(/^\d+(\.\d+)?%$/, 'a percentage like "80%"').transform((s) => Number(s.slice(0, -1))),
]);

const webhookSchema = z
  .object({
    id,
    /** Where alerts are POSTed. Its host must be on egress.allow. */
    url: z.url({ protocol: /^https?$/ }),
    /** `json`: tollgate's own alert object; `slack`: a Slack incoming-webhook message (`text` and `blocks`). */
    format: z.enum(['json', 'slack']).default('json'),
    /** Extra request headers, e.g. an Authorization bound from a secret. */
    headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/, 'a header name'), z.string()).default({}),
  })
  .strict();
export type WebhookConfig = z.infer<typeof webhookSchema>;

const notify = z.array(id).min(1);

const budgetAlertSchema = z
  .object({
    id,
    description: z.string().optional(),
    /** The budgets watched; without it (and without scope), every budget. */
    budgets: z.array(id).min(1).optional(),
    /** Or every budget of a scope. */
    scope: z.enum(['user', 'team', 'costCenter', 'global']).optional(),
    /** Percentages of the limit; each fires once per budget window and subject when usage reaches it. */
    thresholds: z.array(threshold).min(1).default([50, 80, 100]),
    notify,
  })
  .strict();
export type BudgetAlertConfig = z.infer<typeof budgetAlertSchema>;

const alertWindow = z
  .object({ minutes: positiveInt.optional(), hours: positiveInt.optional() })
  .strict()
  .refine((w) => (w.minutes ?? 0) + (w.hours ?? 0) > 0, 'give minutes or hours');

const refusalAlertSchema = z
  .object({
    id,
    description: z.string().optional(),
    /** Error codes counted; without it, every refusal (decision events with outcome `refused`). */
    codes: z.array(z.string().regex(/^[A-Z][A-Z0-9_]*$/, 'an error code such as BUDGET_EXHAUSTED')).min(1).optional(),
    /** Whom refusals are counted for: each user (or unidentified credential), team, cost centre, or all together. */
    per: z.enum(['user', 'team', 'costCenter', 'global']).default('user'),
    /** Fires when a subject's refusals in one window reach this many. */
    count: positiveInt,
    /** Fixed windows, aligned to the epoch (UTC): 10 minutes are :00-:10, :10-:20, ... */
    window: alertWindow,
    notify,
  })
  .strict();
export type RefusalAlertConfig = z.infer<typeof refusalAlertSchema>;

const overrunAlertSchema = z
  .object({
    id,
    description: z.string().optional(),
    /** The budgets watched; without it, every budget. */
    budgets: z.array(id).min(1).optional(),
    notify,
  })
  .strict();
export type OverrunAlertConfig = z.infer<typeof overrunAlertSchema>;

const DELIVERY_DEFAULTS = { attempts: 5, backoffMs: 1000, maxBackoffMs: 60_000, timeoutMs: 5000, maxQueue: 10_000, maxPending: 1000 };

const deliverySchema = z
  .object({
    /** Tries per alert and webhook, the first included; then the alert is journaled as failed. */
    attempts: z.number().int().min(1).max(20).default(DELIVERY_DEFAULTS.attempts),
    /** Wait before the second try; doubles per try (with up to 20 % jitter) up to maxBackoffMs. */
    backoffMs: positiveInt.default(DELIVERY_DEFAULTS.backoffMs),
    maxBackoffMs: positiveInt.default(DELIVERY_DEFAULTS.maxBackoffMs),
    /** A webhook request without an answer after this long counts as a failed try. */
    timeoutMs: positiveInt.default(DELIVERY_DEFAULTS.timeoutMs),
    /** Decision events waiting to be evaluated; beyond it new ones are not evaluated (counted and logged). */
    maxQueue: positiveInt.default(DELIVERY_DEFAULTS.maxQueue),
    /** Deliveries waiting or being retried; beyond it a fired alert is journaled as failed at once. */
    maxPending: positiveInt.default(DELIVERY_DEFAULTS.maxPending),
  })
  .strict();

export const alertsSchema = z
  .object({
    webhooks: z.array(webhookSchema).default([]),
    budgets: z.array(budgetAlertSchema).default([]),
    refusals: z.array(refusalAlertSchema).default([]),
    overruns: z.array(overrunAlertSchema).default([]),
    delivery: deliverySchema.default(DELIVERY_DEFAULTS),
  })
  .strict();
export type AlertsConfig = z.infer<typeof alertsSchema>;

export const DEFAULT_ALERTS: AlertsConfig = { webhooks: [], budgets: [], refusals: [], overruns: [], delivery: DELIVERY_DEFAULTS };

/**
 * Reports each problem through `at(path, message)`: a webhook whose host is not on egress.allow (it
 * is never contacted), an alert naming a webhook or budget that does not exist, and duplicate ids.
 */
export function checkAlerts(
  alerts: AlertsConfig,
  ctx: { egressAllow: readonly string[]; budgetIds: ReadonlySet<string> },
  at: (path: readonly PropertyKey[], message: string) => void,
): void {
  const webhooks = new Set<string>();
  alerts.webhooks.forEach((w, i) => {
    if (webhooks.has(w.id)) at(['alerts', 'webhooks', i, 'id'], `duplicate webhook id "${w.id}"`);
    webhooks.add(w.id);
    if (!isEgressAllowed(w.url, ctx.egressAllow)) {
      at(['alerts', 'webhooks', i, 'url'], `${new URL(w.url).host} is not on egress.allow; add it there to let alerts leave (it is never contacted otherwise)`);
    }
  });
  const ids = new Set<string>();
  for (const kind of ['budgets', 'refusals', 'overruns'] as const) {
    alerts[kind].forEach((a, i) => {
      if (ids.has(a.id)) at(['alerts', kind, i, 'id'], `duplicate alert id "${a.id}"`);
      ids.add(a.id);
      a.notify.forEach((n, j) => {
        if (!webhooks.has(n)) at(['alerts', kind, i, 'notify', j], `webhook "${n}" is not declared under alerts.webhooks`);
      });
      if ('budgets' in a && a.budgets) {
        a.budgets.forEach((b, j) => {
          if (!ctx.budgetIds.has(b)) at(['alerts', kind, i, 'budgets', j], `budget "${b}" is not declared under budgets`);
        });
      }
    });
  }
}
