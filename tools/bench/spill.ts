/**
 * What the replay spill (src/quota/spill.ts) costs a write queued during a Redis outage: a store
 * whose Redis does not answer (a port nothing listens on) queues `--writes` refusals, `--batch` at
 * a time as concurrent calls would, with the spill or without it (`--no-spill`). Prints the rate,
 * the CPU a write, what stayed in memory and what went to disk only, and the file's size.
 *
 *   npx tsx tools/bench/spill.ts --writes 50000            # and with --no-spill
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { RedisQuotaStore } from '../../src/quota/redis.js';

const { values } = parseArgs({
  options: {
    writes: { type: 'string', default: '50000' },
    batch: { type: 'string', default: '100' },
    'no-spill': { type: 'boolean', default: false },
    port: { type: 'string', default: '1' },
  },
});

async function main(): Promise<void> {
  const writes = Number(values.writes);
  const batch = Number(values.batch);
  const root = mkdtempSync(join(tmpdir(), 'tollgate-spill-bench-'));
  const dir = join(root, 'redis-spill');
  const store = new RedisQuotaStore({
    url: `redis://127.0.0.1:${values.port}`,
    prefix: 'spill-bench:',
    commandTimeoutMs: 300,
    logger: pino({ level: 'silent' }),
    spillDir: values['no-spill'] ? undefined : dir,
    sweepIntervalMs: 0,
  });
  const event = (i: number) => ({
    event: 'tollgate.decision',
    'request.id': `bench-${i.toString(36).padStart(8, '0')}`,
    time: new Date().toISOString(),
    outcome: 'failed',
    'error.code': 'QUOTA_STORE_UNAVAILABLE',
    'user.id': 'alice',
    'user.teams': ['platform'],
    reason: 'The quota store is unreachable and budget user-weekly fails closed; try again shortly.',
  });
  const started = performance.now();
  const cpu = process.cpuUsage();
  for (let i = 0; i < writes; i += batch) await Promise.all(Array.from({ length: Math.min(batch, writes - i) }, (_, j) => store.record(event(i + j))));
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const files = (() => {
    try {
      return readdirSync(dir).map((f) => statSync(join(dir, f)).size);
    } catch {
      return [];
    }
  })();
  console.log(
    `${writes} writes queued (${values['no-spill'] ? 'no spill' : 'spill'}): ${ms.toFixed(0)} ms, ${Math.round((writes / ms) * 1000)} a second, ` +
      `CPU ${((used.user + used.system) / writes).toFixed(1)} µs a write; pending ${store.pendingReplays()}, dropped ${store.droppedReplayCount()}; ` +
      `spill file ${files.length ? `${(files.reduce((a, b) => a + b, 0) / 1e6).toFixed(1)} MB` : 'none'}; RSS ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`,
  );
  rmSync(root, { recursive: true, force: true });
  process.exit(0);
}

void main();
