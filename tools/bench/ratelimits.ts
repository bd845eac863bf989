/**
 * Rate-limit drills on Redis, with `tollgate serve` replicas in front of the fake OpenAI server:
 *
 * 1. Replicas: N replicas (default 3) on one Redis, M calls (default 1,000) sent within one second
 *    through the OpenAI-compatible endpoint, round robin, against a limit of L per minute (default
 *    100, scope key). Each replica first serves --warmup calls (default 200) under a key no limit
 *    names. The calls go out on keep-alive connections opened before the burst (undici
 *    clients, --connections per replica, each taking --pipelining requests without waiting for an
 *    answer), one every --spread-ms / M ms, none waiting for another's answer. It reports when the
 *    requests were written (undici's `undici:request:bodySent`) apart from when the answers came,
 *    and the replicas' CPU per call (Linux /proc). Exactly L must be served, every refusal must be
 *    RATE_LIMITED with a retry time (retry-after-ms and the body's retryAfterMs), and every request
 *    must be written within --spread-ms plus 100 ms. Then counts the RATE_LIMITED decision events
 *    the replicas wrote: one per refusal.
 * 2. Concurrency: a cap of C calls in flight (default 5, scope key), P parallel slow calls (default
 *    50; the fake holds each --latency-ms) through the official OpenAI SDK, which retries each
 *    refusal after the retry-after-ms it carries. Reads the most requests in flight at once at the
 *    fake: it must be C at most. Every call must in the end be served.
 *
 *   npm run drill:ratelimits -- [--redis redis://127.0.0.1:6379] [--replicas 3] [--calls 1000]
 *     [--limit 100] [--spread-ms 1000] [--warmup 200] [--connections 40] [--pipelining 10] [--cap 5]
 *     [--parallel 50] [--latency-ms 300]
 *
 * Prints what it saw and exits 1 if a bound was beaten, a refusal had no retry time or the burst
 * was not sent in time.
 */
import { createHash, randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { Client } from 'undici';
import { deleteKeys } from '../../test/helpers/redis.js';
import { startFakeOpenAI } from '../fake-providers/openai.js';
import { killChildren, pct, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    replicas: { type: 'string', default: '3' },
    calls: { type: 'string', default: '1000' },
    limit: { type: 'string', default: '100' },
    'spread-ms': { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '200' },
    connections: { type: 'string', default: '40' },
    pipelining: { type: 'string', default: '10' },
    cap: { type: 'string', default: '5' },
    parallel: { type: 'string', default: '50' },
    'latency-ms': { type: 'string', default: '300' },
  },
});
const REPLICAS = Number(values.replicas);
const CALLS = Number(values.calls);
const LIMIT = Number(values.limit);
const SPREAD_MS = Number(values['spread-ms']);
const WARMUP = Number(values.warmup);
const CONNECTIONS = Number(values.connections);
const PIPELINING = Number(values.pipelining);
const CAP = Number(values.cap);
const PARALLEL = Number(values.parallel);
const LATENCY_MS = Number(values['latency-ms']);
const RPM_KEY = 'drill-rpm-key';
const CAP_KEY = 'drill-cap-key';
const WARM_KEY = 'drill-warm-key';
const sha = (k: string) => createHash('sha256').update(k).digest('hex');

function policy(fakeUrl: string): string {
  return `version: 1
providers:
  openai: { kind: openai, apiKey: sk-drill, baseUrl: "${fakeUrl}", timeoutMs: 60000 }
egress: { allow: ["127.0.0.1"] }
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  gpt: [openai/gpt-5-mini]
apiKeys:
  - { id: k-rpm, sha256: ${sha(RPM_KEY)}, user: rpm-user, teams: [drill] }
  - { id: k-cap, sha256: ${sha(CAP_KEY)}, user: cap-user, teams: [drill] }
  - { id: k-warm, sha256: ${sha(WARM_KEY)}, user: warm-user, teams: [drill] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 1000000000 } }
rateLimits:
  - { id: key-rpm, scope: key, when: "principal.user == 'rpm-user'", requestsPerMinute: ${LIMIT} }
  - { id: key-inflight, scope: key, when: "principal.user == 'cap-user'", concurrent: ${CAP}, retryAfterMs: 100 }
`;
}

interface Answer {
  status: number;
  retryAfterMs?: number;
  bodyRetryAfterMs?: number;
  code?: string;
  message?: string;
  answeredAt: number;
}

/**
 * `CONNECTIONS` keep-alive connections to a replica, each open (a /healthz answered on it) before
 * the burst, so that no call waits for a connection to be set up.
 */
async function openConnections(base: string): Promise<Client[]> {
  const clients = Array.from({ length: CONNECTIONS }, () => new Client(base, { pipelining: PIPELINING, keepAliveTimeout: 30_000, headersTimeout: 300_000, bodyTimeout: 300_000 }));
  await Promise.all(
    clients.map(async (c) => {
      const res = await c.request({ path: '/healthz', method: 'GET' });
      await res.body.dump();
    }),
  );
  return clients;
}

/**
 * `WARMUP` served calls on a replica, four at a time on connections of their own, under a key no
 * limit names: a replica is measured warm, as one that has served for a while, not while V8 still
 * interprets its code.
 */
async function warm(base: string): Promise<void> {
  let next = 0;
  const clients = Array.from({ length: 4 }, () => new Client(base));
  await Promise.all(
    clients.map(async (c) => {
      while (next++ < WARMUP) {
        const res = await call(c, JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: `warm ${next}` }], max_tokens: 16 }), WARM_KEY);
        if (res.status !== 200) throw new Error(`warm-up call answered ${res.status} ${res.code ?? ''} ${res.message ?? ''}`);
      }
    }),
  );
  await Promise.all(clients.map((c) => c.close()));
}

async function call(client: Client, body: string, key = RPM_KEY): Promise<Answer> {
  const res = await client.request({
    path: '/v1/chat/completions',
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body,
    // A POST is not pipelined unless marked idempotent (undici waits for the previous answer on
    // the connection): the drill sends every call without waiting, and retries nothing.
    idempotent: true,
  });
  const parsed = (await res.body.json()) as { error?: { code?: string; message?: string; details?: { retryAfterMs?: number } } };
  const header = res.headers['retry-after-ms'];
  return {
    status: res.statusCode,
    retryAfterMs: typeof header === 'string' ? Number(header) : undefined,
    bodyRetryAfterMs: parsed.error?.details?.retryAfterMs,
    code: parsed.error?.code,
    message: parsed.error?.message,
    answeredAt: performance.now(),
  };
}

/** CPU time a process has used so far, ms (Linux /proc: utime + stime). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  // After the command: state is field 3, utime 14 and stime 15 (1-based), in clock ticks of 10 ms.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function eventsIn(file: string): Record<string, unknown>[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-ratelimits-'));
  const prefix = `tgdrill:${randomBytes(4).toString('hex')}:`;
  const fake = await startFakeOpenAI();
  let failed = false;
  try {
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, policy(fake.url));
    const replicas = await Promise.all(
      Array.from({ length: REPLICAS }, async (_, r) => {
        const eventsFile = join(dir, `events-${r}.jsonl`);
        const env = { REDIS_URL: values.redis!, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_STORE_TIMEOUT_MS: '10000', TOLLGATE_LOG_LEVEL: 'error' };
        const g = await startChild(['src/cli.ts', 'serve', '--port', '0', '--policy', policyFile, '--events', eventsFile], env, /serving MCP at (\S+)\/mcp/, 'stderr');
        return { base: g.match[1]!, eventsFile, pid: g.child.pid! };
      }),
    );

    // 1. Replicas against a per-minute limit: M calls within --spread-ms, round robin, on
    // connections opened beforehand, each sent at its time without waiting for any answer.
    await Promise.all(replicas.map((r) => warm(r.base)));
    // Opened after the warm-up: a connection idle for the server's keep-alive timeout (5 s) is closed.
    const connections = await Promise.all(replicas.map((r) => openConnections(r.base)));
    const bodies = Array.from({ length: CALLS }, (_, i) => JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: `call ${i}` }], max_tokens: 16 }));
    const sentAt: number[] = [];
    const issuedAt: number[] = [];
    const onSent = () => sentAt.push(performance.now());
    subscribe('undici:request:bodySent', onSent);
    const cpu0 = replicas.map((r) => cpuMs(r.pid));
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: CALLS }, async (_, i) => {
        const wait = t0 + (i * SPREAD_MS) / CALLS - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        issuedAt.push(performance.now());
        const pool = connections[i % REPLICAS]!;
        return call(pool[Math.floor(i / REPLICAS) % pool.length]!, bodies[i]!).catch((err: NodeJS.ErrnoException): Answer => ({ status: 0, code: err.code ?? err.message, answeredAt: performance.now() }));
      }),
    );
    unsubscribe('undici:request:bodySent', onSent);
    const sendSpanMs = Math.max(...sentAt) - t0;
    const issueSpanMs = Math.max(...issuedAt) - t0;
    const answerSpanMs = Math.max(...answers.map((a) => a.answeredAt)) - t0;
    const latencies = answers.map((a) => a.answeredAt - t0).sort((a, b) => a - b);
    const served = answers.filter((a) => a.status === 200).length;
    const refused = answers.filter((a) => a.status === 429 && a.code === 'RATE_LIMITED');
    const withRetry = refused.filter((a) => (a.retryAfterMs ?? 0) > 0 && a.retryAfterMs === a.bodyRetryAfterMs).length;
    const other = answers.length - served - refused.length;
    const failures = new Map<string, number>();
    for (const a of answers) if (a.status !== 200 && !(a.status === 429 && a.code === 'RATE_LIMITED')) failures.set(`${a.status} ${a.code ?? ''}`, (failures.get(`${a.status} ${a.code ?? ''}`) ?? 0) + 1);
    for (const [what, n] of failures) process.stdout.write(`  other: ${n} x ${what}\n`);
    const retries = refused.map((a) => a.retryAfterMs ?? 0).sort((a, b) => a - b);
    // Events are written after each answer; give the replicas a moment to write the last ones.
    let rateLimitedEvents = 0;
    for (let tries = 0; tries < 100; tries++) {
      rateLimitedEvents = replicas.flatMap((r) => eventsIn(r.eventsFile)).filter((e) => e['error.code'] === 'RATE_LIMITED').length;
      if (rateLimitedEvents >= refused.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const gatewayCpuMs = replicas.reduce((sum, r, i) => sum + cpuMs(r.pid) - cpu0[i]!, 0);
    await Promise.all(connections.flat().map((c) => c.close()));
    process.stdout.write(
      `replicas: ${REPLICAS} replicas, ${CALLS} calls against ${LIMIT}/min on ${REPLICAS}x${CONNECTIONS} open connections (pipelining ${PIPELINING}): ` +
        `issued within ${issueSpanMs.toFixed(0)} ms, ${sentAt.length} written within ${sendSpanMs.toFixed(0)} ms, answered within ${answerSpanMs.toFixed(0)} ms (p50 ${pct(latencies, 50).toFixed(0)} ms after the start); ` +
        `${served} served, ${refused.length} RATE_LIMITED (${withRetry} with a retry time; retry-after-ms ${retries[0] ?? '-'}..${retries.at(-1) ?? '-'}), ${other} other; ` +
        `${rateLimitedEvents} RATE_LIMITED decision events; replicas' CPU ${gatewayCpuMs} ms, ${(gatewayCpuMs / CALLS).toFixed(2)} ms per call\n`,
    );
    if (served !== LIMIT || withRetry !== refused.length || other !== 0 || rateLimitedEvents !== refused.length) failed = true;
    if (sentAt.length !== CALLS || sendSpanMs > SPREAD_MS + 100) failed = true;

    // 2. A cap of C in flight, P parallel slow calls through the SDK (which honours retry-after-ms).
    fake.setLatency(LATENCY_MS);
    fake.reset();
    fake.setLatency(LATENCY_MS);
    const c0 = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: PARALLEL }, (_, i) =>
        new OpenAI({ baseURL: `${replicas[i % REPLICAS]!.base}/v1`, apiKey: CAP_KEY, maxRetries: 1000 }).chat.completions.create({
          model: 'gpt',
          messages: [{ role: 'user', content: `slow ${i}` }],
          max_tokens: 16,
        }),
      ),
    );
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const maxInFlight = fake.inFlight?.max ?? Number.NaN;
    const capRefusals = replicas.flatMap((r) => eventsIn(r.eventsFile)).filter((e) => e['user.id'] === 'cap-user' && e['error.code'] === 'RATE_LIMITED').length;
    process.stdout.write(
      `concurrency: cap ${CAP}, ${PARALLEL} parallel calls of ${LATENCY_MS} ms over ${REPLICAS} replicas: ${ok} served in ${((performance.now() - c0) / 1000).toFixed(1)} s, ` +
        `${capRefusals} refusals retried by the SDK, at most ${maxInFlight} in flight at the provider (${fake.counts.received} requests received)\n`,
    );
    if (ok !== PARALLEL || !(maxInFlight <= CAP)) failed = true;
  } finally {
    killChildren();
    await fake.close();
    await deleteKeys(values.redis!, prefix).catch(() => 0);
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(failed ? 'FAILED\n' : 'ok\n');
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    killChildren();
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
