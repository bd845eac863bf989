/**
 * Pieces shared by the benchmark and the fault drills: child processes that announce readiness on
 * a stream, RSS readings, percentiles, a Redis liveness probe and free ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { childPids } from '../../test/helpers/process.js';

export const children: ChildProcess[] = [];

/**
 * Runs `node --import tsx <args>` (plain `node <args>` for built JavaScript, `.js`) and resolves
 * once `ready` matches what it printed.
 */
export function startChild(
  args: string[],
  env: Record<string, string>,
  ready: RegExp,
  stream: 'stdout' | 'stderr',
  nodeFlags: string[] = [],
): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const loader = args[0]?.endsWith('.js') ? [] : ['--import', 'tsx'];
  const child = spawn(process.execPath, [...nodeFlags, ...loader, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let seen = '';
  return new Promise((resolve, reject) => {
    child[stream]!.on('data', (d: Buffer) => {
      seen += d.toString();
      const m = ready.exec(seen);
      if (m) resolve({ child, match: m });
    });
    child.stdout!.resume();
    child.stderr!.resume();
    child.once('exit', (code, signal) => reject(new Error(`${args.join(' ')} exited (${code ?? signal}): ${seen.slice(-2000)}`)));
  });
}

export function killChildren(signal: NodeJS.Signals = 'SIGTERM'): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
}

/** A process and its descendants (a cluster primary and its workers), from Linux /proc. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...childPids(out[i]!));
  return out;
}

/** Resident and peak resident memory of a process and its descendants, in MB (Linux /proc). */
export function rssMb(pid: number): { rss: number; peak: number } {
  let rss = 0;
  let peak = 0;
  for (const p of processTree(pid)) {
    const status = readFileSync(`/proc/${p}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    rss += kb('VmRSS') / 1024;
    peak += kb('VmHWM') / 1024;
  }
  return { rss, peak };
}

export function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** The median of `xs`, the two middle values averaged when there is an even number (NaN when empty). */
export function medianOf(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const o = [...xs].sort((x, y) => x - y);
  const h = Math.floor(o.length / 2);
  return o.length % 2 ? o[h]! : (o[h - 1]! + o[h]!) / 2;
}

/**
 * In an A/B run (`--dist-b`), the name of this build's target on the same store as another build's
 * (`tollgate (memory, <dist>)` -> `tollgate (memory)`); undefined for a target that is not another build's.
 */
export function thisBuildBeside(name: string): string | undefined {
  const m = /^tollgate \((\w+), .+\)$/.exec(name);
  return m ? `tollgate (${m[1]})` : undefined;
}

/** Round-by-round ratios and their median, as the A/B lines print them. */
export function ratiosText(xs: number[]): string {
  return xs.length ? `x ${xs.map((x) => x.toFixed(2)).join(' ')}; median ${medianOf(xs).toFixed(3)}` : 'not measured';
}

export function answersPing(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(300, () => done(false));
    s.once('error', () => done(false));
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

/** REDIS_URL, else the server on 127.0.0.1:6379 if one answers, else undefined. */
export async function localRedisUrl(): Promise<string | undefined> {
  return process.env.REDIS_URL ?? ((await answersPing(6379)) ? 'redis://127.0.0.1:6379' : undefined);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a benchmark's main: exits 0 when it ends, else prints the failure (after `onFail`) and exits 1. */
export function runBench(name: string, main: () => Promise<void>, onFail?: () => void): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      onFail?.();
      process.stderr.write(`${name} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}

/**
 * The environment of a `tollgate serve` child the counters start: warnings only, its events file and
 * data directory in `dir`, its own key prefix, and Redis only when `redis` is given (`extra` last).
 */
export function gatewayEnv(dir: string, keyPrefix: string, redis: string | undefined, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TOLLGATE_LOG_LEVEL: 'warn',
    TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl'),
    TOLLGATE_DATA_DIR: join(dir, 'data'),
    TOLLGATE_KEY_PREFIX: keyPrefix,
    ...(redis ? {} : { REDIS_URL: '', REDIS_CLUSTER_NODES: '' }),
    ...extra,
  };
}

/** The base URL of a `tollgate serve` child once it says it serves (on stderr); rejects if it exits first. */
export function servingUrl(child: ChildProcess): Promise<string> {
  let seen = '';
  return new Promise<string>((ok, fail) => {
    child.stderr!.on('data', (d: Buffer) => {
      seen += d.toString();
      const m = /serving MCP at (\S+)\/mcp/.exec(seen);
      if (m) ok(m[1]!);
    });
    child.once('exit', (code) => fail(new Error(`the gateway exited (${code}) before serving: ${seen.slice(-2000)}`)));
  });
}

/**
 * `n` chat completions of one short question on `baseUrl` with `key`, `concurrency` at a time,
 * streamed with usage when `stream`; every answer must be a 200 (the instruction and IC counters).
 */
export async function driveChat(baseUrl: string, key: string, n: number, concurrency: number, stream = false): Promise<void> {
  const body = JSON.stringify({
    model: 'standard',
    messages: [{ role: 'user', content: 'Summarise the quarterly report in three bullet points.' }],
    max_tokens: 64,
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  });
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const r = await fetch(`${baseUrl}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body });
      const text = await r.text();
      if (r.status !== 200) throw new Error(`a call was answered ${r.status}: ${text.slice(0, 300)}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

/**
 * The in-process benchmarks' policy: the demo provider priced, three budgets a call (a weekly user
 * budget in Paris time, a monthly team budget, a rolling cost-centre budget) never reached.
 */
export function threeBudgetPolicy(name: string): string {
  return `version: 1
name: ${name}
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
models:
  demo/medium: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: Europe/Paris }, limit: { tokens: 1000000000000 } }
  - { id: team-monthly, scope: team, window: { calendar: month }, limit: { usd: 1000000000 } }
  - { id: cc-monthly, scope: costCenter, window: { rolling: { days: 30 } }, limit: { usd: 1000000000 } }
`;
}

/**
 * The HTTP benchmarks' policy (bench.ts, callgrind-http.ts): one OpenAI provider at `openaiUrl` (the
 * fake), one API key `key` for bench-user, three budgets a call never reaches (a weekly user budget
 * in Paris time, monthly team and cost-centre budgets) and one CEL rule. With `anthropic`, the tier
 * is served by an Anthropic provider at its `url` instead (the fake Anthropic server), with its
 * `client` when given.
 */
export function httpBenchPolicy(
  openaiUrl: string,
  key: string,
  opts: { settleBeforeReply?: boolean; client?: string; anthropic?: { url: string; client?: string } } = {},
): string {
  const sha = createHash('sha256').update(key).digest('hex');
  const anthropic = opts.anthropic;
  const model = anthropic ? 'anthropic/claude-bench' : 'openai/gpt-bench';
  return `version: 1
name: bench
providers:
  openai: { kind: openai, apiKey: bench, baseUrl: "${openaiUrl}", maxRetries: 0${opts.client ? `, client: ${opts.client}` : ''} }
${anthropic ? `  anthropic: { kind: anthropic, apiKey: bench, baseUrl: "${anthropic.url}", maxRetries: 0${anthropic.client ? `, client: ${anthropic.client}` : ''} }\n` : ''}egress: { allow: ["127.0.0.1"] }
models:
  ${model}: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
tiers:
  standard: [${model}]
apiKeys:
  - { id: bench, sha256: ${sha}, user: bench-user, teams: [bench-team], costCenter: cc-bench, groups: [employees] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: Europe/Paris }, limit: { tokens: 1000000000000 }, tierDown: { below: 20% } }
  - { id: team-monthly, scope: team, window: { calendar: month }, limit: { usd: 1000000000 } }
  - { id: cc-monthly, scope: costCenter, window: { calendar: month }, limit: { usd: 1000000000 } }
rules:
  - id: no-credentials
    when: "request.text.matches('AKIA[0-9A-Z]{16}')"
    effect: deny
    message: no credentials in prompts
limits: { settleBeforeReply: ${opts.settleBeforeReply ?? false} }
`;
}

const WORDS = 'the quarterly report shows revenue growth across regions while costs for cloud compute and model usage rose faster than planned so the team proposes limits per department and a review of vendor contracts before the next budget cycle'.split(' ');

/** Prose of exactly `chars` characters, made of ordinary words (no credential, nothing a content rule matches). */
export function prosePrompt(chars: number): string {
  const out: string[] = [];
  let length = 0;
  for (let i = 0; length < chars; i++) {
    const word = WORDS[(i * 7 + (i >> 3)) % WORDS.length]!;
    out.push(word);
    length += word.length + 1;
  }
  return out.join(' ').slice(0, chars);
}
