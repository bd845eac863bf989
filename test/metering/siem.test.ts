/**
 * The Splunk HEC sink against a local collector on loopback: batches in order, retried through an
 * outage without loss or duplicates, a bounded buffer that drops the oldest (counted and logged),
 * a flush on shutdown, and a gateway whose calls and ledger do not wait on the SIEM.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { DecisionEvent } from '../../src/metering/events.js';
import { hecEndpoint, splunkHecSink } from '../../src/metering/siem.js';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

interface Received {
  path: string;
  authorization: string | undefined;
  lines: { time: number; host: string; source: string; sourcetype: string; event: DecisionEvent }[];
}

/** A collector that answers `failFirst` requests with 500, then 200 `{"text":"Success","code":0}`. */
async function startCollector(opts: { failFirst?: number } = {}) {
  let failures = opts.failFirst ?? 0;
  const accepted: Received[] = [];
  let requests = 0;
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests++;
      if (failures > 0) {
        failures--;
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"text":"Internal server error","code":8}');
        return;
      }
      const body = Buffer.concat(chunks).toString();
      accepted.push({ path: req.url ?? '', authorization: req.headers.authorization, lines: body.split('\n').map((l) => JSON.parse(l)) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"text":"Success","code":0}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted,
    requests: () => requests,
    ids: () => accepted.flatMap((a) => a.lines.map((l) => l.event['request.id'])),
    recover: () => {
      failures = 0;
    },
    failAlways: () => {
      failures = Number.POSITIVE_INFINITY;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
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
  const records: { level: 'warn' | 'error'; fields: Record<string, unknown> }[] = [];
  return {
    records,
    warn: (fields: Record<string, unknown>) => void records.push({ level: 'warn', fields }),
    error: (fields: Record<string, unknown>) => void records.push({ level: 'error', fields }),
  };
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `req-${from + i}`);

describe('Splunk HEC sink', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('delivers every event exactly once and in order through a collector that fails, then recovers', async () => {
    const hec = await startCollector({ failFirst: 3 });
    cleanup.push(hec.close);
    const log = captureLog();
    const sink = splunkHecSink({ url: hec.url, token: 'hec-token-1', batchSize: 3, flushIntervalMs: 20, backoffMs: 10, maxBackoffMs: 40, egressAllow: ['127.0.0.1'], host: 'gw-1', logger: log });
    cleanup.push(() => sink.close());
    for (let i = 0; i < 10; i++) sink.emit(event(i));
    await until(() => hec.ids().length === 10);
    // Once the sink has closed it sends nothing more, so what the collector holds is final.
    await sink.close();
    expect(hec.ids()).toEqual(range(0, 10));
    expect(hec.accepted.map((a) => a.lines.length)).toEqual([3, 3, 3, 1]);
    expect(hec.requests()).toBe(7);
    expect(sink.stats()).toEqual({ delivered: 10, dropped: 0, rejected: 0, buffered: 0, failedRequests: 3 });
    expect(log.records.filter((r) => r.fields.event === 'siem_send_failed').map((r) => r.fields.status)).toEqual([500, 500, 500]);
    const first = hec.accepted[0]!;
    expect(first.path).toBe('/services/collector/event');
    expect(first.authorization).toBe('Splunk hec-token-1');
    expect(first.lines[0]).toEqual({ time: 1795600800, host: 'gw-1', source: 'tollgate', sourcetype: 'tollgate:decision', event: event(0) });
  });

  it('drops the oldest events beyond maxBuffer, counts them and says so in the log', async () => {
    const hec = await startCollector();
    cleanup.push(hec.close);
    hec.failAlways();
    const log = captureLog();
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 2, flushIntervalMs: 20, maxBuffer: 5, backoffMs: 10, maxBackoffMs: 20, egressAllow: ['127.0.0.1'], logger: log });
    cleanup.push(() => sink.close());
    for (let i = 0; i < 12; i++) sink.emit(event(i));
    expect(sink.stats()).toMatchObject({ dropped: 7, buffered: 5, delivered: 0 });
    expect(log.records.filter((r) => r.fields.event === 'siem_buffer_full')).toHaveLength(1);
    await until(() => hec.requests() >= 2);
    hec.recover();
    await until(() => hec.ids().length === 5);
    expect(hec.ids()).toEqual(range(7, 12));
    expect(log.records.find((r) => r.fields.event === 'siem_events_dropped')).toEqual({
      level: 'error',
      fields: { event: 'siem_events_dropped', dropped: 7, droppedTotal: 7, maxBuffer: 5 },
    });
  });

  it('sends what is buffered when it closes', async () => {
    const hec = await startCollector();
    cleanup.push(hec.close);
    const sink = splunkHecSink({ url: hec.url, token: 't', batchSize: 100, flushIntervalMs: 60_000, egressAllow: ['127.0.0.1'], logger: captureLog() });
    for (let i = 0; i < 3; i++) sink.emit(event(i));
    expect(hec.requests()).toBe(0);
    await sink.close();
    expect(hec.ids()).toEqual(range(0, 3));
  });

  it('refuses a collector that is not on egress.allow, at load and when built', () => {
    expect(() => splunkHecSink({ url: 'https://splunk.example.com:8088', token: 't', egressAllow: ['127.0.0.1'], logger: captureLog() })).toThrow(
      'SIEM host splunk.example.com:8088 is not on egress.allow',
    );
    const policy = basicPolicy().replace('version: 1', 'version: 1\nmetering: { siem: { url: "https://splunk.example.com:8088", token: t } }');
    try {
      parsePolicy(policy, 'p.yaml');
      expect.unreachable();
    } catch (err) {
      expect((err as PolicyError).issues.map((i) => [i.path, i.message])).toEqual([
        ['metering.siem.url', 'splunk.example.com:8088 is not on egress.allow; add it there to let decision events leave'],
      ]);
    }
  });

  it('names the event endpoint whether the URL is the collector base or the full path', () => {
    expect(hecEndpoint('https://splunk:8088')).toBe('https://splunk:8088/services/collector/event');
    expect(hecEndpoint('https://splunk:8088/services/collector')).toBe('https://splunk:8088/services/collector/event');
    expect(hecEndpoint('https://splunk:8088/services/collector/event')).toBe('https://splunk:8088/services/collector/event');
  });

  it('serves and charges calls while the SIEM is down, and delivers their events once it is back', async () => {
    const hec = await startCollector();
    cleanup.push(hec.close);
    hec.failAlways();
    const policy = basicPolicy().replace(
      'version: 1',
      `version: 1\negress: { allow: ["127.0.0.1"] }\nmetering: { siem: { url: "${hec.url}", token: gw-hec-token, batchSize: 1, flushIntervalMs: 20 } }`,
    );
    const gw = await startTestGateway(policy);
    let closed = false;
    cleanup.push(async () => {
      if (!closed) await gw.close();
    });
    const alice = await connectHttp(gw.mcpUrl, KEYS.alice);
    cleanup.push(() => alice.close());
    const r = await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    expect(r.isError).toBeFalsy();
    const budget = await gw.runtime.gateway.myBudget(keyPrincipal(gw.runtime.gateway, KEYS.alice));
    expect(budget.map((b) => b.used)).toEqual([6]);
    await until(() => hec.requests() >= 1);
    hec.recover();
    await until(() => hec.ids().length === 1);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics.split('\n').filter((l) => l.startsWith('tollgate_siem_'))).toEqual([
      'tollgate_siem_events_total{result="delivered"} 1',
      'tollgate_siem_events_total{result="dropped"} 0',
      'tollgate_siem_events_total{result="rejected"} 0',
      'tollgate_siem_buffered_events 0',
    ]);
    await alice.close();
    await gw.close();
    closed = true;
    expect(hec.ids()).toEqual([(r.structuredContent as { requestId: string }).requestId]);
    expect(hec.accepted[0]!.authorization).toBe('Splunk gw-hec-token');
  });
});
