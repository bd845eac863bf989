/**
 * Windows and outages at the gateway level on a real Redis: a new window starts at zero without any
 * reset job (calendar weeks in Paris and in UTC roll over at different instants), fail modes are
 * honoured while the store is down, and a settlement that could not be written is replayed once.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { KEYS, STANDARD_HEAD, sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { heldProvider } from '../helpers/heldProvider.js';
import { deleteKeys, startPrivateRedis, startRedis, uniquePrefix, type PrivateRedis, type TestRedis } from '../helpers/redis.js';

type Budget = { id: string; used: number; reserved: number; resetsAt: string };
type ErrorMeta = { code: string; message: string };

const policy = () => `
${STANDARD_HEAD}apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform], groups: [employees] }
  - { id: k-bob, sha256: ${sha(KEYS.bob)}, user: bob, teams: [platform], groups: [contractors] }
budgets:
  - id: paris-weekly
    scope: user
    when: "'employees' in principal.groups"
    window: { calendar: week, timezone: Europe/Paris }
    limit: { tokens: 100000 }
  - id: utc-weekly
    scope: user
    when: "'employees' in principal.groups"
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
  - id: contractor-weekly
    scope: user
    when: "'contractors' in principal.groups"
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
    failMode: open
`;

describe('windows on the shared ledger', () => {
  let redis: TestRedis;
  const prefix = uniquePrefix('windows');
  let gw: TestGateway | undefined;
  let client: Client | undefined;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await client?.close();
    await gw?.close();
  });
  afterAll(async () => {
    await deleteKeys(redis.url, prefix);
    await redis.stop();
  });

  it('starts a new Paris week at Monday 00:00 Paris while the UTC week runs on for an hour', async () => {
    let now = Date.parse('2026-11-29T22:30:00Z'); // Sunday 23:30 in Paris (UTC+1), Sunday 22:30 UTC
    const store = new RedisQuotaStore({ url: redis.url, prefix: `${prefix}tz:`, now: () => now });
    gw = await startTestGateway(policy(), { store, now: () => now, env: { TOLLGATE_KEY_PREFIX: `${prefix}tz:` } });
    client = await connectHttp(gw.mcpUrl, KEYS.alice);
    const budgets = async () =>
      Object.fromEntries(((await client!.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: Budget[] }).budgets.map((b) => [b.id, b]));

    const r = await client.callTool({ name: 'complete', arguments: { prompt: 'hello there', max_tokens: 20 } });
    const u = (r.structuredContent as { usage: { inputTokens: number; outputTokens: number } }).usage;
    const spent = u.inputTokens + u.outputTokens;
    expect(await budgets()).toMatchObject({
      'paris-weekly': { used: spent, resetsAt: '2026-11-29T23:00:00.000Z' },
      'utc-weekly': { used: spent, resetsAt: '2026-11-30T00:00:00.000Z' },
    });

    now = Date.parse('2026-11-29T23:30:00Z'); // Monday 00:30 in Paris, still Sunday in UTC
    expect(await budgets()).toMatchObject({
      'paris-weekly': { used: 0, resetsAt: '2026-12-06T23:00:00.000Z' },
      'utc-weekly': { used: spent, resetsAt: '2026-11-30T00:00:00.000Z' },
    });

    now = Date.parse('2026-11-30T00:30:00Z'); // Monday in both
    expect(await budgets()).toMatchObject({ 'paris-weekly': { used: 0 }, 'utc-weekly': { used: 0, resetsAt: '2026-12-07T00:00:00.000Z' } });
  });
});

describe('store outage at the gateway', () => {
  let redis: PrivateRedis;
  const prefix = uniquePrefix('outage');
  let gw: TestGateway;
  let alice: Client;
  let bob: Client;
  let store: RedisQuotaStore;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    store = new RedisQuotaStore({ url: redis.url, prefix, commandTimeoutMs: 500, logger: { info() {}, warn() {}, error() {} } });
    gw = await startTestGateway(policy(), { store, env: { TOLLGATE_KEY_PREFIX: prefix } });
    alice = await connectHttp(gw.mcpUrl, KEYS.alice);
    bob = await connectHttp(gw.mcpUrl, KEYS.bob);
  });
  afterAll(async () => {
    await alice.close();
    await bob.close();
    await gw.close();
    await redis.stop();
  });

  const used = async (c: Client) =>
    ((await c.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: Budget[] }).budgets.map((b) => [b.id, b.used, b.reserved]);
  const spentOf = (r: Awaited<ReturnType<Client['callTool']>>) => {
    const u = (r.structuredContent as { usage: { inputTokens: number; outputTokens: number } }).usage;
    return u.inputTokens + u.outputTokens;
  };

  it('settles a call that was in flight when Redis went down once Redis is back, exactly once', async () => {
    // The provider holds the call until Redis is down: reserved in Redis, provider still answering.
    const held = heldProvider();
    gw.runtime.gateway.replacePolicy(gw.runtime.gateway.policy, new Map([['demo', held.provider]]));
    const pending = alice.callTool({ name: 'complete', arguments: { prompt: 'in flight', max_tokens: 20 } });
    await held.arrived;
    await redis.stop();
    held.release();
    const spent = spentOf(await pending); // served; its settlement is queued
    await gw.idle(); // the answer does not wait for the ledger write
    expect(store.pendingReplays()).toBe(1);

    // Budgets that fail closed refuse while the store is down; budgets that fail open are served.
    const t0 = Date.now();
    const refused = await alice.callTool({ name: 'complete', arguments: { prompt: 'x', max_tokens: 20 } });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((refused._meta as Record<string, ErrorMeta>)['io.tollgate/error']).toMatchObject({ code: 'QUOTA_STORE_UNAVAILABLE' });
    const open = await bob.callTool({ name: 'complete', arguments: { prompt: 'while down', max_tokens: 20 } });
    expect(open.isError).toBeFalsy();
    const openSpent = spentOf(open);
    await gw.idle();
    // Queued: alice's settlement, the refusal's event (journaled once Redis is back) and bob's settlement.
    expect(store.pendingReplays()).toBe(3);

    await redis.restart();
    const deadline = Date.now() + 10_000;
    while (store.pendingReplays() > 0) {
      if (Date.now() > deadline) throw new Error('replay did not drain');
      await new Promise((r) => setTimeout(r, 50));
    }
    await store.flushReplays(); // a second flush must not count anything twice
    expect(await used(alice)).toEqual([
      ['paris-weekly', spent, 0],
      ['utc-weekly', spent, 0],
    ]);
    // The fail-open call was also queued for the shared ledger and replayed.
    expect(await used(bob)).toEqual([['contractor-weekly', openSpent, 0]]);
    expect((await alice.callTool({ name: 'complete', arguments: { prompt: 'back', max_tokens: 20 } })).isError).toBeFalsy();
  });
});

describe('tollgate usage (operator commands)', () => {
  let redis: TestRedis;
  let dir: string;
  const prefix = uniquePrefix('admin');
  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'tollgate-admin-'));
  });
  afterAll(async () => {
    await deleteKeys(redis.url, prefix);
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const run = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'usage', ...args, '--policy', join(dir, 'p.yaml'), '--now', '2026-11-25T12:00:00Z', '--json'], {
      env: { PATH: process.env.PATH ?? '', REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix },
      encoding: 'utf8',
    });

  // Spawns the CLI five times; on a loaded two-core machine each start can take seconds.
  it('shows usage per subject, lists top consumers and applies a credit', { timeout: 180_000 }, async () => {
    writeFileSync(join(dir, 'p.yaml'), policy());
    const now = Date.parse('2026-11-25T12:00:00Z');
    const store = new RedisQuotaStore({ url: redis.url, prefix, now: () => now });
    const gw = await startTestGateway(policy(), { store, now: () => now, env: { TOLLGATE_KEY_PREFIX: prefix } });
    try {
      const a = await connectHttp(gw.mcpUrl, KEYS.alice);
      const b = await connectHttp(gw.mcpUrl, KEYS.bob);
      const spend = async (c: Client, prompt: string) => {
        const u = ((await c.callTool({ name: 'complete', arguments: { prompt, max_tokens: 30 } })).structuredContent as { usage: { inputTokens: number; outputTokens: number } }).usage;
        return u.inputTokens + u.outputTokens;
      };
      const aliceUsed = (await spend(a, 'one two three')) + (await spend(a, 'four five six seven'));
      const bobUsed = await spend(b, 'hi');
      await gw.idle(); // the CLI reads Redis on a connection of its own
      await a.close();
      await b.close();

      const show = run('show', '--budget', 'paris-weekly');
      expect(show.status).toBe(0);
      expect(JSON.parse(show.stdout)).toEqual([
        {
          budgetId: 'paris-weekly',
          scope: 'user',
          subject: 'alice',
          unit: 'tokens',
          used: aliceUsed,
          reserved: 0,
          limit: 100000,
          remaining: 100000 - aliceUsed,
          windowStart: '2026-11-22T23:00:00.000Z',
          resetsAt: '2026-11-29T23:00:00.000Z',
        },
      ]);

      const top = JSON.parse(run('top', '--limit', '2').stdout) as { budgetId: string; subject: string; used: number }[];
      const all = [
        ['paris-weekly', 'alice', aliceUsed],
        ['utc-weekly', 'alice', aliceUsed],
        ['contractor-weekly', 'bob', bobUsed],
      ] as const;
      // Every limit is 100,000, so the order is by tokens used; ties keep the policy's budget order.
      const expected = [...all].sort((x, y) => y[2] - x[2]).slice(0, 2);
      expect(top.map((r) => [r.budgetId, r.subject, r.used])).toEqual(expected);

      const credit = run('credit', '--budget', 'paris-weekly', '--subject', 'alice', '--amount', '1000');
      expect(credit.status).toBe(0);
      expect(JSON.parse(credit.stdout)[0]).toMatchObject({ subject: 'alice', used: aliceUsed - 1000, remaining: 100000 - aliceUsed + 1000 });

      // A budget the policy does not declare is a bad value on the command line (cli.md: exit 2).
      const bad = run('adjust', '--budget', 'nope', '--subject', 'alice', '--amount', '5');
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain('INVALID_REQUEST: No budget "nope" in the policy');
      const debit = run('adjust', '--budget', 'utc-weekly', '--subject', 'alice', '--amount=-5');
      expect(JSON.parse(debit.stdout)[0]).toMatchObject({ budgetId: 'utc-weekly', used: aliceUsed - 5 });
      expect(bad.stderr).toContain('INVALID_REQUEST: No budget "nope" in the policy');
    } finally {
      await gw.close();
    }
  });
});
