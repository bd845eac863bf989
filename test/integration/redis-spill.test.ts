/**
 * The drill for writes a replica holds during a Redis outage: Redis is killed, calls are refused
 * (their budget fails closed) and their refusals can only be queued; then the replica is killed
 * too, as a crash would. The refusals were answered, so they must not die with the process: the
 * replica keeps each queued write in a file in its data directory before the caller hears the
 * answer, and the next gateway started on that directory writes them once Redis is back.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp } from '../helpers/gateway.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';
import { startPrivateRedis, type PrivateRedis } from '../helpers/redis.js';

type ErrorMeta = { code: string };

describe('refusals queued during a Redis outage, when the replica holding them is killed', () => {
  let redis: PrivateRedis;
  let dir: string;
  const procs: GatewayProcess[] = [];
  const clients: Client[] = [];

  beforeAll(async () => {
    redis = await startPrivateRedis({ appendonly: true });
    dir = mkdtempSync(join(tmpdir(), 'tollgate-spill-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => {});
    for (const p of procs.splice(0)) await p.stop();
  });
  afterAll(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const policyFile = () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, basicPolicy());
    return file;
  };
  const start = async (name: string, dataDir: string) => {
    const env = { REDIS_URL: redis.url, TOLLGATE_STORE_TIMEOUT_MS: '500', TOLLGATE_DATA_DIR: dataDir };
    const p = await spawnGateway({ policyFile: policyFile(), eventsFile: join(dir, `${name}.jsonl`), env });
    procs.push(p);
    return p;
  };
  const call = async (c: Client) => {
    const r = await c.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 50 } });
    return r.isError ? (r._meta as Record<string, ErrorMeta>)['io.tollgate/error']!.code : 'served';
  };

  it('writes them to the journal from the next start on the same data directory, once each', { timeout: 60_000 }, async () => {
    const dataDir = join(dir, 'data');
    const a = await start('a', dataDir);
    const client = await connectHttp(a.mcpUrl, KEYS.alice);
    clients.push(client);
    expect(await call(client)).toBe('served');
    await a.eventsWhen(1);

    await redis.kill();
    const refused = [await call(client), await call(client), await call(client)];
    expect(refused).toEqual(['QUOTA_STORE_UNAVAILABLE', 'QUOTA_STORE_UNAVAILABLE', 'QUOTA_STORE_UNAVAILABLE']);
    // Answered, but their events wait for Redis: the replica now dies with them queued.
    expect(a.events()).toHaveLength(1);
    procs.splice(procs.indexOf(a), 1);
    await a.kill();
    clients.splice(0);
    expect(readdirSync(join(dataDir, 'redis-spill')).length).toBeGreaterThan(0);

    await redis.restart();
    const b = await start('b', dataDir);
    const events = await b.eventsWhen(3, 20_000);
    expect(events.map((e) => [e.outcome, e['error.code'], e['user.id']])).toEqual(Array(3).fill(['failed', 'QUOTA_STORE_UNAVAILABLE', 'alice']));
    // Written once: the file it took them from is gone, and what B holds is empty again.
    const spill = join(dataDir, 'redis-spill');
    const deadline = Date.now() + 5000;
    const left = () => readdirSync(spill).filter((f) => readFileSync(join(spill, f), 'utf8').length > 0);
    while (left().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(left()).toEqual([]);
    expect(existsSync(spill)).toBe(true);

    // A third start finds nothing to write again.
    procs.splice(procs.indexOf(b), 1);
    await b.stop();
    const c = await start('c', dataDir);
    await new Promise((r) => setTimeout(r, 1000));
    expect(c.events()).toEqual([]);
    expect(b.events()).toHaveLength(3);
  });
});
