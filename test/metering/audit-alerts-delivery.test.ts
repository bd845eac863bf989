/**
 * Alert delivery against receivers that misbehave, on loopback: one that asks to be left alone
 * (429 with Retry-After), one that answers 200 and then never ends its body, one that redirects
 * elsewhere, one that refuses connections, and one that never answers. Nothing a receiver does
 * may hold a delivery past its bounds, be followed off the allowlist, or go unjournaled.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../src/alerts/alert.js';
import { Deliverer } from '../../src/alerts/deliver.js';
import type { AlertsConfig, WebhookConfig } from '../../src/policy/alertsConfig.js';

interface Hit {
  at: number;
  path: string;
  headers: IncomingHttpHeaders;
}

/** A receiver whose answer to each POST is `answer(n, res)` (n counts from 0); it keeps every request it got. */
async function startReceiver(answer: (n: number, res: ServerResponse) => void) {
  const hits: Hit[] = [];
  const open = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      hits.push({ at: Date.now(), path: req.url ?? '', headers: req.headers });
      open.add(res);
      res.on('close', () => open.delete(res));
      answer(hits.length - 1, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    host: `127.0.0.1:${port}`,
    hits,
    /** Answers the receiver has started and not yet seen closed (by itself or by the client). */
    open: () => open.size,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const DELIVERY: AlertsConfig['delivery'] = { attempts: 3, backoffMs: 5, maxBackoffMs: 20, timeoutMs: 2000, maxQueue: 10, maxPending: 10 };

function deliverer(allow: string[], delivery: Partial<AlertsConfig['delivery']> = {}) {
  const notes: Record<string, unknown>[] = [];
  const logs: Record<string, unknown>[] = [];
  const d = new Deliverer({
    settings: () => ({ delivery: { ...DELIVERY, ...delivery }, egressAllow: allow }),
    note: async (n) => void notes.push(n),
    logger: { warn: (f: Record<string, unknown>) => void logs.push(f), error: (f: Record<string, unknown>) => void logs.push(f) },
  });
  return { d, notes, logs };
}

const alert = (id: string) => ({ type: 'tollgate.alert', id, kind: 'budget_threshold', alert: 'a', firedAt: '', summary: 's', subject: { scope: 'team', id: 'platform' }, window: { start: '', end: '' }, policyVersion: 'v' }) as Alert;
const hook = (url: string, headers: Record<string, string> = {}): WebhookConfig => ({ id: 'finops', url, format: 'json', headers });

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('alert delivery to a receiver that misbehaves', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('waits as long as a 429 asks (Retry-After) before trying again', async () => {
    const rx = await startReceiver((n, res) => (n === 0 ? res.writeHead(429, { 'retry-after': '1' }).end() : res.writeHead(200).end()));
    cleanup.push(rx.close);
    const { d, notes } = deliverer([rx.host], { maxBackoffMs: 5000 });
    d.send(alert('a-1'), hook(rx.url));
    await d.idle();
    expect(notes).toEqual([{ id: 'a-1', status: 'delivered', webhook: 'finops', attempts: 2, httpStatus: 200 }]);
    expect(rx.hits[1]!.at - rx.hits[0]!.at).toBeGreaterThanOrEqual(990);
  });

  it('bounds a Retry-After by maxBackoffMs', async () => {
    const rx = await startReceiver((n, res) => (n === 0 ? res.writeHead(429, { 'retry-after': '3600' }).end() : res.writeHead(200).end()));
    cleanup.push(rx.close);
    const { d, notes } = deliverer([rx.host], { maxBackoffMs: 20 });
    d.send(alert('a-1'), hook(rx.url));
    await d.idle();
    expect(notes).toEqual([{ id: 'a-1', status: 'delivered', webhook: 'finops', attempts: 2, httpStatus: 200 }]);
    expect(rx.hits[1]!.at - rx.hits[0]!.at).toBeLessThan(1000);
  });

  it('takes a 200 as delivered without reading a body that never ends', { timeout: 5000 }, async () => {
    const rx = await startReceiver((_n, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = 'x'.repeat(64 * 1024);
      const more = () => {
        if (!res.destroyed && !res.writableEnded) res.write(chunk, () => setImmediate(more));
      };
      more();
    });
    cleanup.push(rx.close);
    const { d, notes } = deliverer([rx.host], { timeoutMs: 60_000 });
    d.send(alert('a-1'), hook(rx.url));
    await d.idle();
    expect(notes).toEqual([{ id: 'a-1', status: 'delivered', webhook: 'finops', attempts: 1, httpStatus: 200 }]);
    await until(() => rx.open() === 0);
  });

  it('does not follow a redirect to a host off the allowlist, nor send it the webhook headers', async () => {
    const elsewhere = await startReceiver((_n, res) => res.writeHead(200).end());
    cleanup.push(elsewhere.close);
    const rx = await startReceiver((_n, res) => res.writeHead(307, { location: elsewhere.url }).end());
    cleanup.push(rx.close);
    const { d, notes } = deliverer([rx.host]);
    d.send(alert('a-1'), hook(rx.url, { authorization: 'Bearer finops-secret' }));
    await d.idle();
    expect(elsewhere.hits).toEqual([]);
    expect(rx.hits).toHaveLength(1);
    expect(notes).toEqual([{ id: 'a-1', status: 'failed', webhook: 'finops', attempts: 1, error: 'HTTP 307', httpStatus: 307 }]);
  });

  it('retries a refused connection up to attempts, then logs the give-up without the webhook URL or headers', async () => {
    const rx = await startReceiver((_n, res) => res.writeHead(200).end());
    const url = `${rx.url}/T000/B000/slack-secret-path`;
    await rx.close();
    const { d, notes, logs } = deliverer([rx.host]);
    d.send(alert('a-1'), hook(url, { authorization: 'Bearer finops-secret' }));
    await d.idle();
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatchObject({ id: 'a-1', status: 'failed', webhook: 'finops', attempts: 3 });
    expect(String(notes[0]!.error)).toContain('ECONNREFUSED');
    expect(logs.map((l) => l.event)).toEqual(['alert_delivery_failed']);
    const written = JSON.stringify([notes, logs]);
    expect(written).not.toContain('slack-secret-path');
    expect(written).not.toContain('finops-secret');
  });

  it('holds no more than maxPending deliveries for a receiver that never answers, and ends each at its timeout', async () => {
    const rx = await startReceiver(() => {});
    cleanup.push(rx.close);
    const { d, notes, logs } = deliverer([rx.host], { attempts: 1, timeoutMs: 300, maxPending: 2 });
    for (const id of ['a-1', 'a-2', 'a-3']) d.send(alert(id), hook(rx.url));
    await d.idle();
    expect(rx.hits.map((h) => h.headers['x-tollgate-alert-id']).sort()).toEqual(['a-1', 'a-2']);
    expect(notes.map((n) => [n.id, n.status, n.error])).toEqual([
      ['a-3', 'failed', 'more than 2 deliveries were pending (alerts.delivery.maxPending)'],
      ['a-1', 'failed', 'no answer within 300 ms'],
      ['a-2', 'failed', 'no answer within 300 ms'],
    ]);
    expect(logs.filter((l) => l.event === 'alert_delivery_failed')).toHaveLength(3);
    await until(() => rx.open() === 0);
    expect(d.stats()).toEqual({ delivered: 0, failed: 3, pending: 0 });
  });
});
