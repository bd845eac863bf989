/**
 * One budget enforced by several replicas through the shared Redis ledger: separate gateway
 * processes (or one gateway's cluster workers), real Redis, the real MCP client.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { applicableLines } from '../../src/policy/budgets.js';
import { parsePolicy } from '../../src/policy/load.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp } from '../helpers/gateway.js';
import { childPids, spawnGateway, type GatewayProcess } from '../helpers/process.js';
import { sendRaw } from '../helpers/raw.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

type ErrorMeta = { code: string };
type Charged = { budget: string; subject: string; amount: number }[];

describe('two gateway processes sharing one Redis ledger', () => {
  let redis: TestRedis;
  let dir: string;
  const prefix = uniquePrefix('shared');
  const procs: GatewayProcess[] = [];
  const clients: Client[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'tollgate-shared-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => {});
    for (const p of procs.splice(0)) await p.stop();
  });
  afterAll(async () => {
    await deleteKeys(redis.url, prefix);
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  let started = 0;
  const start = async (name: string, policyText: string) => {
    const n = ++started;
    const policyFile = join(dir, `${name}-${n}.yaml`);
    writeFileSync(policyFile, policyText);
    // A generous store timeout: these tests are about exactness under load, not about outages.
    const env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: `${prefix}${name}:`, TOLLGATE_STORE_TIMEOUT_MS: '10000' };
    const p = await spawnGateway({ policyFile, eventsFile: join(dir, `${name}-${n}.jsonl`), env });
    procs.push(p);
    return p;
  };
  /** Stops a gateway here rather than after the test: once it has exited, its events file is complete. */
  const stop = async (p: GatewayProcess) => {
    procs.splice(procs.indexOf(p), 1);
    await p.stop();
  };
  const connect = async (p: GatewayProcess, key: string) => {
    const c = await connectHttp(p.mcpUrl, key);
    clients.push(c);
    return c;
  };

  it('lets exactly N of 200 concurrent calls through across both replicas, and the ledger equals the settled events', { timeout: 120_000 }, async () => {
    // Each call reserves its input's bound (5 UTF-8 bytes + 24 framing tokens) + 100 output = 129
    // tokens; 1,548 fit exactly twelve, and what is left is always a multiple of 129, so no call
    // falls back to an exact count that a smaller remainder could take.
    // The demo provider holds each call 10 s, so every reservation is made before any settles (at 4 s,
    // a machine under heavy load let early calls settle first and give back budget that more then used).
    const text = basicPolicy({ userTokens: 1548, tierDownBelow: 0 }).replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 10000 }');
    const [a, b] = await Promise.all([start('race', text), start('race', text)]);
    const [ca, cb] = await Promise.all([connect(a, KEYS.alice), connect(b, KEYS.alice)]);
    const call = (c: Client) => c.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => call(i % 2 === 0 ? ca : cb)));

    const served = results.filter((r) => !r.isError);
    const refused = results.filter((r) => r.isError).map((r) => (r._meta as Record<string, ErrorMeta>)['io.tollgate/error']!.code);
    expect(served).toHaveLength(12);
    expect(refused).toEqual(Array(188).fill('BUDGET_EXHAUSTED'));

    // Each replica decided its own half; which of them won the budget depends on timing. A call's
    // ledger write and event follow its answer, so the events are awaited, then counted exactly.
    const [eventsA, eventsB] = await Promise.all([a.eventsWhen(100), b.eventsWhen(100)]);
    expect(eventsA).toHaveLength(100);
    expect(eventsB).toHaveLength(100);

    // The events both replicas wrote add up to the ledger.
    const usage = served.map((r) => (r.structuredContent as { usage: { inputTokens: number; outputTokens: number } }).usage);
    const used = usage.reduce((n, u) => n + u.inputTokens + u.outputTokens, 0);
    expect(used).toBeLessThanOrEqual(1548);
    const charged = [...eventsA, ...eventsB].flatMap((e) => (e['tollgate.charged'] as Charged | undefined) ?? []).reduce((n, c) => n + c.amount, 0);
    expect(charged).toBe(used);
    const budget = ((await ca.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: { used: number; reserved: number }[] }).budgets[0]!;
    expect(budget).toMatchObject({ used, reserved: 0 });

    // Once both have exited, nothing more can be written: still one event per call.
    await Promise.all([stop(a), stop(b)]);
    expect(a.events()).toHaveLength(100);
    expect(b.events()).toHaveLength(100);
  });

  it('recovers the reservation of a replica killed mid-call once it expires: charged at the reservation, since the call had reached the provider', { timeout: 60_000 }, async () => {
    const text = basicPolicy({ userTokens: 10_000 })
      .replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 30000 }')
      .concat('limits: { reservationTtlSeconds: 60 }\n');
    const p = await start('crash', text);
    const c = await connect(p, KEYS.alice);
    // The test reads the ledger as another replica would, on a clock it can move past the TTL.
    let ahead = 0;
    const store = new RedisQuotaStore({ url: redis.url, prefix: `${prefix}crash:`, now: () => Date.now() + ahead });
    try {
      const policy = parsePolicy(text, 'crash.yaml');
      const lines = applicableLines(policy.budgets, { user: 'alice', teams: ['platform'], costCenter: 'cc-1', groups: ['employees'], roles: [], authMethod: 'api_key' }, Date.now(), `${prefix}crash:`);
      const state = async () => (await store.read(lines.map((l) => l.line)))[0]!;

      void c.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } }).catch(() => {});
      const deadline = Date.now() + 10_000;
      while ((await state()).reserved === 0) {
        if (Date.now() > deadline) throw new Error('the call never reserved');
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await state()).toEqual({ used: 0, reserved: 129 });
      await p.kill();
      procs.splice(procs.indexOf(p), 1);
      clients.splice(clients.indexOf(c), 1);
      // Nobody released it: the reservation stands until its 60 s TTL has passed. The journal shows
      // the call dispatched (the provider may bill it), so recovery charges it at its reservation.
      expect(await state()).toEqual({ used: 0, reserved: 129 });
      const recovered: Record<string, unknown>[] = [];
      store.onEvent((e) => recovered.push(e));
      ahead = 60_000;
      expect(await state()).toEqual({ used: 129, reserved: 0 });
      expect(recovered).toHaveLength(1);
      expect(recovered[0]).toMatchObject({ outcome: 'success', 'user.id': 'alice', 'tollgate.settled_by': 'recovery' });
    } finally {
      await store.close();
    }
  });

  it('runs as one gateway of two workers (--workers 2): one budget, any worker serves a session, /metrics sums both', { timeout: 120_000 }, async () => {
    const text = basicPolicy({ userTokens: 1548, tierDownBelow: 0 }).replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 3000 }');
    const n = ++started;
    const policyFile = join(dir, `workers-${n}.yaml`);
    writeFileSync(policyFile, text);
    const env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: `${prefix}workers:`, TOLLGATE_STORE_TIMEOUT_MS: '10000', TOLLGATE_WORKERS: '2' };
    const g = await spawnGateway({ policyFile, eventsFile: join(dir, `workers-${n}.jsonl`), env, startTimeoutMs: 60_000 });
    procs.push(g);

    // A session opened on one connection, then used on fresh connections: the kernel hands new
    // connections to the workers in turn, so some of these calls reach the worker that did not open it.
    const headers = { authorization: `Bearer ${KEYS.bob}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const init = await freshPost(g.mcpUrl, headers, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } });
    expect(init.status).toBe(200);
    const session = { ...headers, 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': '2025-06-18' };
    const lists = await Promise.all(Array.from({ length: 6 }, (_, i) => freshPost(g.mcpUrl, session, { jsonrpc: '2.0', id: i + 1, method: 'tools/list' })));
    expect(lists.map((r) => r.status)).toEqual(Array(6).fill(200));

    // 40 calls at once through two clients: exactly twelve fit the budget, whichever worker takes them.
    const [ca, cb] = await Promise.all([connect(g, KEYS.alice), connect(g, KEYS.alice)]);
    const call = (c: Client) => c.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => call(i % 2 === 0 ? ca : cb)));
    expect(results.filter((r) => !r.isError)).toHaveLength(12);
    // Each call's ledger write and event follow its answer: wait for all 40 events, then count them exactly.
    const events = await g.eventsWhen(40);
    expect(events).toHaveLength(40);
    const charged = events.flatMap((e) => (e['tollgate.charged'] as Charged | undefined) ?? []).reduce((sum, c) => sum + c.amount, 0);
    const budget = ((await ca.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: { used: number; reserved: number }[] }).budgets[0]!;
    expect(budget).toMatchObject({ used: charged, reserved: 0 });

    // Every worker's counters, summed, whichever worker answers the scrape.
    for (let i = 0; i < 2; i++) {
      const metrics = await (await fetch(g.mcpUrl.replace(/\/mcp$/, '/metrics'))).text();
      const decided = [...metrics.matchAll(/^tollgate_decisions_total\{[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
      expect(decided).toBe(40);
    }

    // Once the gateway and its workers have exited, nothing more can be written: still exactly 40.
    await stop(g);
    expect(g.events()).toHaveLength(40);
  });

  it('replaces a worker that dies', { timeout: 60_000 }, async () => {
    const n = ++started;
    const policyFile = join(dir, `respawn-${n}.yaml`);
    writeFileSync(policyFile, basicPolicy());
    const env = { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: `${prefix}respawn:`, TOLLGATE_WORKERS: '2' };
    const g = await spawnGateway({ policyFile, eventsFile: join(dir, `respawn-${n}.jsonl`), env, startTimeoutMs: 60_000 });
    procs.push(g);
    const workers = () => childPids(g.child.pid!);
    const before = workers();
    expect(before).toHaveLength(2);
    process.kill(before[0]!, 'SIGKILL');
    const headers = { authorization: `Bearer ${KEYS.bob}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } };
    // A connection the primary hands to the worker in the instant it dies is lost (node:cluster);
    // once the primary has seen the exit it starts a replacement and every connection is served.
    const deadline = Date.now() + 15_000;
    while (!(workers().length === 2 && !workers().includes(before[0]!))) {
      if (Date.now() > deadline) throw new Error(`no replacement worker: ${workers().join(',')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const answers = await Promise.all(Array.from({ length: 6 }, () => freshPost(g.mcpUrl, headers, init)));
    expect(answers.map((r) => r.status)).toEqual(Array(6).fill(200));
  });

  it('refuses --workers above 1 without the shared Redis store', async () => {
    const policyFile = join(dir, 'workers-memory.yaml');
    writeFileSync(policyFile, basicPolicy());
    await expect(spawnGateway({ policyFile, eventsFile: join(dir, 'workers-memory.jsonl'), env: { TOLLGATE_WORKERS: '2' } })).rejects.toThrow(
      /exited with 2:\ntollgate: --workers 2 needs the shared Redis store \(--redis or REDIS_URL\)/,
    );
  });
});

/** One POST on a connection of its own (Connection: close), as a new client connection would be. */
function freshPost(url: string, headers: Record<string, string>, body: unknown) {
  return sendRaw(url, { headers: { ...headers, connection: 'close' }, body: JSON.stringify(body) });
}
