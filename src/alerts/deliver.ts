/**
 * Sends fired alerts to webhooks: one POST per alert and webhook, retried with exponential backoff
 * (jittered, bounded by `attempts`) on a network error, a timeout, 408, 429 or 5xx, waiting at least
 * what a Retry-After asks and at most `maxBackoffMs`; any other answer but 2xx, a redirect included
 * (never followed), fails at once (it will not change by asking again). A host off the
 * egress allowlist is never contacted. Whatever the outcome, the journal gets an `alert` entry
 * saying `delivered` or `failed` (with the tries made and the last error).
 *
 * Deliveries run in the background, never on a call's path; at most `maxPending` wait or retry at
 * once, and one more is journaled as failed at once instead of queued.
 */
import type { Logger } from 'pino';
import type { AlertsConfig, WebhookConfig } from '../policy/alertsConfig.js';
import { isEgressAllowed } from '../providers/egress.js';
import { retryAfter } from '../metering/siem.js';
import { webhookBody, type Alert } from './alert.js';

/** Where deliveries journal their outcome. */
export type AlertNote = (note: Record<string, unknown>) => Promise<void>;

export interface DelivererOptions {
  /** The delivery settings and egress allowlist in force (read at each try, so a reload applies). */
  settings: () => { delivery: AlertsConfig['delivery']; egressAllow: readonly string[] };
  note: AlertNote;
  logger: Pick<Logger, 'warn' | 'error'>;
  fetch?: typeof fetch;
}

export interface DeliveryStats {
  delivered: number;
  failed: number;
  pending: number;
}

type TryOutcome = { ok: true; status: number } | { ok: false; retry: boolean; error: string; status?: number; retryAfterMs?: number };

/** Statuses worth asking again: the receiver is busy or broken now, not refusing this alert. */
const retryable = (status: number) => status === 408 || status === 429 || status >= 500;

/**
 * What went wrong on the network, from the error fetch wraps it in (`fetch failed` alone says
 * nothing): the cause's code and message, e.g. `connect ECONNREFUSED 10.0.0.7:443`. It names a host
 * and port at most, never the URL's path (a Slack webhook's path is its secret).
 */
function networkError(e: Error): string {
  const cause = e.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = typeof cause?.message === 'string' && cause.message ? cause.message : typeof cause?.code === 'string' ? cause.code : undefined;
  return detail ? `${e.name}: ${e.message} (${detail})` : `${e.name}: ${e.message}`;
}

export class Deliverer {
  private readonly running = new Set<Promise<void>>();
  private readonly waits = new Set<() => void>();
  private closing = false;
  private readonly counts = { delivered: 0, failed: 0 };

  constructor(private readonly opts: DelivererOptions) {}

  /** Starts delivering `alert` to `webhook` in the background. */
  send(alert: Alert, webhook: WebhookConfig): void {
    const { delivery } = this.opts.settings();
    if (this.closing || this.running.size >= delivery.maxPending) {
      const error = this.closing ? 'the gateway was shutting down' : `more than ${delivery.maxPending} deliveries were pending (alerts.delivery.maxPending)`;
      this.track(this.finish(alert, webhook, { ok: false, retry: false, error }, 0));
      return;
    }
    this.track(this.run(alert, webhook));
  }

  stats(): DeliveryStats {
    return { ...this.counts, pending: this.running.size };
  }

  /** Resolves once every delivery started so far has finished (delivered or failed, and journaled). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
  }

  /** Stops waiting between tries: a delivery still retrying makes its current try and then fails as shut down. */
  async close(): Promise<void> {
    this.closing = true;
    for (const wake of this.waits) wake();
    await this.idle();
  }

  private track(work: Promise<void>): void {
    const done = work.catch((err: unknown) => this.opts.logger.error({ err, event: 'alert_delivery_crashed' }, 'an alert delivery failed unexpectedly'));
    this.running.add(done);
    void done.finally(() => this.running.delete(done));
  }

  private async run(alert: Alert, webhook: WebhookConfig): Promise<void> {
    let last: TryOutcome = { ok: false, retry: false, error: 'not tried' };
    let tries = 0;
    for (;;) {
      const { delivery, egressAllow } = this.opts.settings();
      tries += 1;
      last = isEgressAllowed(webhook.url, egressAllow)
        ? await this.attempt(alert, webhook, delivery.timeoutMs)
        : { ok: false, retry: false, error: `EGRESS_DENIED: ${new URL(webhook.url).host} is not on egress.allow; not contacted` };
      if (last.ok || !last.retry || tries >= delivery.attempts || this.closing) break;
      // A receiver that says how long to leave it alone (429 or 503 with Retry-After) is believed,
      // within maxBackoffMs: a retry is never further off than the policy allows.
      const backoff = Math.round(delivery.backoffMs * 2 ** (tries - 1) * (1 + Math.random() * 0.2));
      await this.wait(Math.min(delivery.maxBackoffMs, Math.max(backoff, last.retryAfterMs ?? 0)));
      if (this.closing) {
        last = { ok: false, retry: false, error: `the gateway shut down while retrying (last: ${last.error})` };
        break;
      }
    }
    await this.finish(alert, webhook, last, tries);
  }

  private async attempt(alert: Alert, webhook: WebhookConfig, timeoutMs: number): Promise<TryOutcome> {
    try {
      const res = await (this.opts.fetch ?? fetch)(webhook.url, {
        method: 'POST',
        headers: { ...webhook.headers, 'content-type': 'application/json', 'x-tollgate-alert-id': alert.id },
        body: webhookBody(alert, webhook.format),
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
      // The status is the answer: the body is not read, so a receiver cannot hold a delivery or its
      // memory by sending one that is large or never ends.
      await res.body?.cancel().catch(() => undefined);
      if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status };
      const retryAfterMs = retryAfter(res.headers.get('retry-after'));
      return { ok: false, retry: retryable(res.status), error: `HTTP ${res.status}`, status: res.status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
    } catch (err) {
      const e = err as Error;
      return { ok: false, retry: true, error: e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : networkError(e) };
    }
  }

  private async finish(alert: Alert, webhook: WebhookConfig, outcome: TryOutcome, tries: number): Promise<void> {
    if (outcome.ok) this.counts.delivered += 1;
    else {
      this.counts.failed += 1;
      this.opts.logger.warn({ event: 'alert_delivery_failed', alertId: alert.id, webhook: webhook.id, tries, error: outcome.error }, 'an alert could not be delivered');
    }
    const note = outcome.ok
      ? { id: alert.id, status: 'delivered', webhook: webhook.id, attempts: tries, httpStatus: outcome.status }
      : { id: alert.id, status: 'failed', webhook: webhook.id, attempts: tries, error: outcome.error, httpStatus: outcome.status };
    try {
      await this.opts.note(note);
    } catch (err) {
      this.opts.logger.error({ err, event: 'alert_note_failed', alertId: alert.id, webhook: webhook.id, status: note.status }, 'what became of an alert could not be journaled');
    }
  }

  private wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waits.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waits.add(wake);
    });
  }
}
