/**
 * Rate-limit drills on Redis, with `tollgate serve` replicas in front of the fake OpenAI server:
 *
 * 1. Replicas: N replicas (default 3) on one Redis, M calls (default 1,000) sent within one second
 *    through the OpenAI-compatible endpoint, round robin, against a limit of L per minute (default
 *    100, scope key). Counts answers: exactly L must be served, and every refusal must be
 *    RATE_LIMITED with a retry time (retry-after-ms and the body's retryAfterMs). Then counts the
 *    RATE_LIMITED decision events the replicas wrote: one per refusal.
 * 2. Concurrency: a cap of C calls in flight (default 5, scope key), P parallel slow calls (default
 *    50; the fake holds each --latency-ms) through the official OpenAI SDK, which retries each
 *    refusal after the retry-after-ms it carries. Reads the most requests in flight at once at the
 *    fake: it must be C at most. Every call must in the end be served.
 *
 *   npm run drill:ratelimits -- [--redis redis://127.0.0.1:6379] [--replicas 3] [--calls 1000]
 *     [--limit 100] [--cap 5] [--parallel 50] [--latency-ms 300]
 *
 * Prints what it saw and exits 1 if a bound was beaten or a refusal had no retry time.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { deleteKeys } from '../../test/helpers/redis.js';
import { startFakeOpenAI } from '../fake-providers/openai.js';
import { killChildren, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    replicas: { type: 'string', default: '3' },
    calls: { type: 'string', default: '1000' },
    limit: { type: 'string', default: '100' },
    cap: { type: 'string', default: '5' },
    parallel: { type: 'string', default: '50' },
    'latency-ms': { type: 'string', default: '300' },
  },
});
const REPLICAS = Number(values.replicas);
const CALLS = Number(values.calls);
const LIMIT = Number(values.limit);
const CAP = Number(values.cap);
const PARALLEL = Number(values.parallel);
const LATENCY_MS = Number(values['latency-ms']);
const RPM_KEY = 'drill-rpm-key';
const CAP_KEY = 'drill-cap-key';
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
}

async function call(base: string, i: number): Promise<Answer> {
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${RPM_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: `call ${i}` }], max_tokens: 16 }),
  });
  const body = (await res.json()) as { error?: { code?: string; details?: { retryAfterMs?: number } } };
  const header = res.headers.get('retry-after-ms');
  return { status: res.status, retryAfterMs: header === null ? undefined : Number(header), bodyRetryAfterMs: body.error?.details?.retryAfterMs, code: body.error?.code };
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
        return { base: g.match[1]!, eventsFile };
      }),
    );

    // 1. Replicas against a per-minute limit: M calls spread over one second, round robin.
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: CALLS }, async (_, i) => {
        const due = t0 + (i * 1000) / CALLS;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        return call(replicas[i % REPLICAS]!.base, i);
      }),
    );
    const sentWithinMs = performance.now() - t0;
    const served = answers.filter((a) => a.status === 200).length;
    const refused = answers.filter((a) => a.status === 429 && a.code === 'RATE_LIMITED');
    const withRetry = refused.filter((a) => (a.retryAfterMs ?? 0) > 0 && a.retryAfterMs === a.bodyRetryAfterMs).length;
    const other = answers.length - served - refused.length;
    const retries = refused.map((a) => a.retryAfterMs ?? 0).sort((a, b) => a - b);
    // Events are written after each answer; give the replicas a moment to write the last ones.
    let rateLimitedEvents = 0;
    for (let tries = 0; tries < 100; tries++) {
      rateLimitedEvents = replicas.flatMap((r) => eventsIn(r.eventsFile)).filter((e) => e['error.code'] === 'RATE_LIMITED').length;
      if (rateLimitedEvents >= refused.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    process.stdout.write(
      `replicas: ${REPLICAS} replicas, ${CALLS} calls sent within ${sentWithinMs.toFixed(0)} ms against ${LIMIT}/min: ` +
        `${served} served, ${refused.length} RATE_LIMITED (${withRetry} with a retry time; retry-after-ms ${retries[0] ?? '-'}..${retries.at(-1) ?? '-'}), ${other} other; ` +
        `${rateLimitedEvents} RATE_LIMITED decision events\n`,
    );
    if (served !== LIMIT || withRetry !== refused.length || other !== 0 || rateLimitedEvents !== refused.length) failed = true;

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
