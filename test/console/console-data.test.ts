/**
 * The console's numbers against `tollgate usage report` on the same record, for both journals (the
 * embedded one in a data directory, and Redis's rollups), after real calls through the gateway's
 * MCP endpoint; console actions as `console` journal entries that leave the journal verifying; and
 * when the console is served at all.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@keyv/redis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { runUsageCommand } from '../../src/admin/cli.js';
import { journalLines } from '../../src/admin/journalReader.js';
import { REPORT_DIMENSIONS, type UsageReport } from '../../src/admin/report.js';
import { consoleEnabled } from '../../src/console/access.js';
import { decisions, findDecision, overview, rangeOf, refusals, type ConsoleSources } from '../../src/console/data.js';
import { parsePolicy } from '../../src/policy/load.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { dayOf } from '../../src/quota/redisJournal.js';
import { lineKeys } from '../../src/policy/budgets.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { sha } from '../fixtures/policies.js';
import { startConsoleGateway, type ConsoleGateway } from '../helpers/console.js';
import { connectHttp } from '../helpers/gateway.js';
import { deleteKeys, redisTimeMs, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const NOW = Date.parse('2026-11-25T10:00:00.000Z');
const clock = () => NOW;

export const CONSOLE_POLICY = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
defaultTier: standard
apiKeys:
  - { id: admin, sha256: ${sha('admin-key')}, user: root, roles: [tollgate-admin] }
  - { id: k-alice, sha256: ${sha('key-alice')}, user: alice, teams: [platform], costCenter: cc-1 }
  - { id: k-bob, sha256: ${sha('key-bob')}, user: bob, teams: [platform, data], costCenter: cc-2, groups: [contractors] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
  - { id: team-usd, scope: team, window: { calendar: month }, limit: { usd: 10 } }
rules:
  - id: contractors-no-premium
    when: "'contractors' in principal.groups && request.tier == 'premium'"
    effect: deny
    message: Contractors may use standard models only.
`;

/** A few calls: alice twice (one premium), bob once and once refused by a rule. */
async function scriptedCalls(gw: ConsoleGateway): Promise<void> {
  const alice = await connectHttp(`${gw.url}/mcp`, 'key-alice');
  const bob = await connectHttp(`${gw.url}/mcp`, 'key-bob');
  await alice.callTool({ name: 'complete', arguments: { prompt: 'hello there' } });
  await alice.callTool({ name: 'complete', arguments: { prompt: 'and a premium one', tier: 'premium' } });
  await bob.callTool({ name: 'complete', arguments: { prompt: 'hi' } });
  await bob.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'premium' } });
  await alice.close();
  await bob.close();
  await gw.runtime.gateway.idle();
}

/** Signs in with the admin key through the login form; returns the session cookie. */
export async function signInWithKey(url: string, key: string): Promise<string> {
  const page = await fetch(`${url}/console/login`);
  const pre = page.headers.get('set-cookie')!.split(';')[0]!;
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
  const res = await fetch(`${url}/console/login`, { method: 'POST', redirect: 'manual', headers: { cookie: pre, origin: url, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: csrf, key }) });
  expect(res.status).toBe(303);
  return res.headers.get('set-cookie')!.split(';')[0]!;
}

/** CONSOLE_POLICY in a file: `usage report` reads the store through the policy that wrote it. */
function consolePolicyFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'tollgate-console-policy-')), 'policy.yaml');
  writeFileSync(file, CONSOLE_POLICY);
  return file;
}

/** Each dimension's rows of the console's month against the report's rows for the same month. */
async function expectOverviewEqualsReport(src: ConsoleSources, reportArgs: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const o = await overview(src, rangeOf('month', NOW));
  for (const by of REPORT_DIMENSIONS) {
    const r = JSON.parse(await runUsageCommand(['report', ...reportArgs, '--policy', consolePolicyFile(), '--by', by, '--window', 'month', '--from', '2026-11-01T00:00:00Z', '--to', '2026-12-01T00:00:00Z', '--format', 'json'], env)) as UsageReport;
    const strip = ({ key, calls, inputTokens, outputTokens, costMicroUsd, recovered, refused, failed }: UsageReport['rows'][number]) => ({ key, calls, inputTokens, outputTokens, costMicroUsd, recovered, refused, failed });
    const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : 1);
    expect(o.by[by].map(strip).sort(byKey), by).toEqual(r.rows.map(strip).sort(byKey));
    expect(o.total).toEqual(r.total);
  }
  expect(o.total.calls).toBe(4);
  expect(o.total.refused).toEqual({ POLICY_DENIED: 1 });
  expect(o.total.costMicroUsd).toBeGreaterThan(0);
}

describe('console on the embedded journal', () => {
  let work: string;
  let dir: string;
  let gw: ConsoleGateway;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'tollgate-console-'));
    dir = join(work, 'data');
    const { journal, replay } = FileJournal.open({ dir, now: clock });
    const store = new MemoryQuotaStore(clock, journal);
    store.restore(replay);
    journal.snapshotSource = () => store.snapshot();
    gw = await startConsoleGateway(CONSOLE_POLICY, { store, dataDir: dir, now: clock });
    await scriptedCalls(gw);
  });
  afterAll(async () => {
    await gw.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('shows by cost centre, team, user, model and tier what `tollgate usage report` prints', async () => {
    await expectOverviewEqualsReport({ gateway: gw.runtime.gateway, keyPrefix: 'tollgate:', dataDir: dir, now: clock }, ['--data-dir', dir], {});
  });

  it('journals a sign-in and each page view as console entries, and the journal still verifies', async () => {
    const cookie = await signInWithKey(gw.url, 'admin-key');
    expect((await fetch(`${gw.url}/console/budgets`, { headers: { cookie } })).status).toBe(200);
    const actions = [...journalLines(dir)].flatMap((l) => ('entry' in l && l.entry.body.kind === 'console' ? [l.entry.body.action!] : []));
    expect(actions.map((a) => `${a.action} ${a.outcome} ${a.user ?? '-'} ${a.path}`)).toEqual(['login ok root /console/login', 'view ok root /console/budgets']);
    expect(actions[0]).toMatchObject({ via: 'api_key', keyId: 'admin', role: 'read-write', method: 'POST' });
    expect(verifyJournalDir(dir)).toMatchObject({ ok: true });
  });

  it('lists the budget lines of the live ledger with what they used', async () => {
    const cookie = await signInWithKey(gw.url, 'admin-key');
    const page = await (await fetch(`${gw.url}/console/budgets?scope=team`, { headers: { cookie } })).text();
    expect(page.match(/data-key="([^"]+)"/g)!.sort()).toEqual(['data-key="team-usd|data"', 'data-key="team-usd|platform"']);
    // Dollars to the micro-dollar, as the reports print them: at four decimals a line's few
    // micro-dollars of spend showed as $0.0000.
    const used = /data-key="team-usd\|platform"><td[^>]*>[^<]*<\/td><td[^>]*>[^<]*<\/td><td[^>]*>[^<]*<\/td><td class="num" data-field="used">\$(\d+\.\d+)<\/td>/.exec(page)?.[1];
    expect(used).toMatch(/^\d+\.\d{6}$/);
    const ledger = (await gw.runtime.gateway.myBudget({ user: 'alice', teams: ['platform'], groups: [], roles: [], authMethod: 'api_key' })).find((b) => b.id === 'team-usd');
    expect(Number(used)).toBe(ledger!.used);
    expect(Number(used)).toBeGreaterThan(0);
  });

  it('reads the role again from the policy serving now: a reload that takes it away ends the sign-in', async () => {
    const cookie = await signInWithKey(gw.url, 'admin-key');
    const gateway = gw.runtime.gateway;
    const before = gateway.policy;
    try {
      gateway.replacePolicy(parsePolicy(CONSOLE_POLICY.replace('roles: [tollgate-admin]', 'roles: [tollgate-viewer]'), 'p.yaml'));
      expect(await (await fetch(`${gw.url}/console/keys`, { headers: { cookie } })).text()).toContain('root (read-only)');
      gateway.replacePolicy(parsePolicy(CONSOLE_POLICY.replace('roles: [tollgate-admin]', 'roles: []'), 'p.yaml'));
      const res = await fetch(`${gw.url}/console/keys`, { headers: { cookie }, redirect: 'manual' });
      expect([res.status, res.headers.get('location')]).toEqual([303, '/console/login']);
    } finally {
      gateway.replacePolicy(before);
    }
  });

  it('does not accept a session cookie that was altered', async () => {
    const cookie = await signInWithKey(gw.url, 'admin-key');
    const [name, value] = cookie.split('=') as [string, string];
    const [payload, mac] = value.split('.') as [string, string];
    const session = JSON.parse(Buffer.from(payload, 'base64url').toString()) as { expiresAt: number };
    // Still a valid sign-in but for its expiry, pushed a year on: only the MAC tells it apart.
    const forged = Buffer.from(JSON.stringify({ ...session, expiresAt: session.expiresAt + 365 * 86_400_000 })).toString('base64url');
    expect((await fetch(`${gw.url}/console`, { headers: { cookie: `${name}=${payload}.${mac}` }, redirect: 'manual' })).status).toBe(200);
    const res = await fetch(`${gw.url}/console`, { headers: { cookie: `${name}=${forged}.${mac}` }, redirect: 'manual' });
    expect([res.status, res.headers.get('location')]).toEqual([303, '/console/login']);
  });
});

describe('console on Redis', () => {
  let redis: TestRedis;
  const prefix = uniquePrefix('console');
  let store: RedisQuotaStore;
  let gw: ConsoleGateway;

  beforeAll(async () => {
    redis = await startRedis();
    store = new RedisQuotaStore({ url: redis.url, prefix, now: clock, logger: pino({ level: 'silent' }), sweepIntervalMs: 0 });
    gw = await startConsoleGateway(CONSOLE_POLICY, { store, now: clock, env: { TOLLGATE_KEY_PREFIX: prefix } });
    await scriptedCalls(gw);
  });
  afterAll(async () => {
    await gw.close();
    await deleteKeys(redis.url, prefix);
    await redis.stop();
  });

  it('shows from the rollups what `tollgate usage report --redis` prints', async () => {
    await expectOverviewEqualsReport({ gateway: gw.runtime.gateway, keyPrefix: prefix, now: clock }, ['--redis', redis.url], { TOLLGATE_KEY_PREFIX: prefix });
  });

  it('journals console actions in the stream, and the audit still verifies', async () => {
    const cookie = await signInWithKey(gw.url, 'admin-key');
    expect((await fetch(`${gw.url}/console/policy`, { headers: { cookie } })).status).toBe(200);
    const actions: Record<string, unknown>[] = [];
    for await (const { entry } of store.journalEntries()) if (entry.body.kind === 'console') actions.push(entry.body.action!);
    expect(actions.map((a) => `${a.action} ${a.outcome} ${a.path}`)).toEqual(['login ok /console/login', 'view ok /console/policy']);
    expect((await store.verify()).ok).toBe(true);
  });

  it('lists the refused calls a pass over the journal finds, and opens one from those it kept', async () => {
    const src: ConsoleSources = { gateway: gw.runtime.gateway, keyPrefix: prefix, now: clock };
    const month = rangeOf('month', NOW);
    const r = await refusals(src, month);
    expect(r.recent.map((x) => [x.user, x.code, x.rule])).toEqual([['bob', 'POLICY_DENIED', 'contractors-no-premium']]);
    const pass: string[] = [];
    for await (const d of decisions(src)) if (d.event.outcome === 'refused') pass.push(d.event['request.id']);
    expect(r.recent.map((x) => x.id)).toEqual(pass);
    expect((await findDecision(src, r.recent[0]!.id))?.event).toMatchObject({ 'request.id': r.recent[0]!.id, outcome: 'refused', 'user.id': 'bob' });
  });

  it('shows a settlement that lands late in a day it has already shown and kept (from a replica whose clock is behind)', async () => {
    // Another replica, its clock three days behind: what it settles goes to a day older than the
    // console's yesterday, which the console keeps between views while its version is unchanged.
    // Redis's own clock (today's date) is past that day, so each such write changes the version.
    const behind = NOW - 3 * 86_400_000;
    const redisNow = createClient({ url: redis.url });
    await redisNow.connect();
    expect(dayOf(await redisTimeMs(redisNow)) > dayOf(behind), 'Redis\'s clock is past the late day').toBe(true);
    redisNow.destroy();
    const late = new RedisQuotaStore({ url: redis.url, prefix, now: () => behind, logger: pino({ level: 'silent' }), sweepIntervalMs: 0 });
    const start = Date.UTC(2026, 10, 23);
    const line = (amount: number): LedgerLine => ({ budgetId: 'user-weekly', subject: 'carol', limit: 100_000, amount, expiresAt: start + 9 * 86_400_000, ...lineKeys(prefix, 'user-weekly', 'carol', [start], start) });
    const event = (id: string): DecisionRecord => ({
      event: 'tollgate.decision',
      'request.id': id,
      outcome: 'success',
      'user.id': 'carol',
      'user.teams': ['data'],
      'user.cost_center': 'cc-3',
      'tollgate.model.served': 'demo/medium',
      'tollgate.tier.served': 'standard',
      'gen_ai.usage.input_tokens': 100,
      'gen_ai.usage.output_tokens': 20,
      'tollgate.cost_usd': 0.0005,
    });
    const settle = async (id: string) => {
      await late.reserve(id, [line(500)], 60_000);
      await late.settle(id, [line(120)], event(id));
    };
    try {
      await settle('late-1');
      const src: ConsoleSources = { gateway: gw.runtime.gateway, keyPrefix: prefix, now: clock };
      const month = rangeOf('month', NOW);
      const carol = (o: Awaited<ReturnType<typeof overview>>) => o.by.user.find((r) => r.key === 'carol');
      expect(carol(await overview(src, month))).toMatchObject({ calls: 1, inputTokens: 100, outputTokens: 20, costMicroUsd: 500 });
      // Shown again with nothing written: the late day is kept, not read again; today and
      // yesterday are read whole every time, and the 27 others have no hash and are asked for one
      // each time.
      const kept = await overview(src, month);
      expect(src.redisRollups!.lastReadWhole).toBe(29);

      await settle('late-2');
      const after = await overview(src, month);
      expect(src.redisRollups!.lastReadWhole).toBe(30);
      expect(carol(after)).toMatchObject({ calls: 2, inputTokens: 200, outputTokens: 40, costMicroUsd: 1000 });
      expect(after.total.calls).toBe(kept.total.calls + 1);
      expect(after.trend.find((p) => p.day === '2026-11-22')).toEqual({ day: '2026-11-22', calls: 2, tokens: 240, costMicroUsd: 1000 });
      // What a process that kept nothing reads.
      expect(after).toEqual(await overview({ gateway: gw.runtime.gateway, keyPrefix: prefix, now: clock }, month));
      expect((await store.verify()).ok).toBe(true);
    } finally {
      await late.close();
    }
  });
});

describe('when the console is served', () => {
  const policy = (extra: string) => parsePolicy(`${CONSOLE_POLICY.replace(/^ {2}- \{ id: admin.*$/m, '')}${extra}`, 'p.yaml');
  const withAdmin = parsePolicy(CONSOLE_POLICY, 'p.yaml');

  it('is on at a loopback address, and elsewhere only once an admin identity is configured', () => {
    expect(consoleEnabled(policy(''), '127.0.0.1')).toBe(true);
    expect(consoleEnabled(policy(''), '::1')).toBe(true);
    expect(consoleEnabled(policy(''), '0.0.0.0')).toBe(false);
    expect(consoleEnabled(withAdmin, '0.0.0.0')).toBe(true);
    expect(consoleEnabled(policy('console: { enabled: false }\n'), '127.0.0.1')).toBe(false);
    expect(consoleEnabled(policy('console: { enabled: true }\n'), '0.0.0.0')).toBe(true);
  });

  it('answers as if there were none when it is off', async () => {
    const gw = await startConsoleGateway(`${CONSOLE_POLICY}console: { enabled: false }\n`);
    try {
      const res = await fetch(`${gw.url}/console/login`);
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    } finally {
      await gw.close();
    }
  });
});
