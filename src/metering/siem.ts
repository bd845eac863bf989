/**
 * Decision events to a SIEM over the Splunk HTTP Event Collector protocol: POST
 * `/services/collector/event` with `Authorization: Splunk <token>` and a body of JSON objects
 * `{time, host, source, sourcetype, event}` written one after another (newline-separated).
 *
 * `emit` only appends to a bounded in-memory buffer, so the call path never waits on the SIEM and
 * the ledger never depends on it. Batches leave when `batchSize` events are waiting or every
 * `flushIntervalMs`, one request at a time so events arrive in order. A failed batch (network
 * error, timeout, 408, 429, 5xx, or 401/403 while a token is being fixed) is retried with
 * exponential backoff (or after what a Retry-After asks, up to `maxBackoffMs`) until it is accepted.
 * A 413 (too large) sends the batch again as two halves, in order, down to single events; a 400, or
 * a 413 for one event, means Splunk will never take it, so it is dropped, counted and logged. Beyond
 * `maxBuffer` events the oldest waiting ones are dropped, counted and logged. `close` sends what is
 * left within `closeTimeoutMs`, then abandons a request still unanswered.
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
  /** How long `close` may take to send what is left; a request still unanswered then is abandoned. */
  closeTimeoutMs?: number;
  /** The policy's egress.allow at start-up: the collector must be on it (the SIEM does not follow a reload). */
  egressAllow: readonly string[];
  logger: Pick<Logger, 'warn' | 'error'>;
}

export interface SiemStats {
  delivered: number;
  /** Dropped because the buffer was full (the oldest first). */
  dropped: number;
  /** Dropped because the SIEM refused them for good (400, or 413 for a single event). */
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

/** A Retry-After in whole seconds or as an HTTP date, in ms from now; undefined when absent or unreadable. Alert delivery reads it too. */
export function retryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

type SendOutcome = { result: 'ok' | 'reject' | 'split' } | { result: 'retry'; retryAfterMs?: number };

export function splunkHecSink(opts: SplunkHecOptions): EventSink & { stats(): SiemStats; flush(): Promise<void>; close(): Promise<void> } {
  const endpoint = hecEndpoint(opts.url);
  if (!isEgressAllowed(endpoint, opts.egressAllow)) throw new Error(`SIEM host ${new URL(endpoint).host} is not on egress.allow`);
  const batchSize = opts.batchSize ?? 100;
  const maxBuffer = Math.max(opts.maxBuffer ?? 10_000, batchSize);
  const flushIntervalMs = opts.flushIntervalMs ?? 1000;
  const backoffMs = opts.backoffMs ?? 250;
  const maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  const closeTimeoutMs = opts.closeTimeoutMs ?? 5000;
  const host = opts.host ?? hostname();
  const source = opts.source ?? 'tollgate';
  const sourcetype = opts.sourcetype ?? 'tollgate:decision';

  /** Serialized HEC objects waiting to leave, oldest first. */
  let buffer: string[] = [];
  /**
   * Batches taken from the buffer and not yet accepted, oldest first: one, or the parts of one the
   * SIEM found too large. The first is the one being sent; it stays until accepted, so it is
   * neither lost nor reordered.
   */
  let inflight: string[][] = [];
  let sending: Promise<void> | undefined;
  let failures = 0;
  let retryAt = 0;
  let closed = false;
  let droppedSinceLog = 0;
  /** Aborted at the shutdown deadline: a request the SIEM does not answer does not hold shutdown. */
  const shutdown = new AbortController();
  const stats: SiemStats = { delivered: 0, dropped: 0, rejected: 0, buffered: 0, failedRequests: 0 };

  const timer = setInterval(() => void pump(), flushIntervalMs);
  timer.unref();

  const inflightEvents = () => inflight.reduce((n, b) => n + b.length, 0);

  function wrap(event: DecisionEvent): string {
    const record: Record<string, unknown> = { time: Date.parse(event.time) / 1000, host, source, sourcetype, event };
    if (opts.index) record.index = opts.index;
    return JSON.stringify(record);
  }

  async function send(batch: string[]): Promise<SendOutcome> {
    try {
      const res = await fetch(endpoint, {
        method: 'POST',
        headers: { authorization: `Splunk ${opts.token}`, 'content-type': 'application/json' },
        body: batch.join('\n'),
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(opts.requestTimeoutMs ?? 10_000), shutdown.signal]),
      });
      // The status is the answer: the body is not read, so a collector cannot hold the sink or its
      // memory by sending one that is large or never ends.
      await res.body?.cancel().catch(() => undefined);
      if (res.ok) return { result: 'ok' };
      stats.failedRequests++;
      // Too large (Splunk's max_content_length): the halves are sent instead, down to one event.
      if (res.status === 413 && batch.length > 1) return { result: 'split' };
      if (res.status === 400 || res.status === 413) {
        opts.logger.error({ event: 'siem_batch_rejected', status: res.status, events: batch.length }, 'the SIEM refused a batch of decision events; it is dropped');
        return { result: 'reject' };
      }
      opts.logger.warn({ event: 'siem_send_failed', status: res.status, events: batch.length, failures: failures + 1 }, 'SIEM send failed; will retry');
      return { result: 'retry', retryAfterMs: retryAfter(res.headers.get('retry-after')) };
    } catch (err) {
      stats.failedRequests++;
      if (!shutdown.signal.aborted) {
        opts.logger.warn({ event: 'siem_send_failed', error: (err as Error).name, events: batch.length, failures: failures + 1 }, 'SIEM unreachable; will retry');
      }
      return { result: 'retry' };
    }
  }

  /** Sends batches while there is something to send and the backoff allows; one loop at a time. */
  function pump(force = false): Promise<void> {
    if (sending) return sending;
    const run = (async () => {
      while (true) {
        if (!force && Date.now() < retryAt) return;
        if (shutdown.signal.aborted) return;
        if (inflight.length === 0) {
          if (buffer.length === 0) return;
          inflight = [buffer.slice(0, batchSize)];
          buffer = buffer.slice(inflight[0]!.length);
        }
        const batch = inflight[0]!;
        const outcome = await send(batch);
        if (outcome.result === 'retry') {
          failures++;
          // A collector that says how long to leave it alone is believed, within maxBackoffMs.
          const wait = Math.max(backoffMs * 2 ** (failures - 1), outcome.retryAfterMs ?? 0);
          retryAt = Date.now() + Math.min(maxBackoffMs, wait);
          if (!closed) setTimeout(() => void pump(), retryAt - Date.now()).unref();
          return;
        }
        if (outcome.result === 'split') {
          const half = Math.ceil(batch.length / 2);
          inflight.splice(0, 1, batch.slice(0, half), batch.slice(half));
          continue;
        }
        if (outcome.result === 'ok') stats.delivered += batch.length;
        else stats.rejected += batch.length;
        inflight.shift();
        failures = 0;
        retryAt = 0;
        reportDrops();
        if (!force && inflight.length === 0 && buffer.length < batchSize) return;
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
      const over = buffer.length + inflightEvents() - maxBuffer;
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
      return { ...stats, buffered: buffer.length + inflightEvents() };
    },
    async close() {
      closed = true;
      clearInterval(timer);
      const deadline = Date.now() + closeTimeoutMs;
      const stop = setTimeout(() => shutdown.abort(), closeTimeoutMs);
      while ((buffer.length > 0 || inflight.length > 0) && Date.now() < deadline) {
        await pump(true);
        if (buffer.length > 0 || inflight.length > 0) await new Promise((r) => setTimeout(r, Math.min(backoffMs, Math.max(0, deadline - Date.now()))));
      }
      clearTimeout(stop);
      shutdown.abort();
      reportDrops();
      const left = buffer.length + inflightEvents();
      if (left > 0) opts.logger.error({ event: 'siem_undelivered_at_shutdown', events: left }, 'decision events not delivered to the SIEM before shutdown');
    },
  };
}
