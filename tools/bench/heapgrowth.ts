/**
 * Whether the enforcement path keeps memory per call: calls through the pipeline in process (the
 * demo provider, as tools/bench/pipeline.ts), and after every `--step` calls a full GC and the
 * heap used then, with RSS. A heap that keeps growing after GC is memory held per call; a flat
 * one means RSS movements are the collector's, not the gateway's.
 *
 *   node --expose-gc --import tsx tools/bench/heapgrowth.ts [--calls 300000] [--step 25000] [--redis redis://…] [--journal] [--snapshots 20000,60000]
 *
 * --journal runs the memory store with its journal in a temporary directory, as `tollgate serve`
 * runs it without Redis. Besides the heap after GC it prints V8's external memory (buffers) and
 * RSS, so growth outside the JS heap shows too.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeHeapSnapshot } from 'node:v8';
import { buildRuntime, settingsFromEnv } from '../../src/main.js';
import { parseCompleteArgs } from '../../src/call/request.js';
import { parsePolicy } from '../../src/policy/load.js';
import { deleteKeys } from '../../test/helpers/redis.js';
import { runBench, threeBudgetPolicy } from './common.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '300000' },
    step: { type: 'string', default: '25000' },
    concurrency: { type: 'string', default: '32' },
    redis: { type: 'string' },
    /** The memory store with its journal, in the tool's temporary directory. */
    journal: { type: 'boolean', default: false },
    /** Writes a heap snapshot (after the GC) at these call counts, comma-separated, into the working directory. */
    snapshots: { type: 'string', default: '' },
  },
});
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

const POLICY = threeBudgetPolicy('heapgrowth-bench');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-heapgrowth-'));
  const prefix = `tgheap:${randomBytes(4).toString('hex')}:`;
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl'), TOLLGATE_KEY_PREFIX: prefix, ...(values.redis ? { REDIS_URL: values.redis } : {}), ...(values.journal ? { TOLLGATE_DATA_DIR: join(dir, 'data') } : {}) });
  const runtime = await buildRuntime(settings, { policy: parsePolicy(POLICY, 'heapgrowth-bench.yaml') });
  const gateway = runtime.gateway;
  const principal = { user: 'bench-user', teams: ['bench-team'], costCenter: 'cc-bench', groups: ['employees'], roles: [], authMethod: 'api_key' as const, credentialId: 'bench' };
  const args = { prompt: 'Summarise the quarterly report in three lines', max_tokens: 64 };
  const one = () => gateway.complete({ principal, transport: 'http', request: parseCompleteArgs(args, gateway.policy.config.limits) });
  const total = Number(values.calls);
  const step = Number(values.step);
  process.stdout.write(`${runtime.gateway.store.kind} store${values.journal ? ', journal' : ''}\n${'calls'.padStart(8)}${'heap after GC MB'.padStart(18)}${'external MB'.padStart(13)}${'RSS MB'.padStart(9)}\n`);
  try {
    for (let done = 0; done <= total; done += step) {
      await gateway.idle();
      // The calls resolve through promises alone (the demo provider does no I/O), so the event
      // file's writes wait until they end: give the sink time to write its backlog before measuring.
      await new Promise((r) => setTimeout(r, 3000));
      gc!();
      const m = process.memoryUsage();
      process.stdout.write(`${String(done).padStart(8)}${(m.heapUsed / 2 ** 20).toFixed(1).padStart(18)}${(m.external / 2 ** 20).toFixed(1).padStart(13)}${(m.rss / 2 ** 20).toFixed(0).padStart(9)}\n`);
      if (values.snapshots.split(',').includes(String(done))) process.stdout.write(`  snapshot ${writeHeapSnapshot(`heapgrowth-${done}.heapsnapshot`)}\n`);
      if (done === total) break;
      let next = 0;
      await Promise.all(Array.from({ length: Number(values.concurrency) }, async () => {
        while (next++ < step) await one();
      }));
    }
  } finally {
    await runtime.close();
    if (values.redis) await deleteKeys(values.redis, prefix);
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench('heapgrowth bench', main);
