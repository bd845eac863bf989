/**
 * The sinks on the Redis journal: a real gateway charges calls to a RedisQuotaStore; `usage
 * report --redis` (from the store's day rollups), `usage refusals --redis` and `usage export
 * --redis` (from its streams) say what the same commands say from the gateway's event log, and
 * `audit verify --redis` passes, then names the entry an operator deleted from the stream.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@keyv/redis';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAuditCommand } from '../../src/admin/audit.js';
import { runUsageCommand } from '../../src/admin/cli.js';
import { shownUrl } from '../../src/admin/redisJournal.js';
import type { UsageReport } from '../../src/admin/report.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { basicPolicy, KEYS } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const DAY1 = Date.parse('2026-11-25T10:00:00.000Z');
const DAY2 = Date.parse('2026-11-26T09:00:00.000Z');
const WINDOW = ['--from', '2026-11-25T00:00:00Z', '--to', '2026-11-27T00:00:00Z'];

let redis: TestRedis;
let gw: TestGateway;
let work: string;
let eventsFile: string;
const prefix = uniquePrefix('admin-sinks');
let policyFile: string;
/** The gateway's policy, which the audit checks the store against. */
const env = () => ({ TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_POLICY: policyFile });
let now = DAY1;

beforeAll(async () => {
  redis = await startRedis();
  work = mkdtempSync(join(tmpdir(), 'tollgate-redis-sinks-'));
  eventsFile = join(work, 'events.jsonl');
  policyFile = join(work, 'policy.yaml');
  writeFileSync(policyFile, basicPolicy({ userTokens: 1_000_000 }));
  const store = new RedisQuotaStore({ url: redis.url, prefix, now: () => now, logger: pino({ level: 'silent' }), sweepIntervalMs: 0 });
  gw = await startTestGateway(basicPolicy({ userTokens: 1_000_000 }), { now: () => now, store, env: { TOLLGATE_KEY_PREFIX: prefix } });
  const clients: Record<string, Client> = {};
  for (const who of ['alice', 'bob', 'carol'] as const) clients[who] = await connectHttp(gw.mcpUrl, KEYS[who]);
  const call = async (who: string, args: Record<string, unknown>) => {
    await clients[who]!.callTool({ name: 'complete', arguments: args });
    await gw.idle();
  };
  // Estimates are journaled (and verified) but are not calls: the reports below are unchanged by them.
  await clients.alice!.callTool({ name: 'estimate', arguments: { prompt: 'hello' } });
  await clients.bob!.callTool({ name: 'estimate', arguments: { prompt: 'hi', tier: 'premium' } });
  await clients.bob!.callTool({ name: 'estimate', arguments: { prompt: 'hi', max_tokens: 0 } });
  await gw.idle();
  await call('alice', { prompt: 'hello' });
  await call('alice', { prompt: 'hello there', tier: 'premium' });
  await call('bob', { prompt: 'hi', tier: 'premium' }); // refused: contractors-no-premium
  await call('carol', { prompt: 'hi', tier: 'economy' });
  now = DAY2;
  await call('bob', { prompt: 'question?' });
  await call('alice', { prompt: 'hello' });
  for (const c of Object.values(clients)) await c.close();
  await gw.idle();
  writeFileSync(eventsFile, gw.events.map((e) => `${JSON.stringify(e)}\n`).join(''));
  await gw.close();
});
afterAll(async () => {
  await deleteKeys(redis.url, prefix);
  await redis.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('usage sinks on the Redis journal', () => {
  it('reports from the rollups what the event log says, each call once', async () => {
    for (const by of ['team', 'cost-center', 'user', 'model', 'tier']) {
      const fromRedis = JSON.parse(await runUsageCommand(['report', '--redis', redis.url, '--by', by, '--window', 'day', ...WINDOW, '--format', 'json'], env())) as UsageReport;
      const fromEvents = JSON.parse(await runUsageCommand(['report', '--events', eventsFile, '--by', by, '--window', 'day', ...WINDOW, '--format', 'json'], env())) as UsageReport;
      expect(fromRedis.rows).toEqual(fromEvents.rows);
      expect(fromRedis.total).toEqual(fromEvents.total);
    }
    const r = JSON.parse(await runUsageCommand(['report', '--redis', redis.url, '--by', 'user', '--window', 'month', ...WINDOW, '--format', 'json'], env())) as UsageReport;
    // alice 2 + 4 tokens on demo/medium twice (66 micro-dollars each) and 3 + 5 on demo/large (420), carol 1 + 4 on demo/small (21), bob 3 + 4 on demo/medium (69).
    expect(r.total).toEqual({ calls: 6, inputTokens: 11, outputTokens: 21, costMicroUsd: 642, recovered: 0, refused: { POLICY_DENIED: 1 }, failed: {} });
    expect(r.charges).toBeUndefined();
  });

  it('says when --from and --to are widened to whole days', async () => {
    const r = JSON.parse(await runUsageCommand(['report', '--redis', redis.url, '--by', 'user', '--window', 'day', '--from', '2026-11-25T12:00:00Z', '--to', '2026-11-26T12:00:00Z', '--format', 'json'], env())) as UsageReport;
    expect(r.notes).toEqual(['The Redis rollups are per UTC day: this report covers the whole days 2026-11-25 to 2026-11-26.']);
  });

  it('lists refusals and exports usage from the streams as from the event log', async () => {
    for (const args of [['refusals', ...WINDOW], ['refusals', ...WINDOW, '--by', 'team,code', '--format', 'csv'], ['export', ...WINDOW], ['export', ...WINDOW, '--format', 'focus']]) {
      expect(await runUsageCommand([...args, '--redis', redis.url], env())).toBe(await runUsageCommand([...args, '--events', eventsFile], env()));
    }
    expect(await runUsageCommand(['refusals', ...WINDOW, '--redis', redis.url, '--by', 'user,code', '--format', 'csv'], env())).toBe('user,code,refusals,last\nbob,POLICY_DENIED,1,2026-11-25T10:00:00.000Z\n');
  });
});

describe('audit verify --redis', () => {
  it('verifies the journal the gateway wrote, then names an entry deleted from the stream', async () => {
    const ok = await runAuditCommand(['verify', '--redis', redis.url], env());
    expect(ok.code).toBe(0);
    const lines = ok.out.split('\n');
    expect(lines[0]).toBe(`redis journal ${shownUrl(redis.url)}: verified`);
    expect(lines[1]).toMatch(/^ {2}streams {3}1 stream, \d+ entries$/);

    const raw = createClient({ url: redis.url });
    await raw.connect();
    try {
      const stream = `${prefix}{journal}:j`;
      const third = (await raw.xRange(stream, '-', '+', { COUNT: 3 }))[2]!;
      await raw.xDel(stream, String(third.id));
      const bad = await runAuditCommand(['verify', '--redis', redis.url], env());
      expect(bad.code).toBe(1);
      expect(bad.out.split('\n').slice(0, 3)).toEqual([
        `redis journal ${shownUrl(redis.url)}: FAILED`,
        expect.stringMatching(/^ {2}streams {3}1 stream, \d+ entries$/),
        `    ${stream}: FAILED at entry 3: entry 3 is missing or out of order (found 4)`,
      ]);
    } finally {
      raw.destroy();
    }
  });

  it('names a prefix under which there is no journal', async () => {
    await expect(runUsageCommand(['report', '--redis', redis.url, '--by', 'user', '--window', 'day'], { TOLLGATE_KEY_PREFIX: `${prefix}nothing:` })).rejects.toThrow(
      `no journal stream under the key prefix ${prefix}nothing: in this Redis; set TOLLGATE_KEY_PREFIX to the gateway's`,
    );
  });

  it('never prints the password of the URL', () => {
    expect(shownUrl('redis://:s3cret@redis.internal:6379')).toBe('redis://:***@redis.internal:6379');
  });
});
