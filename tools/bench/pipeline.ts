/**
 * The enforcement pipeline alone, in process: identify, policy, reserve, the offline demo provider,
 * settle and one decision event to a file, with no HTTP or MCP around it. Prints the CPU time per
 * enforced call, the part of a call's cost that is tollgate's own.
 *
 *   npm run bench:pipeline -- [--calls 20000] [--concurrency 32] [--redis redis://127.0.0.1:6379] [--alerts]
 *     [--limits] [--warmup 2000] [--only sequential|concurrent] [--journal]
 *
 * --alerts adds threshold alerts on every budget (never reached, so each charge is read against its
 * thresholds and nothing fires) and a refusal-spike alert: the cost of evaluating alerts, which runs
 * in the same process after each settlement and so shows in its CPU time.
 *
 * --limits adds a requests-per-minute limit and a concurrency cap per user, never reached: what
 * limits add to a call. --warmup sets the calls made before measuring; --only measures one run.
 *
 * --journal keeps the memory store's journal (src/quota/fileJournal.ts) in the bench's temporary
 * directory, as `tollgate serve` does without Redis: its appends and group commit count in the CPU.
 *
 * --gate DIR lets an outside profiler count the measured run alone: before it the bench writes
 * DIR/ready and waits for DIR/go, after it (settlements done) it writes DIR/done and waits for
 * DIR/end. tools/bench/callgrind.sh uses it to switch callgrind's instrumentation on and off.
 * TOLLGATE_STORE_TIMEOUT_MS in the environment reaches the store (callgrind.sh sets it long: under
 * valgrind a Redis answer is read slowly, and the default 2 s would count it as an outage).
 *
 * With Redis it also prints Redis's own CPU per call (INFO cpu of its main thread over the run: run
 * it against a Redis nobody else uses, since every client's commands count) and the journal's size
 * after the run (entries, MEMORY USAGE of its streams), and the scripts, commands and read events Redis had per
 * call (INFO commandstats and stats; one call at a time, a read event is one round trip).
 *
 * Profile it with: node --cpu-prof --import tsx tools/bench/pipeline.ts
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from '@keyv/redis';
import { buildRuntime, settingsFromEnv } from '../../src/main.js';
import { parseCompleteArgs } from '../../src/call/request.js';
import { parsePolicy } from '../../src/policy/load.js';
import { deleteKeys } from '../../test/helpers/redis.js';
import { runBench } from './common.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
    redis: { type: 'string' },
    alerts: { type: 'boolean', default: false },
    /** Adds a never-reached requests-per-minute limit and concurrency cap per user: what limits add to a call. */
    limits: { type: 'boolean', default: false },
    /** Calls made before measuring, to warm the JIT and the store. */
    warmup: { type: 'string', default: '2000' },
    /** Which runs to measure: sequential, concurrent, or both (default). */
    only: { type: 'string' },
    /** A directory where the bench waits, around each measured run, for an outside profiler (below). */
    gate: { type: 'string' },
    /** The memory store with its journal, in the bench's temporary directory. */
    journal: { type: 'boolean', default: false },
  },
});
const CALLS = Number(values.calls);
const CONCURRENCY = Number(values.concurrency);
const WARMUP = Number(values.warmup);
const RUNS = [['sequential', 1], [`${CONCURRENCY} at once`, CONCURRENCY]] as const;
if (values.only !== undefined && values.only !== 'sequential' && values.only !== 'concurrent') throw new Error(`--only takes sequential or concurrent, not ${values.only}`);

const POLICY = `version: 1
name: pipeline-bench
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
  economy: [demo/small]
models:
  demo/medium: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
  demo/small: { price: { inputPerMTok: 0.1, outputPerMTok: 0.2 } }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: Europe/Paris }, limit: { tokens: 1000000000000 }, tierDown: { below: 20% } }
  - { id: team-monthly, scope: team, window: { calendar: month }, limit: { usd: 1000000000 } }
  - { id: cc-monthly, scope: costCenter, window: { rolling: { days: 30 } }, limit: { usd: 1000000000 } }
rules:
  - id: no-credentials
    when: "request.text.matches('AKIA[0-9A-Z]{16}')"
    effect: deny
    message: no credentials in prompts
`;

const ALERTS = `
egress: { allow: ["127.0.0.1:9"] }
alerts:
  webhooks: [{ id: sink, url: "http://127.0.0.1:9/never" }]
  budgets: [{ id: thresholds, thresholds: [50, 80, 100], notify: [sink] }]
  refusals: [{ id: spike, count: 100, window: { minutes: 10 }, notify: [sink] }]
`;

const LIMITS = `
rateLimits:
  - { id: user-rpm, scope: user, requestsPerMinute: 1000000000 }
  - { id: user-inflight, scope: user, concurrent: 1000000 }
`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-pipeline-'));
  const prefix = `tgbench:${randomBytes(4).toString('hex')}:`;
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl'), TOLLGATE_KEY_PREFIX: prefix, ...(values.redis ? { REDIS_URL: values.redis } : {}), ...(process.env.TOLLGATE_STORE_TIMEOUT_MS ? { TOLLGATE_STORE_TIMEOUT_MS: process.env.TOLLGATE_STORE_TIMEOUT_MS } : {}), ...(values.journal ? { TOLLGATE_DATA_DIR: join(dir, 'data') } : {}) });
  const runtime = await buildRuntime(settings, { policy: parsePolicy(POLICY + (values.alerts ? ALERTS : '') + (values.limits ? LIMITS : ''), 'pipeline-bench.yaml') });
  const gateway = runtime.gateway;
  const principal = { user: 'bench-user', teams: ['bench-team'], costCenter: 'cc-bench', groups: ['employees'], roles: [], authMethod: 'api_key' as const, credentialId: 'bench' };
  const args = { prompt: 'Summarise the quarterly report in three lines', max_tokens: 64 };
  const one = () => gateway.complete({ principal, transport: 'http', request: parseCompleteArgs(args, gateway.policy.config.limits) });
  try {
    for (let i = 0; i < WARMUP; i++) await one();
    const redis = values.redis ? createClient({ url: values.redis }) : undefined;
    await redis?.connect();
    const runs = RUNS.filter(([, w]) => values.only === undefined || (values.only === 'sequential') === (w === 1));
    for (const [label, width] of runs) {
      let next = 0;
      if (values.gate) await gate(values.gate, 'ready', 'go');
      const redis0 = redis ? await redisCounters(redis) : undefined;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(Array.from({ length: width }, async () => {
        while (next++ < CALLS) await one();
      }));
      // Settlements and alert evaluation finish after the answers: their CPU belongs to the calls.
      await gateway.idle();
      await runtime.alerts?.idle();
      const cpu = process.cpuUsage(cpu0);
      const wall = performance.now() - t0;
      if (values.gate) await gate(values.gate, 'done', 'end');
      const redisCpu = redis && redis0 ? `, ${perCall(redis0, await redisCounters(redis))}` : '';
      process.stdout.write(`${label.padEnd(14)} ${CALLS} calls (${runtime.gateway.store.kind} store${values.journal ? ', journal' : ''}${values.alerts ? ', alerts' : ''}${values.limits ? ', limits' : ''}): ${(((cpu.user + cpu.system) / CALLS)).toFixed(1)} µs CPU per call, ${((wall * 1000) / CALLS).toFixed(1)} µs wall per call${redisCpu}\n`);
    }
    redis?.destroy();
    if (values.redis) await journalSize(values.redis, prefix, WARMUP + runs.length * CALLS);
  } finally {
    await runtime.close();
    if (values.redis) await deleteKeys(values.redis, prefix);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes `dir/mark` and waits until `dir/until` exists (polled every 10 ms, so the process keeps running for a profiler to act), then removes it. */
async function gate(dir: string, mark: string, until: string): Promise<void> {
  writeFileSync(join(dir, mark), '');
  while (!existsSync(join(dir, until))) await new Promise((r) => setTimeout(r, 10));
  rmSync(join(dir, until));
  rmSync(join(dir, mark));
}

/** What Redis has done so far, read in one INFO: main-thread CPU (µs), scripts run (EVALSHA, EVAL), commands, and read events on client sockets (a flight of commands the client wrote at once is one read). */
interface RedisCounters {
  cpuUs: number;
  scripts: number;
  commands: number;
  reads: number;
}

async function redisCounters(client: { sendCommand(args: string[]): Promise<unknown> }): Promise<RedisCounters> {
  const info = String(await client.sendCommand(['INFO', 'cpu', 'commandstats', 'stats']));
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 'NaN');
  let scripts = 0;
  for (const m of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) scripts += Number(m[1]);
  return {
    cpuUs: (field('used_cpu_user_main_thread') + field('used_cpu_sys_main_thread')) * 1e6,
    scripts,
    commands: field('total_commands_processed'),
    reads: field('total_reads_processed'),
  };
}

/** Redis's work per call between two readings, less the readings' own INFO (one command and one read in the difference). */
function perCall(a: RedisCounters, b: RedisCounters): string {
  return `Redis ${((b.cpuUs - a.cpuUs) / CALLS).toFixed(1)} µs CPU per call, ${((b.scripts - a.scripts) / CALLS).toFixed(2)} scripts, ${((b.commands - a.commands - 1) / CALLS).toFixed(2)} commands (with those scripts run) and ${((b.reads - a.reads - 1) / CALLS).toFixed(2)} reads per call`;
}

/** The Redis journal's size after `calls` calls: entries and MEMORY USAGE of its streams, per call and per million calls. */
async function journalSize(url: string, prefix: string, calls: number): Promise<void> {
  const client = createClient({ url });
  await client.connect();
  try {
    let entries = 0;
    let bytes = 0;
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*:j`, TYPE: 'stream', COUNT: 1000 })) {
      for (const key of keys) {
        entries += await client.xLen(key);
        bytes += (await client.memoryUsage(key, { SAMPLES: 0 })) ?? 0;
      }
    }
    if (entries === 0) return;
    process.stdout.write(
      `journal        ${entries} entries after ${calls} calls, ${bytes} bytes (MEMORY USAGE): ${(bytes / entries).toFixed(0)} bytes per entry, ${(bytes / calls).toFixed(0)} bytes per call, ${((bytes / calls) * 1e6 / 1e9).toFixed(2)} GB per million calls\n`,
    );
  } finally {
    client.destroy();
  }
}

runBench('pipeline bench', main);

