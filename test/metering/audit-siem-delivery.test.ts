/**
 * The Splunk HEC sink against collectors that misbehave, on loopback: one that finds a batch too
 * large (413), one that asks to be left alone (429 with Retry-After), one that answers 200 and
 * never ends its body, and one that never answers while the gateway shuts down.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { DecisionEvent } from '../../src/metering/events.js';
import { splunkHecSink } from '../../src/metering/siem.js';

interface Request {
  at: number;
  ids: string[];
}

/** A collector answering each request with `answer(request, res)`; it keeps the request ids of every request it got, in order. */
async function startCollector(answer: (r: Request, res: ServerResponse) => void) {
  const requests: Request[] = [];
  const accepted: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const lines = Buffer.concat(chunks).toString('utf8').split('\n');
      const r = { at: Date.now(), ids: lines.map((l) => (JSON.parse(l) as { event: DecisionEvent }).event['request.id']) };
      requests.push(r);
      res.on('finish', () => {
        if (res.statusCode === 200) accepted.push(...r.ids);
      });
      answer(r, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    accepted,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function event(n: number): DecisionEvent {
  return {
    event: 'tollgate.decision',
    'request.id': `req-${n}`,
    time: new Date(Date.UTC(2026, 10, 25, 10, 0, n)).toISOString(),
    transport: 'http',
    effect: 'allow',
    outcome: 'success',
    'policy.version': 'v1',
    'gen_ai.operation.name': 'chat',
    'gen_ai.request.max_tokens': 10,
    'gen_ai.usage.input_tokens': 1,
    'gen_ai.usage.output_tokens': 1,
    'tollgate.estimated_input_tokens': 1,
    'tollgate.cost_usd': 0,
    'tollgate.attempts': [],
    'tollgate.latency_ms': 0,
  };
}

function captureLog() {
  const records: Record<string, unknown>[] = [];
  return { records, warn: (f: Record<string, unknown>) => void records.push(f), error: (f: Record<string, unknown>) => void records.push(f) };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `req-${from + i}`);

describe('Splunk HEC sink against a collector that misbehaves', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('splits a batch the collector finds too large (413) and delivers every event once, in order', async () => {
    const hec = await startCollector((r, res) => res.writeHead(r.ids.length > 2 ? 413 : 200).end());
    cleanup.push(hec.close);
    const log = captureLog();
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 8, flushIntervalMs: 60_000, egressAllow: ['127.0.0.1'], logger: log });
    cleanup.push(() => sink.close());
    for (let i = 0; i < 8; i++) sink.emit(event(i));
    // The collector holds a batch before the sink has read its answer: wait for both sides.
    await until(() => hec.accepted.length === 8 && sink.stats().delivered === 8);
    expect(hec.accepted).toEqual(ids(0, 8));
    expect(hec.requests.map((r) => r.ids.length)).toEqual([8, 4, 2, 2, 4, 2, 2]);
    expect(sink.stats()).toMatchObject({ delivered: 8, rejected: 0, dropped: 0, buffered: 0 });
    expect(log.records.filter((r) => r.event === 'siem_batch_rejected')).toEqual([]);
  });

  it('drops, counts and logs only an event too large on its own, and delivers the others in order', async () => {
    const hec = await startCollector((r, res) => res.writeHead(r.ids.includes('req-2') ? 413 : 200).end());
    cleanup.push(hec.close);
    const log = captureLog();
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 4, flushIntervalMs: 60_000, egressAllow: ['127.0.0.1'], logger: log });
    cleanup.push(() => sink.close());
    for (let i = 0; i < 4; i++) sink.emit(event(i));
    await until(() => sink.stats().delivered + sink.stats().rejected === 4);
    expect(hec.accepted).toEqual(['req-0', 'req-1', 'req-3']);
    expect(sink.stats()).toMatchObject({ delivered: 3, rejected: 1, buffered: 0 });
    expect(log.records.filter((r) => r.event === 'siem_batch_rejected')).toEqual([{ event: 'siem_batch_rejected', status: 413, events: 1 }]);
  });

  it('waits as long as a 429 asks (Retry-After) before sending the batch again', async () => {
    let n = 0;
    const hec = await startCollector((_r, res) => (n++ === 0 ? res.writeHead(429, { 'retry-after': '1' }).end() : res.writeHead(200).end()));
    cleanup.push(hec.close);
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 1, flushIntervalMs: 5, backoffMs: 5, egressAllow: ['127.0.0.1'], logger: captureLog() });
    cleanup.push(() => sink.close());
    sink.emit(event(0));
    await until(() => hec.accepted.length === 1);
    expect(hec.requests).toHaveLength(2);
    expect(hec.requests[1]!.at - hec.requests[0]!.at).toBeGreaterThanOrEqual(990);
  });

  it('takes a 200 as delivered without reading a body that never ends', { timeout: 5000 }, async () => {
    const hec = await startCollector((_r, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = ' '.repeat(64 * 1024);
      const more = () => {
        if (!res.destroyed) res.write(chunk, () => setImmediate(more));
      };
      more();
    });
    cleanup.push(hec.close);
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 1, flushIntervalMs: 60_000, requestTimeoutMs: 60_000, egressAllow: ['127.0.0.1'], logger: captureLog() });
    cleanup.push(() => sink.close());
    sink.emit(event(0));
    await until(() => sink.stats().delivered === 1);
    expect(sink.stats()).toMatchObject({ delivered: 1, buffered: 0, failedRequests: 0 });
  });

  it('gives up at its shutdown deadline on a collector that never answers, and says how many events were left', async () => {
    const hec = await startCollector(() => {});
    cleanup.push(hec.close);
    const log = captureLog();
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 2, flushIntervalMs: 60_000, requestTimeoutMs: 60_000, closeTimeoutMs: 200, egressAllow: ['127.0.0.1'], logger: log });
    for (let i = 0; i < 3; i++) sink.emit(event(i));
    await until(() => hec.requests.length === 1);
    const started = Date.now();
    await sink.close();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(log.records.filter((r) => r.event === 'siem_undelivered_at_shutdown')).toEqual([{ event: 'siem_undelivered_at_shutdown', events: 3 }]);
  });
});
