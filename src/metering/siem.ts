/**
 * Decision events to a SIEM over the Splunk HTTP Event Collector protocol: POST
 * `/services/collector/event` with `Authorization: Splunk <token>` and a body of JSON objects
 * `{time, host, source, sourcetype, event}` written one after another (newline-separated).
 *
 * `emit` only appends to a bounded in-memory buffer, so the call path never waits on the SIEM and
 * the ledger never depends on it. Batches leave when `batchSize` events are waiting or every
 * `flushIntervalMs`, one request at a time so events arrive in order. A failed batch (network
 * error, timeout, 408, 429, 5xx, or 401/403 while a token is being fixed) is retried with
 * exponential backoff until it is accepted; a 400 or 413 means Splunk will never take it, so it is
 * dropped and logged. Beyond `maxBuffer` events the oldest waiting ones are dropped, counted and
 * logged. `close` sends what is left, within a deadline.
 *
 * Delivery is at least once: if Splunk indexes a batch but the answer is lost, the batch is sent again.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { isEgressAllowed } from '../providers/egress.js';
import type { DecisionEvent, EventSink } from './events.js';

export interface SplunkHecOptions {
  url: string;
  token: string;
  batchSize?: number;
  flushIntervalMs?: number;
  maxBuffer?: number;
  source?: string;
  sourcetype?: string;
  index?: string;
  host?: string;
  /** First retry delay; doubles per failure up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  requestTimeoutMs?: number;
  /** The policy's egress.allow: checked before every request leaves. */
  egressAllow: readonly string[];
  logger: Pick<Logger, 'warn' | 'error'>;
}

export interface SiemStats {
  delivered: number;
  /** Dropped because the buffer was full (the oldest first). */
  dropped: number;
  /** Dropped because the SIEM refused them for good (400, 413). */
  rejected: number;
  buffered: number;
  failedRequests: number;
}

/** The event endpoint for a collector URL given as a base (`https://splunk:8088`) or in full. */
export function hecEndpoint(url: string): string {
  const u = new URL(url);
  const path = u.pathname.replace(/\/+$/, '');
  if (path.endsWith('/services/collector/event')) u.pathname = path;
  else if (path.endsWith('/services/collector')) u.pathname = `${path}/event`;
  else u.pathname = `${path}/services/collector/event`;
  return u.toString();
}

/** Statuses after which the same batch will never be accepted. */
const permanent = (status: number) => status === 400 || status === 413;

export function splunkHecSink(opts: SplunkHecOptions): EventSink & { stats(): SiemStats; flush(): Promise<void>; close(): Promise<void> } {
  const endpoint = hecEndpoint(opts.url);
  if (!isEgressAllowed(endpoint, opts.egressAllow)) throw new Error(`SIEM host ${new URL(endpoint).host} is not on egress.allow`);
  const batchSize = opts.batchSize ?? 100;
  const maxBuffer = Math.max(opts.maxBuffer ?? 10_000, batchSize);
  const flushIntervalMs = opts.flushIntervalMs ?? 1000;
  const backoffMs = opts.backoffMs ?? 250;
  const maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  const host = opts.host ?? hostname();
  const source = opts.source ?? 'tollgate';
  const sourcetype = opts.sourcetype ?? 'tollgate:decision';

  /** Serialized HEC objects waiting to leave, oldest first. */
  let buffer: string[] = [];
  /** The batch being sent; it stays here until accepted, so it is neither lost nor reordered. */
  let inflight: string[] = [];
  let sending: Promise<void> | undefined;
  let failures = 0;
  let retryAt = 0;
  let closed = false;
  let droppedSinceLog = 0;
  const stats: SiemStats = { delivered: 0, dropped: 0, rejected: 0, buffered: 0, failedRequests: 0 };

  const timer = setInterval(() => void pump(), flushIntervalMs);
  timer.unref();

  function wrap(event: DecisionEvent): string {
    const record: Record<string, unknown> = { time: Date.parse(event.time) / 1000, host, source, sourcetype, event };
    if (opts.index) record.index = opts.index;
    return JSON.stringify(record);
  }

  async function send(batch: string[]): Promise<'ok' | 'retry' | 'reject'> {
    try {
      const res = await fetch(endpoint, {
        method: 'POST',
        headers: { authorization: `Splunk ${opts.token}`, 'content-type': 'application/json' },
        body: batch.join('\n'),
        redirect: 'manual',
        signal: AbortSignal.timeout(opts.requestTimeoutMs ?? 10_000),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) return 'ok';
      stats.failedRequests++;
      if (permanent(res.status)) {
        opts.logger.error({ event: 'siem_batch_rejected', status: res.status, events: batch.length }, 'the SIEM refused a batch of decision events; it is dropped');
        return 'reject';
      }
      opts.logger.warn({ event: 'siem_send_failed', status: res.status, events: batch.length, failures: failures + 1 }, 'SIEM send failed; will retry');
      return 'retry';
    } catch (err) {
      stats.failedRequests++;
      opts.logger.warn({ event: 'siem_send_failed', error: (err as Error).name, events: batch.length, failures: failures + 1 }, 'SIEM unreachable; will retry');
      return 'retry';
    }
  }

  /** Sends batches while there is something to send and the backoff allows; one loop at a time. */
  function pump(force = false): Promise<void> {
    if (sending) return sending;
    const run = (async () => {
      while (true) {
        if (!force && Date.now() < retryAt) return;
        if (inflight.length === 0) {
          if (buffer.length === 0) return;
          inflight = buffer.slice(0, batchSize);
          buffer = buffer.slice(inflight.length);
        }
        const outcome = await send(inflight);
        if (outcome === 'retry') {
          failures++;
          retryAt = Date.now() + Math.min(maxBackoffMs, backoffMs * 2 ** (failures - 1));
          if (!closed) setTimeout(() => void pump(), retryAt - Date.now()).unref();
          return;
        }
        if (outcome === 'ok') stats.delivered += inflight.length;
        else stats.rejected += inflight.length;
        inflight = [];
        failures = 0;
        retryAt = 0;
        reportDrops();
        if (!force && buffer.length < batchSize) return;
      }
    })();
    // Cleared after the loop ends (which may be before `run` is even assigned when it ends at once).
    sending = run.finally(() => {
      sending = undefined;
    });
    return sending;
  }

  function reportDrops(): void {
    if (droppedSinceLog === 0) return;
    opts.logger.error(
      { event: 'siem_events_dropped', dropped: droppedSinceLog, droppedTotal: stats.dropped, maxBuffer },
      'the SIEM buffer was full; the oldest decision events were dropped (they are still in the event log)',
    );
    droppedSinceLog = 0;
  }

  return {
    emit(event) {
      if (closed) return;
      buffer.push(wrap(event));
      const over = buffer.length + inflight.length - maxBuffer;
      if (over > 0) {
        // The oldest events not already in flight go first.
        const drop = Math.min(over, buffer.length);
        buffer = buffer.slice(drop);
        if (droppedSinceLog === 0) {
          opts.logger.warn({ event: 'siem_buffer_full', maxBuffer }, 'the SIEM buffer is full; dropping the oldest decision events');
        }
        stats.dropped += drop;
        droppedSinceLog += drop;
      }
      if (buffer.length >= batchSize) setImmediate(() => void pump());
    },
    /** Sends everything buffered now, ignoring the backoff once; resolves when the loop stops. */
    async flush() {
      await pump(true);
    },
    stats() {
      return { ...stats, buffered: buffer.length + inflight.length };
    },
    async close() {
      closed = true;
      clearInterval(timer);
      const deadline = Date.now() + 5000;
      while ((buffer.length > 0 || inflight.length > 0) && Date.now() < deadline) {
        await pump(true);
        if (buffer.length > 0 || inflight.length > 0) await new Promise((r) => setTimeout(r, Math.min(backoffMs, Math.max(0, deadline - Date.now()))));
      }
      reportDrops();
      const left = buffer.length + inflight.length;
      if (left > 0) opts.logger.error({ event: 'siem_undelivered_at_shutdown', events: left }, 'decision events not delivered to the SIEM before shutdown');
    },
  };
}
