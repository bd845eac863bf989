/**
 * Alerts through real gateways: calls are not held by a webhook that never answers (and shutdown
 * is held no longer than one try), and on Redis a threshold that a credit takes usage back below
 * does not fire again when charges cross it again in the same window.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adjustUsage } from '../../src/admin/usage.js';
import type { Alert } from '../../src/alerts/alert.js';
import { GatewayError } from '../../src/errors.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { parsePolicy } from '../../src/policy/load.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { KEYS, sha } from '../fixtures/policies.js';
import { keyPrincipal } from '../helpers/principal.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

/** A receiver that answers every POST with 200, or holds it unanswered when `hang` is set. */
async function startReceiver(opts: { hang?: boolean } = {}) {
  const received: Alert[] = [];
  const held: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Alert);
      if (opts.hang) held.push(res);
      else res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    host: `127.0.0.1:${port}`,
    received,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A team budget of 100 tokens a day; each call below costs 10 tokens of it. */
function policy(hook: { url: string; host: string }, delivery: string): string {
  return `
version: 1
providers:
  demo: { kind: demo }
egress: { allow: [${hook.host}] }
tiers:
  standard: [demo/medium]
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform], costCenter: cc-1 }
budgets:
  - id: team-daily
    scope: team
    window: { calendar: day }
    limit: { tokens: 100 }
alerts:
  webhooks:
    - { id: finops, url: "${hook.url}" }
  budgets:
    - { id: team-thresholds, budgets: [team-daily], thresholds: [50, 80], notify: [finops] }
  delivery: ${delivery}
`;
}

const DAY1 = Date.parse('2026-11-25T10:00:00.000Z');
const DAY2 = Date.parse('2026-11-26T10:00:00.000Z');

async function spend(rt: Runtime): Promise<string> {
  try {
    await rt.gateway.complete({ transport: 'http', principal: keyPrincipal(rt.gateway, KEYS.alice), request: { messages: [{ role: 'user', content: 'x'.repeat(36) }], tier: 'standard', maxTokens: 1 } });
    return 'ok';
  } catch (err) {
    if (err instanceof GatewayError) return err.code;
    throw err;
  }
}

async function settled(rt: Runtime): Promise<void> {
  await rt.gateway.idle();
  await rt.alerts!.idle();
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const thresholds = (received: Alert[]) => received.filter((a) => a.kind === 'budget_threshold').map((a) => `${a.subject.id}@${a.threshold}:${a.window.start}`);

describe('alerts off the call path', () => {
  it('serves every call while the webhook holds its alert unanswered', async () => {
    const hook = await startReceiver({ hang: true });
    const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_DATA_DIR: 'none' });
    const rt = await buildRuntime(settings, { policy: parsePolicy(policy(hook, '{ attempts: 5, backoffMs: 5, timeoutMs: 30000 }'), 'p.yaml'), now: () => DAY1, sink: { emit() {} } });
    try {
      for (let i = 0; i < 5; i++) expect(await spend(rt)).toBe('ok');
      await until(() => hook.received.length === 1);
      // The 50 % alert is held by the receiver; the calls after it do not wait on it.
      const started = Date.now();
      for (let i = 0; i < 2; i++) expect(await spend(rt)).toBe('ok');
      expect(Date.now() - started).toBeLessThan(1000);
      expect(rt.alerts!.stats()).toMatchObject({ fired: 1, pending: 1, delivered: 0 });
    } finally {
      await hook.close();
      await rt.close();
    }
    expect(rt.alerts!.stats()).toMatchObject({ fired: 1, pending: 0, delivered: 0, failed: 1 });
  });
});

describe('alerts on Redis and credits', () => {
  let redis: TestRedis;
  const prefixes: string[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const p of prefixes) await deleteKeys(redis.url, p);
    await redis.stop();
  });

  it('does not fire a threshold again when a credit takes usage below it and charges cross it again, but does in the next window', async () => {
    const hook = await startReceiver();
    const prefix = uniquePrefix('audit-alerts');
    prefixes.push(prefix);
    let now = DAY1;
    const store = new RedisQuotaStore({ url: redis.url, prefix, now: () => now, sweepIntervalMs: 0, logger: { info() {}, warn() {}, error() {} } });
    const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_DATA_DIR: 'none', TOLLGATE_KEY_PREFIX: prefix });
    const text = policy(hook, '{ attempts: 3, backoffMs: 5, maxBackoffMs: 20 }');
    const rt = await buildRuntime(settings, { policy: parsePolicy(text, 'p.yaml'), store, now: () => now, sink: { emit() {} } });
    try {
      for (let i = 0; i < 5; i++) await spend(rt);
      await settled(rt);
      expect(thresholds(hook.received)).toEqual(['platform@50:2026-11-25T00:00:00.000Z']);
      // A credit of 30 tokens: usage 50 -> 20, below the 50 % threshold again.
      const row = await adjustUsage(rt.gateway.policy, store, prefix, now, 'team-daily', 'platform', -30);
      expect(row.used).toBe(20);
      for (let i = 0; i < 4; i++) await spend(rt); // 60 %: 50 % crossed a second time
      await settled(rt);
      expect(thresholds(hook.received)).toEqual(['platform@50:2026-11-25T00:00:00.000Z']);
      for (let i = 0; i < 2; i++) await spend(rt); // 80 %
      await settled(rt);
      expect(thresholds(hook.received)).toEqual(['platform@50:2026-11-25T00:00:00.000Z', 'platform@80:2026-11-25T00:00:00.000Z']);
      now = DAY2;
      for (let i = 0; i < 5; i++) await spend(rt);
      await settled(rt);
      expect(thresholds(hook.received)).toEqual(['platform@50:2026-11-25T00:00:00.000Z', 'platform@80:2026-11-25T00:00:00.000Z', 'platform@50:2026-11-26T00:00:00.000Z']);
    } finally {
      await rt.close();
      await hook.close();
    }
  });
});
