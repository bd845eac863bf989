/**
 * Alerts as a webhook receives them: a real HTTP server on a free port, real gateways (the
 * embedded journal and real Redis), calls through the pipeline. Each threshold fires once per
 * window and subject, across restarts and across two gateways on one Redis; deliveries retry and
 * give up, and both outcomes are journal entries.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import type { Alert } from '../../src/alerts/alert.js';
import { Deliverer } from '../../src/alerts/deliver.js';
import { GatewayError } from '../../src/errors.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';
import type { Provider } from '../../src/providers/provider.js';
import { readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import type { EntryBody } from '../../src/quota/journal.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { KEYS, sha } from '../fixtures/policies.js';
import { keyPrincipal } from '../helpers/principal.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

interface Received {
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

/** A webhook receiver: answers each POST with the next status of `statuses` (then 200) and keeps what it got. */
async function startReceiver(statuses: number[] = []): Promise<{ url: string; host: string; received: Received[]; close(): Promise<void> }> {
  const received: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
      const status = statuses.shift() ?? 200;
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, host: `127.0.0.1:${port}`, received, close: () => new Promise((r) => server.close(() => r())) };
}

/**
 * A team budget of 100 tokens a day; each call below costs 10 (9 input, 1 output), so the 5th call
 * reaches 50 %, the 8th 80 %, the 10th 100 %.
 */
function alertPolicy(hook: { url: string; host: string }, opts: { format?: 'json' | 'slack'; delivery?: string; egress?: string } = {}): string {
  return `
version: 1
providers:
  demo: { kind: demo }
egress: { allow: [${opts.egress ?? hook.host}] }
tiers:
  standard: [demo/medium]
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform], costCenter: cc-1 }
  - { id: k-carol, sha256: ${sha(KEYS.carol)}, user: carol, teams: [data] }
budgets:
  - id: team-daily
    scope: team
    window: { calendar: day }
    limit: { tokens: 100 }
alerts:
  webhooks:
    - { id: finops, url: "${hook.url}", format: ${opts.format ?? 'json'} }
  budgets:
    - { id: team-thresholds, budgets: [team-daily], thresholds: [50, "80%", 100], notify: [finops] }
  refusals:
    - { id: exhausted-spike, codes: [BUDGET_EXHAUSTED], per: user, count: 3, window: { minutes: 10 }, notify: [finops] }
  overruns:
    - { id: overruns, notify: [finops] }
  delivery: ${opts.delivery ?? '{ attempts: 3, backoffMs: 5, maxBackoffMs: 20 }'}
`;
}

const DAY1 = Date.parse('2026-11-25T10:00:00.000Z');
const DAY2 = Date.parse('2026-11-26T10:00:00.000Z');

async function runtimeFor(policyText: string, opts: { dataDir?: string; store?: RedisQuotaStore; now: () => number }): Promise<Runtime> {
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_DATA_DIR: opts.dataDir ?? 'none' });
  return buildRuntime(settings, { policy: parsePolicy(policyText, 'alerts-policy.yaml'), store: opts.store, now: opts.now, sink: { emit() {} } });
}

/** One call costing 10 tokens of alice's team budget; a refusal comes back as its code. */
async function spend(rt: Runtime, key: string = KEYS.alice): Promise<string> {
  try {
    await rt.gateway.complete({ transport: 'http', principal: keyPrincipal(rt.gateway, key), request: { messages: [{ role: 'user', content: 'x'.repeat(36) }], tier: 'standard', maxTokens: 1 } });
    return 'ok';
  } catch (err) {
    if (err instanceof GatewayError) return err.code;
    throw err;
  }
}

async function settled(...rts: Runtime[]): Promise<void> {
  for (const rt of rts) await rt.gateway.idle();
  for (const rt of rts) await rt.alerts!.idle();
}

const bodies = (r: Received[]) => r.map((x) => x.body as unknown as Alert);
const thresholdsOf = (r: Received[]) => bodies(r).filter((a) => a.kind === 'budget_threshold').map((a) => `${a.subject.id}@${a.threshold}`);

function alertEntries(dir: string): EntryBody[] {
  return segmentFiles(dir).flatMap((f) => readSegment(f).entries.map((e) => e.body)).filter((b) => b.kind === 'alert');
}

describe('alerts on the embedded journal', () => {
  const dirs: string[] = [];
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'tollgate-alerts-'));
    dirs.push(d);
    return d;
  };

  it('fires 50, 80 and 100 % once each as the calls cross them, and a refusal spike once, journaled', async () => {
    const hook = await startReceiver();
    closers.push(hook.close);
    const dir = tempDir();
    const rt = await runtimeFor(alertPolicy(hook), { dataDir: dir, now: () => DAY1 });
    closers.push(() => rt.close());
    const outcomes: string[] = [];
    for (let i = 1; i <= 10; i++) {
      outcomes.push(await spend(rt));
      await settled(rt);
      if (i === 4) expect(thresholdsOf(hook.received)).toEqual([]);
      if (i === 5) expect(thresholdsOf(hook.received)).toEqual(['platform@50']);
      if (i === 7) expect(thresholdsOf(hook.received)).toEqual(['platform@50']);
      if (i === 8) expect(thresholdsOf(hook.received)).toEqual(['platform@50', 'platform@80']);
    }
    expect(outcomes).toEqual(Array(10).fill('ok'));
    expect(thresholdsOf(hook.received)).toEqual(['platform@50', 'platform@80', 'platform@100']);
    const at80 = bodies(hook.received)[1]!;
    expect(at80).toMatchObject({
      type: 'tollgate.alert',
      id: `budget:team-thresholds:team-daily:platform:${Date.parse('2026-11-25T00:00:00.000Z')}:80`,
      kind: 'budget_threshold',
      alert: 'team-thresholds',
      subject: { scope: 'team', id: 'platform' },
      window: { start: '2026-11-25T00:00:00.000Z', end: '2026-11-26T00:00:00.000Z' },
      budget: { id: 'team-daily', unit: 'tokens', limit: 100, used: 80, percent: 80 },
      threshold: 80,
      summary: 'Budget team-daily for team platform has reached 80% of its limit: 80 tokens of 100 tokens used (80%).',
    });
    expect(hook.received[1]!.headers['x-tollgate-alert-id']).toBe(at80.id);

    // Four refusals: the third reaches the spike's count and fires it; the fourth fires nothing more.
    for (let i = 0; i < 4; i++) {
      expect(await spend(rt)).toBe('BUDGET_EXHAUSTED');
      await settled(rt);
    }
    const spikes = bodies(hook.received).filter((a) => a.kind === 'refusal_spike');
    expect(spikes.map((a) => [a.subject.id, a.refusals?.count])).toEqual([['alice', 3]]);
    expect(hook.received).toHaveLength(4);

    await rt.close();
    const entries = alertEntries(dir);
    expect(entries.map((b) => [b.alert?.status, b.alert?.id])).toEqual(
      bodies(hook.received).flatMap((a) => [
        ['fired', a.id],
        ['delivered', a.id],
      ]),
    );
    expect(entries[1]!.alert).toMatchObject({ status: 'delivered', webhook: 'finops', attempts: 1, httpStatus: 200 });
    // Alert entries are part of the chain, and change no counter.
    expect(verifyJournalDir(dir).ok).toBe(true);
  });

  it('does not fire a threshold again after a restart in the same window, and fires again in the next window', async () => {
    const hook = await startReceiver();
    closers.push(hook.close);
    const dir = tempDir();
    let now = DAY1;
    const first = await runtimeFor(alertPolicy(hook), { dataDir: dir, now: () => now });
    for (let i = 0; i < 6; i++) await spend(first);
    await settled(first);
    await first.close();
    expect(thresholdsOf(hook.received)).toEqual(['platform@50']);

    const second = await runtimeFor(alertPolicy(hook), { dataDir: dir, now: () => now });
    closers.push(() => second.close());
    await spend(second); // 70 %: 50 % is already marked in the journal
    await settled(second);
    expect(thresholdsOf(hook.received)).toEqual(['platform@50']);
    await spend(second); // 80 %
    await settled(second);
    expect(thresholdsOf(hook.received)).toEqual(['platform@50', 'platform@80']);

    now = DAY2;
    for (let i = 0; i < 5; i++) await spend(second);
    await settled(second);
    expect(thresholdsOf(hook.received)).toEqual(['platform@50', 'platform@80', 'platform@50']);
    expect(bodies(hook.received)[2]!.window.start).toBe('2026-11-26T00:00:00.000Z');
  });

  it('keeps subjects apart: each team crosses its own thresholds', async () => {
    const hook = await startReceiver();
    closers.push(hook.close);
    const rt = await runtimeFor(alertPolicy(hook), { now: () => DAY1 });
    closers.push(() => rt.close());
    for (let i = 0; i < 5; i++) {
      await spend(rt, KEYS.alice);
      await spend(rt, KEYS.carol);
    }
    await settled(rt);
    expect(thresholdsOf(hook.received).sort()).toEqual(['data@50', 'platform@50']);
  });

  it('fires an overrun when a provider bills more than was reserved, and every threshold the charge jumped', async () => {
    const hook = await startReceiver();
    closers.push(hook.close);
    const rt = await runtimeFor(alertPolicy(hook), { now: () => DAY1 });
    closers.push(() => rt.close());
    // A provider that reports 120 input tokens for any prompt: far beyond what admission reserved.
    const liar: Provider = {
      name: 'demo',
      kind: 'demo',
      complete: async (req) => ({ text: 'ok', model: req.model, usage: { inputTokens: 120, outputTokens: 1 }, stopReason: 'end_turn' }),
      stream: async (req) => ({ text: 'ok', model: req.model, usage: { inputTokens: 120, outputTokens: 1 }, stopReason: 'end_turn' }),
    };
    rt.gateway.replacePolicy(rt.gateway.policy, new Map([['demo', liar]]));
    expect(await spend(rt)).toBe('ok');
    await settled(rt);
    const got = bodies(hook.received);
    expect(got.filter((a) => a.kind === 'budget_threshold').map((a) => a.threshold)).toEqual([50, 80, 100]);
    const overrun = got.find((a) => a.kind === 'budget_overrun')!;
    expect(overrun).toMatchObject({
      id: `overrun:overruns:team-daily:platform:${Date.parse('2026-11-25T00:00:00.000Z')}`,
      alert: 'overruns',
      subject: { scope: 'team', id: 'platform' },
      overrun: { unit: 'tokens' },
    });
    expect(overrun.overrun!.amount).toBeGreaterThan(0);
    expect(overrun.overrun!.amount).toBeLessThan(121);
    expect(got).toHaveLength(4);
  });

  it('keeps up with calls that never leave the event loop (in-process store and provider) within a queue of 2', async () => {
    const hook = await startReceiver();
    closers.push(hook.close);
    const rt = await runtimeFor(alertPolicy(hook, { delivery: '{ attempts: 3, backoffMs: 5, maxBackoffMs: 20, maxQueue: 2 }' }), { now: () => DAY1 });
    closers.push(() => rt.close());
    for (let i = 0; i < 10; i++) {
      await spend(rt, KEYS.alice);
      await spend(rt, KEYS.carol);
    }
    await settled(rt);
    expect(rt.alerts!.stats().dropped).toBe(0);
    expect(thresholdsOf(hook.received).sort()).toEqual(['data@100', 'data@50', 'data@80', 'platform@100', 'platform@50', 'platform@80']);
  });

  it('sends a Slack incoming-webhook message: text and blocks, with Slack markup escaped', async () => {
    const hook = await startReceiver();
    closers.push(hook.close);
    const rt = await runtimeFor(alertPolicy(hook, { format: 'slack' }), { now: () => DAY1 });
    closers.push(() => rt.close());
    for (let i = 0; i < 5; i++) await spend(rt);
    await settled(rt);
    expect(hook.received).toHaveLength(1);
    const msg = hook.received[0]!.body as { text: string; blocks: { type: string; text?: { type: string; text: string }; fields?: unknown[]; elements?: unknown[] }[] };
    expect(Object.keys(msg).sort()).toEqual(['blocks', 'text']);
    expect(msg.text).toBe('Budget threshold crossed: Budget team-daily for team platform has reached 50% of its limit: 50 tokens of 100 tokens used (50%).');
    expect(msg.blocks.map((b) => b.type)).toEqual(['header', 'section', 'section', 'context']);
    expect(msg.blocks[0]!.text).toEqual({ type: 'plain_text', text: 'tollgate: Budget threshold crossed' });
    expect(msg.blocks[1]!.text!.type).toBe('mrkdwn');
    expect(msg.blocks[2]!.fields).toContainEqual({ type: 'mrkdwn', text: '*Threshold*\n50%' });
  });

  it('retries a webhook that answers 500, and journals the delivery with its tries', async () => {
    const hook = await startReceiver([500, 503]);
    closers.push(hook.close);
    const dir = tempDir();
    const rt = await runtimeFor(alertPolicy(hook), { dataDir: dir, now: () => DAY1 });
    for (let i = 0; i < 5; i++) await spend(rt);
    await settled(rt);
    await rt.close();
    expect(hook.received).toHaveLength(3);
    expect(new Set(hook.received.map((r) => r.headers['x-tollgate-alert-id'])).size).toBe(1);
    expect(alertEntries(dir).map((b) => b.alert?.status)).toEqual(['fired', 'delivered']);
    expect(alertEntries(dir)[1]!.alert).toMatchObject({ status: 'delivered', attempts: 3, httpStatus: 200 });
    expect(rt.alerts!.stats()).toMatchObject({ fired: 1, delivered: 1, failed: 0 });
  });

  it('gives up after the configured tries and journals the failure', async () => {
    const hook = await startReceiver([500, 500, 500, 500, 500]);
    closers.push(hook.close);
    const dir = tempDir();
    const rt = await runtimeFor(alertPolicy(hook), { dataDir: dir, now: () => DAY1 });
    for (let i = 0; i < 5; i++) await spend(rt);
    await settled(rt);
    await rt.close();
    expect(hook.received).toHaveLength(3);
    expect(alertEntries(dir).map((b) => b.alert)).toMatchObject([
      { status: 'fired', kind: 'budget_threshold', threshold: 50 },
      { status: 'failed', webhook: 'finops', attempts: 3, error: 'HTTP 500', httpStatus: 500 },
    ]);
    expect(rt.alerts!.stats()).toMatchObject({ fired: 1, delivered: 0, failed: 1 });
  });

  it('does not retry an answer that will not change (404), and journals the failure after one try', async () => {
    const hook = await startReceiver([404]);
    closers.push(hook.close);
    const dir = tempDir();
    const rt = await runtimeFor(alertPolicy(hook), { dataDir: dir, now: () => DAY1 });
    for (let i = 0; i < 5; i++) await spend(rt);
    await settled(rt);
    await rt.close();
    expect(hook.received).toHaveLength(1);
    expect(alertEntries(dir)[1]!.alert).toMatchObject({ status: 'failed', attempts: 1, error: 'HTTP 404' });
  });
});

describe('alert webhooks and the egress allowlist', () => {
  it('refuses a policy whose webhook host is not on egress.allow (a check error)', async () => {
    const hook = await startReceiver();
    try {
      let err: unknown;
      try {
        parsePolicy(alertPolicy(hook, { egress: 'api.example.com' }), 'alerts-policy.yaml');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PolicyError);
      expect((err as PolicyError).issues.map((i) => [i.path, i.message])).toEqual([
        ['alerts.webhooks[0].url', `${hook.host} is not on egress.allow; add it there to let alerts leave (it is never contacted otherwise)`],
      ]);
    } finally {
      await hook.close();
    }
  });

  it('never contacts a webhook off the allowlist in force, and journals the failure', async () => {
    const hook = await startReceiver();
    const notes: Record<string, unknown>[] = [];
    const deliverer = new Deliverer({
      settings: () => ({ delivery: { attempts: 3, backoffMs: 5, maxBackoffMs: 20, timeoutMs: 1000, maxQueue: 10, maxPending: 10 }, egressAllow: ['hooks.example.com'] }),
      note: async (n) => void notes.push(n),
      logger: { warn() {}, error() {} },
    });
    const alert = { id: 'a-1' } as Alert;
    try {
      deliverer.send(alert, { id: 'finops', url: hook.url, format: 'json', headers: {} });
      await deliverer.idle();
      expect(hook.received).toHaveLength(0);
      expect(notes).toEqual([{ id: 'a-1', status: 'failed', webhook: 'finops', attempts: 1, error: `EGRESS_DENIED: ${hook.host} is not on egress.allow; not contacted`, httpStatus: undefined }]);
    } finally {
      await hook.close();
    }
  });

  it('names an alert webhook or budget that does not exist', () => {
    const text = alertPolicy({ url: 'http://127.0.0.1:9/hook', host: '127.0.0.1:9' })
      .replace('budgets: [team-daily], thresholds: [50, "80%", 100], notify: [finops]', 'budgets: [team-weekly], thresholds: [50, "80%", 100], notify: [ops]');
    let err: unknown;
    try {
      parsePolicy(text, 'p.yaml');
    } catch (e) {
      err = e;
    }
    expect((err as PolicyError).issues.map((i) => [i.path, i.message])).toEqual([
      ['alerts.budgets[0].notify[0]', 'webhook "ops" is not declared under alerts.webhooks'],
      ['alerts.budgets[0].budgets[0]', 'budget "team-weekly" is not declared under budgets'],
    ]);
  });
});

describe('alerts on Redis', () => {
  let redis: TestRedis;
  const prefixes: string[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const p of prefixes) await deleteKeys(redis.url, p);
    await redis.stop();
  });

  const store = (prefix: string) => new RedisQuotaStore({ url: redis.url, prefix, now: () => DAY1, sweepIntervalMs: 0, logger: { info() {}, warn() {}, error() {} } });

  it('fires each threshold once when two gateways on one Redis charge the same team', async () => {
    const hook = await startReceiver();
    const prefix = uniquePrefix('alerts');
    prefixes.push(prefix);
    const settings = { TOLLGATE_KEY_PREFIX: prefix };
    const make = async () => {
      const s = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_DATA_DIR: 'none', ...settings });
      return buildRuntime(s, { policy: parsePolicy(alertPolicy(hook), 'alerts-policy.yaml'), store: store(prefix), now: () => DAY1, sink: { emit() {} } });
    };
    const a = await make();
    const b = await make();
    try {
      // The gateways take turns, and each evaluates its own calls' charges while the other charges:
      // a's call to 50 % and b's to 60 % both claim the 50 % mark, b's to 80 % and a's to 90 % the
      // 80 % one. One claim of each pair wins.
      const outcomes: string[] = [];
      for (let i = 0; i < 10; i++) {
        outcomes.push(await spend(i % 2 === 0 ? a : b));
        await Promise.all([a.gateway.idle(), b.gateway.idle()]);
      }
      expect(outcomes).toEqual(Array(10).fill('ok'));
      await settled(a, b);
      expect(thresholdsOf(hook.received).sort()).toEqual(['platform@100', 'platform@50', 'platform@80']);
      expect(a.alerts!.stats().fired + b.alerts!.stats().fired).toBe(3);
      expect(a.alerts!.stats().lost + b.alerts!.stats().lost).toBeGreaterThanOrEqual(2);
      // The refusal counter is shared too: 2 refusals on each gateway make 4, one spike.
      expect(await Promise.all([spend(a), spend(b), spend(a), spend(b)])).toEqual(Array(4).fill('BUDGET_EXHAUSTED'));
      await settled(a, b);
      expect(bodies(hook.received).filter((x) => x.kind === 'refusal_spike')).toHaveLength(1);

      const journaled: Record<string, unknown>[] = [];
      for await (const { entry } of (a.gateway.store as RedisQuotaStore).journalEntries()) if (entry.body.kind === 'alert') journaled.push(entry.body.alert!);
      expect(journaled.filter((x) => x.status === 'fired')).toHaveLength(4);
      expect(journaled.filter((x) => x.status === 'delivered')).toHaveLength(4);
      expect((await (a.gateway.store as RedisQuotaStore).verify()).ok).toBe(true);
    } finally {
      await a.close();
      await b.close();
      await hook.close();
    }
  });

  it('does not fire again from a new gateway in the same window (the mark is in Redis)', async () => {
    const hook = await startReceiver();
    const prefix = uniquePrefix('alerts');
    prefixes.push(prefix);
    const make = () => buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_DATA_DIR: 'none', TOLLGATE_KEY_PREFIX: prefix }), { policy: parsePolicy(alertPolicy(hook), 'p.yaml'), store: store(prefix), now: () => DAY1, sink: { emit() {} } });
    try {
      const first = await make();
      for (let i = 0; i < 5; i++) await spend(first);
      await settled(first);
      await first.close();
      const second = await make();
      await spend(second);
      await settled(second);
      await second.close();
      expect(thresholdsOf(hook.received)).toEqual(['platform@50']);
    } finally {
      await hook.close();
    }
  });
});
