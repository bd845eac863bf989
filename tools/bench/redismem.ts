/**
 * What a call leaves in Redis, and for how long: drives calls through the enforcement pipeline in
 * process (as tools/bench/pipeline.ts does: identify, policy, reserve, the demo provider, settle,
 * one event) against a Redis, then groups the keys under the run's prefix by kind and prints, per
 * kind, how many keys, their MEMORY USAGE, the bytes per call and per million calls, and their
 * remaining lifetime (PTTL). Also Redis's `used_memory` before and after, which adds the key
 * space's own overhead (run it against a Redis nobody else writes to).
 *
 *   npm run bench:redismem -- --redis redis://127.0.0.1:6396 [--calls 20000] [--concurrency 32] [--limits]
 *     [--env TOLLGATE_SETTLED_MARKER_SECONDS=3600 --env TOLLGATE_JOURNAL_MAXLEN=10000 ...] [--keep]
 *
 * --limits adds a requests-per-minute limit and a concurrency cap per user (their keys show too);
 * --env sets a tollgate variable for the run (repeatable); --keep leaves the keys in Redis.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from '@keyv/redis';
import { buildRuntime, settingsFromEnv } from '../../src/main.js';
import { parseCompleteArgs } from '../../src/call/request.js';
import { parsePolicy } from '../../src/policy/load.js';
import { deleteKeys } from '../../test/helpers/redis.js';
import { runBench, threeBudgetPolicy } from './common.js';

const { values } = parseArgs({
  options: {
    redis: { type: 'string' },
    calls: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
    limits: { type: 'boolean', default: false },
    env: { type: 'string', multiple: true, default: [] },
    keep: { type: 'boolean', default: false },
  },
});
if (!values.redis) throw new Error('--redis <url> is required (a Redis nobody else writes to)');
const REDIS = values.redis;
const CALLS = Number(values.calls);
const CONCURRENCY = Number(values.concurrency);

const POLICY = threeBudgetPolicy('redismem-bench');

const LIMITS = `
rateLimits:
  - { id: user-rpm, scope: user, requestsPerMinute: 1000000000 }
  - { id: user-inflight, scope: user, concurrent: 1000000 }
`;

/** The kind of a key, from its name without the prefix. */
function kindOf(key: string): string {
  if (key.startsWith('kv')) return 'Keyv request record (req:<id>)';
  if (/:s:[^:]+$/.test(key)) return 'settled marker (R:s:<id>)';
  if (/:u:-?\d+$/.test(key)) return 'usage counter (:u:<start>)';
  if (/\{journal\}:j$/.test(key) || /:j$/.test(key)) return 'journal stream (:j)';
  if (/:jh$/.test(key)) return 'journal head (:jh)';
  if (/:roll:/.test(key)) return 'rollup hash (:roll:<day>)';
  if (/\{journal\}:open$/.test(key)) return 'sweep index (:open)';
  if (/:r$/.test(key)) return 'reservations (R)';
  if (/:r:x$/.test(key)) return 'reservation expiries (R:x)';
  if (/:r:i$/.test(key)) return 'recovery info (R:i)';
  return `other: ${key.replace(/[0-9a-f-]{36}/g, '<id>').replace(/\d{6,}/g, '<n>')}`;
}

async function usedMemory(client: { info(section: string): Promise<string> }): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1] ?? 'NaN');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-redismem-'));
  const prefix = `tgmem:${randomBytes(4).toString('hex')}:`;
  const extra = Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl'), TOLLGATE_KEY_PREFIX: prefix, REDIS_URL: REDIS, ...extra });
  const client = createClient({ url: REDIS });
  await client.connect();
  const before = await usedMemory(client);
  const runtime = await buildRuntime(settings, { policy: parsePolicy(POLICY + (values.limits ? LIMITS : ''), 'redismem-bench.yaml') });
  const gateway = runtime.gateway;
  const principal = { user: 'bench-user', teams: ['bench-team'], costCenter: 'cc-bench', groups: ['employees'], roles: [], authMethod: 'api_key' as const, credentialId: 'bench' };
  const args = { prompt: 'Summarise the quarterly report in three lines', max_tokens: 64 };
  const one = () => gateway.complete({ principal, transport: 'http', request: parseCompleteArgs(args, gateway.policy.config.limits) });
  try {
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < CALLS) await one();
    }));
    await gateway.idle();
    const after = await usedMemory(client);
    const kinds = new Map<string, { keys: number; bytes: number; ttlMin: number; ttlMax: number; type: string }>();
    for await (const page of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      const keys = page.map(String);
      const [bytes, ttls, types] = await Promise.all([
        Promise.all(keys.map((k) => client.memoryUsage(k, { SAMPLES: 0 }))),
        Promise.all(keys.map((k) => client.pTTL(k))),
        Promise.all(keys.map((k) => client.type(k))),
      ]);
      keys.forEach((k, i) => {
        const kind = kindOf(k.slice(prefix.length));
        const row = kinds.get(kind) ?? { keys: 0, bytes: 0, ttlMin: Infinity, ttlMax: -Infinity, type: String(types[i]) };
        row.keys += 1;
        row.bytes += Number(bytes[i] ?? 0);
        row.ttlMin = Math.min(row.ttlMin, Number(ttls[i]));
        row.ttlMax = Math.max(row.ttlMax, Number(ttls[i]));
        kinds.set(kind, row);
      });
    }
    const life = (ms: number) => (ms < 0 ? 'none' : ms >= 86_400_000 ? `${(ms / 86_400_000).toFixed(1)} d` : ms >= 3600_000 ? `${(ms / 3600_000).toFixed(2)} h` : `${(ms / 1000).toFixed(0)} s`);
    process.stdout.write(`${CALLS} calls (3 budget lines${values.limits ? ', 2 rate limits' : ''}), ${Object.entries(extra).map(([k, v]) => `${k}=${v}`).join(' ') || 'default retention'}\n`);
    process.stdout.write(`${'kind'.padEnd(40)}${'type'.padEnd(8)}${'keys'.padStart(9)}${'bytes'.padStart(12)}${'B/call'.padStart(9)}${'MB/M calls'.padStart(12)}  lifetime (PTTL min-max)\n`);
    let total = 0;
    for (const [kind, r] of [...kinds].sort((a, b) => b[1].bytes - a[1].bytes)) {
      total += r.bytes;
      process.stdout.write(`${kind.padEnd(40)}${r.type.padEnd(8)}${String(r.keys).padStart(9)}${String(r.bytes).padStart(12)}${(r.bytes / CALLS).toFixed(0).padStart(9)}${((r.bytes / CALLS) * 1e6 / 2 ** 20).toFixed(0).padStart(12)}  ${life(r.ttlMin)} - ${life(r.ttlMax)}\n`);
    }
    process.stdout.write(`${'MEMORY USAGE, all keys'.padEnd(48)}${''.padStart(9)}${String(total).padStart(12)}${(total / CALLS).toFixed(0).padStart(9)}${((total / CALLS) * 1e6 / 2 ** 20).toFixed(0).padStart(12)}\n`);
    process.stdout.write(`${'used_memory after - before'.padEnd(48)}${''.padStart(9)}${String(after - before).padStart(12)}${((after - before) / CALLS).toFixed(0).padStart(9)}${(((after - before) / CALLS) * 1e6 / 2 ** 20).toFixed(0).padStart(12)}\n`);
  } finally {
    await runtime.close();
    if (!values.keep) await deleteKeys(REDIS, prefix);
    client.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench('redismem bench', main);
