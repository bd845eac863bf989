/**
 * The enforcement pipeline alone, in process: identify, policy, reserve, the offline demo provider,
 * settle and one decision event to a file, with no HTTP or MCP around it. Prints the CPU time per
 * enforced call, the part of a call's cost that is tollgate's own.
 *
 *   npm run bench:pipeline -- [--calls 20000] [--concurrency 32] [--redis redis://127.0.0.1:6379] [--alerts]
 *
 * --alerts adds threshold alerts on every budget (never reached, so each charge is read against its
 * thresholds and nothing fires) and a refusal-spike alert: the cost of evaluating alerts, which runs
 * in the same process after each settlement and so shows in its CPU time.
 *
 * With Redis it also prints Redis's own CPU per call (INFO cpu of its main thread over the run: run
 * it against a Redis nobody else uses, since every client's commands count) and the journal's size
 * after the run (entries, MEMORY USAGE of its streams).
 *
 * Profile it with: node --cpu-prof --import tsx tools/bench/pipeline.ts
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

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '32' },
    redis: { type: 'string' },
    alerts: { type: 'boolean', default: false },
    /** Adds a never-reached requests-per-minute limit and concurrency cap per user: what limits add to a call. */
    limits: { type: 'boolean', default: false },
  },
});
const CALLS = Number(values.calls);
const CONCURRENCY = Number(values.concurrency);

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
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl'), TOLLGATE_KEY_PREFIX: prefix, ...(values.redis ? { REDIS_URL: values.redis } : {}) });
  const runtime = await buildRuntime(settings, { policy: parsePolicy(POLICY + (values.alerts ? ALERTS : '') + (values.limits ? LIMITS : ''), 'pipeline-bench.yaml') });
  const gateway = runtime.gateway;
  const principal = { user: 'bench-user', teams: ['bench-team'], costCenter: 'cc-bench', groups: ['employees'], roles: [], authMethod: 'api_key' as const, credentialId: 'bench' };
  const args = { prompt: 'Summarise the quarterly report in three lines', max_tokens: 64 };
  const one = () => gateway.complete({ principal, transport: 'http', request: parseCompleteArgs(args, gateway.policy.config.limits) });
  try {
    for (let i = 0; i < 2000; i++) await one();
    const redis = values.redis ? createClient({ url: values.redis }) : undefined;
    await redis?.connect();
    for (const [label, width] of [['sequential', 1], [`${CONCURRENCY} at once`, CONCURRENCY]] as const) {
      let next = 0;
      const redis0 = redis ? await redisCpuUs(redis) : 0;
      const scripts0 = redis ? await scriptsRun(redis) : 0;
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
      const redisCpu = redis ? `, Redis ${(((await redisCpuUs(redis)) - redis0) / CALLS).toFixed(1)} µs CPU per call, ${(((await scriptsRun(redis)) - scripts0) / CALLS).toFixed(2)} scripts per call` : '';
      process.stdout.write(`${label.padEnd(14)} ${CALLS} calls (${runtime.gateway.store.kind} store${values.alerts ? ', alerts' : ''}${values.limits ? ', limits' : ''}): ${(((cpu.user + cpu.system) / CALLS)).toFixed(1)} µs CPU per call, ${((wall * 1000) / CALLS).toFixed(1)} µs wall per call${redisCpu}\n`);
    }
    redis?.destroy();
    if (values.redis) await journalSize(values.redis, prefix, 2000 + 2 * CALLS);
  } finally {
    await runtime.close();
    if (values.redis) await deleteKeys(values.redis, prefix);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Redis's main-thread CPU time so far (INFO cpu), in µs. */
async function redisCpuUs(client: { info(section: string): Promise<string> }): Promise<number> {
  const info = await client.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 'NaN');
  return (field('used_cpu_user_main_thread') + field('used_cpu_sys_main_thread')) * 1e6;
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

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`pipeline bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);

/** EVALSHA and EVAL commands Redis has run so far: every script the store sends is one command. */
async function scriptsRun(redis: { info(section: string): Promise<string> }): Promise<number> {
  const info = await redis.info('commandstats');
  let n = 0;
  for (const m of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) n += Number(m[1]);
  return n;
}
