/**
 * tollgate benchmark: the same MCP load against a bare passthrough server and against tollgate
 * (in-memory ledger, then Redis), all calling the same fake OpenAI server over loopback.
 * Prints latency percentiles, throughput, server RSS and the overhead of enforcement.
 *
 *   npm run bench -- [--rounds 1] [--clients 32] [--seconds 10] [--sequential 2000] [--sessions 10000] [--sessions-idle 60]
 *                    [--targets passthrough,passthrough-light,memory,redis,redis-sbr,redis-2w]
 *                      (passthrough-light: tollgate's HTTP plumbing without enforcement;
 *                       redis-Nw: N cluster workers; redis-sbr: limits.settleBeforeReply)
 *                    [--node-options=--max-old-space-size=256]      (for every tollgate process)
 *                    [--node-options-b=<flags>]   (instead, for the --dist-b builds: a runtime flag's A/B with --dist-b dist)
 *                    [--dist-b <other builds' dist/ dirs, comma-separated> with target memory-b and/or redis-b]   (A/B in one run)
 *                    [--openai-client sdk|direct]   (the OpenAI provider's client for this build's targets, not the -b builds')
 *                    [--prompt-chars 200000 [--prompt-fresh]]   (--api openai: a prompt of that many characters, the same on
 *                                    every call as a resent conversation, or each call's its own)
 *                    [--together]   (each round's concurrent runs of all targets at once, each with its own
 *                                    clients: their throughputs compare what a call costs each, whatever
 *                                    the machine's speed does meanwhile)
 *   npm run bench -- --targets memory,redis --sequential 0 --seconds 0 --soak 600 [--soak-warmup 60] --clients 8
 *                      (a soak on each store in turn: RSS, and on Redis its used memory and keys, every 30 s)
 *   npm run bench -- --api openai [--rounds 3] [--targets upstream,nginx,node,portkey,memory,redis]
 *                      (the OpenAI wire, plain and streamed: the fake directly, Debian's nginx, the
 *                       Node floor (tools/bench/nodefloor.ts: node:http and undici, reading the request
 *                       and the usage, nothing else; node-express: the same as an express route behind
 *                       express.json()) and Portkey's gateway started by the bench,
 *                       tollgate's /v1/chat/completions)
 *   npm run bench -- --api anthropic [--rounds 3] [--targets upstream,nginx,node,portkey,memory,redis]
 *                      (the same on the Anthropic wire, POST /v1/messages against the fake Anthropic
 *                       server: tollgate's policy routes the call to an Anthropic provider, Portkey's
 *                       to its anthropic provider, the Node floor reads Anthropic's usage events)
 *
 * Every server runs in its own process; the load runs in this one. tollgate is built first and run
 * from dist/, as `npm start` runs it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createClient } from '@keyv/redis';
import { httpBenchPolicy, prosePrompt, killChildren, localRedisUrl, pct, ratiosText, rssMb, runBench, sleep, startChild, thisBuildBeside } from './common.js';
import { deleteKeys } from '../../test/helpers/redis.js';
import { closeRawClient, closedLoop, openRawClient, rawCall, rawTarget, type RawClient } from './rawload.js';
import { startNginx, startPortkey } from './floor.js';
import { runWire, type WireTarget } from './wire.js';
import { WIRES } from './wireload.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    sequential: { type: 'string', default: '2000' },
    sessions: { type: 'string', default: '0' },
    'sessions-idle': { type: 'string', default: '60' },
    targets: { type: 'string', default: 'passthrough,passthrough-light,memory,redis,redis-sbr,redis-2w' },
    soak: { type: 'string', default: '0' },
    /** Seconds of the soak before the RSS it is judged against (its first sample at or after this). */
    'soak-warmup': { type: 'string', default: '60' },
    'cpu-prof': { type: 'string' },
    'node-options': { type: 'string', default: '' },
    'node-options-b': { type: 'string' },
    api: { type: 'string', default: 'mcp' },
    rounds: { type: 'string', default: '1' },
    /** The concurrent runs of all targets at once instead of one after another (an A/B on a machine whose speed drifts). */
    together: { type: 'boolean', default: false },
    /** Other builds' dist/ directories, comma-separated: with target `memory-b`, each runs on the memory store beside this build. */
    'dist-b': { type: 'string' },
    /** The OpenAI provider's `client` (sdk or direct) in the policy of this build's targets; the `memory-b` and `redis-b` builds keep the policy without it. */
    'openai-client': { type: 'string' },
    /** With --api openai or anthropic: a prompt of this many characters of prose instead of the one-line question. */
    'prompt-chars': { type: 'string' },
    /** With --prompt-chars: every call's prompt begins with its own number, so that no text is seen twice. */
    'prompt-fresh': { type: 'boolean', default: false },
  },
});
const SOAK = Number(values.soak);
const SOAK_WARMUP = Number(values['soak-warmup']);
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);
const SEQUENTIAL = Number(values.sequential);
const SESSIONS = Number(values.sessions);
const SESSIONS_IDLE = Number(values['sessions-idle']);
const API = values.api;
if (API !== 'mcp' && API !== 'openai' && API !== 'anthropic') throw new Error(`--api must be mcp, openai or anthropic, not ${API}`);
/** A provider wire's benchmark (runWire) rather than the MCP one. */
const WIRE = API === 'mcp' ? undefined : WIRES[API];
const TARGETS = (WIRE && values.targets === 'passthrough,passthrough-light,memory,redis,redis-sbr,redis-2w' ? 'upstream,nginx,portkey,memory,redis' : values.targets).split(',');
const KEY = 'tg-bench-key';
/** With --cpu-prof <dir>, every server writes a V8 CPU profile there when it stops. */
const PROF = values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof']}`] : [];
/** The soak drives the official SDK client, session churn included. */
async function client(url: string): Promise<Client> {
  const c = new Client({ name: 'bench', version: '1' });
  await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${KEY}` } } }));
  return c;
}

/** Ends a client's session on the server (DELETE) and closes it. */
async function done(c: Client): Promise<void> {
  await (c.transport as StreamableHTTPClientTransport).terminateSession().catch(() => {});
  await c.close();
}

const ARGS = { prompt: 'Summarise the quarterly report in three lines', max_tokens: 64 };

interface LoadResult {
  calls: number;
  errors: number;
  callsPerSec: number;
  p50: number;
  p99: number;
  mean: number;
  /** CPU ms per call of the server and of the fake provider, in that order (concurrent runs only). */
  cpuPerCall?: number[];
  /** CPU ms per call of this load generator. */
  loadCpuPerCall?: number;
}

/** `n` clients calling back to back for `seconds` after a warm-up; latency in ms per call. */
async function load(url: string, n: number, seconds: number, pids: number[]): Promise<LoadResult> {
  const t = rawTarget(url, KEY, n);
  const clients = await Promise.all(Array.from({ length: n }, () => openRawClient(t)));
  const { lat, errors, elapsed, cpu, loadCpu } = await closedLoop(n, (i) => rawCall(t, clients[i]!, 'complete', ARGS), WARMUP, seconds, pids);
  await Promise.all(clients.map((c) => closeRawClient(t, c)));
  t.agent.destroy();
  return {
    calls: lat.length,
    errors,
    callsPerSec: lat.length / elapsed,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    mean: lat.reduce((a, b) => a + b, 0) / lat.length,
    cpuPerCall: cpu.map((ms) => ms / Math.max(1, lat.length)),
    loadCpuPerCall: loadCpu / Math.max(1, lat.length),
  };
}

/**
 * One client per target, `count` calls one after another: the added latency of a single call. The
 * targets take turns call by call (in rotating order), so a noisy moment on a shared machine lands
 * on all of them alike instead of on whichever target was being measured then.
 */
async function sequential(urls: string[], count: number): Promise<LoadResult[]> {
  const targets = urls.map((url) => rawTarget(url, KEY, 1));
  const clients = await Promise.all(targets.map((t) => openRawClient(t)));
  for (let i = 0; i < 200; i++) for (let j = 0; j < targets.length; j++) await rawCall(targets[j]!, clients[j]!, 'complete', ARGS);
  const lat: number[][] = urls.map(() => []);
  const errors = urls.map(() => 0);
  for (let i = 0; i < count; i++) {
    for (let k = 0; k < targets.length; k++) {
      const j = (i + k) % targets.length;
      const s = performance.now();
      const ok = await rawCall(targets[j]!, clients[j]!, 'complete', ARGS);
      if (!ok) errors[j]!++;
      else lat[j]!.push(performance.now() - s);
    }
  }
  await Promise.all(targets.map((t, j) => closeRawClient(t, clients[j]!)));
  for (const t of targets) t.agent.destroy();
  return lat.map((l, j) => {
    l.sort((a, b) => a - b);
    const mean = l.reduce((a, b) => a + b, 0) / l.length;
    return { calls: l.length, errors: errors[j]!, callsPerSec: 1000 / mean, p50: pct(l, 50), p99: pct(l, 99), mean };
  });
}

/**
 * Steady load for `seconds` on one gateway: clients open a session, make 50 calls and close it,
 * over and over. Prints RSS and open sessions every 30 s (on the Redis store also Redis's
 * `used_memory` and how many keys the gateway's prefix holds); at the end every session must be
 * gone and nothing may stay reserved. Then says whether RSS stayed within ±10 % of its first
 * sample after `warmupS` seconds (issue 21's target).
 */
async function soak(url: string, pid: number, seconds: number, n: number, warmupS: number, redis?: { url: string; prefix: string }): Promise<void> {
  const healthz = async () => (await (await fetch(url.replace(/\/mcp$/, '/healthz'))).json()) as { sessions: number; store: string };
  const rc = redis ? createClient({ url: redis.url }) : undefined;
  await rc?.connect();
  const redisNow = async (): Promise<{ usedMb: number; keys: number } | undefined> => {
    if (!rc || !redis) return undefined;
    const used = Number(/used_memory:(\d+)/.exec(await rc.info('memory'))?.[1] ?? 0) / 2 ** 20;
    let keys = 0;
    let cursor = '0';
    do {
      const page = await rc.scan(cursor, { MATCH: `${redis.prefix}*`, COUNT: 10_000 });
      cursor = String(page.cursor);
      keys += page.keys.length;
    } while (cursor !== '0');
    return { usedMb: used, keys };
  };
  let calls = 0;
  let errors = 0;
  let stop = false;
  const worker = async () => {
    while (!stop) {
      const c = await client(url);
      for (let i = 0; i < 50 && !stop; i++) {
        const r = await c.callTool({ name: 'complete', arguments: ARGS }).catch(() => ({ isError: true }));
        if (r.isError) errors++;
        else calls++;
      }
      await done(c);
    }
  };
  const t0 = Date.now();
  const running = Array.from({ length: n }, worker);
  const redisHead = rc ? `${'redis MB'.padStart(10)}${'keys'.padStart(10)}` : '';
  process.stdout.write(
    `\nsoak: ${n} clients for ${seconds}s on ${url} (${(await healthz()).store} store); RSS sampled every 5 s, min and max of each 30 s\n` +
      `${'elapsed s'.padStart(10)}${'calls'.padStart(10)}${'errors'.padStart(8)}${'sessions'.padStart(10)}${'RSS MB'.padStart(9)}${'min'.padStart(7)}${'max'.padStart(7)}${redisHead}${'load 1m'.padStart(9)}\n`,
  );
  // RSS follows the heap's saw-tooth (young space filling, then a scavenge), so one reading every
  // 30 s lands anywhere on it: each line also gives the least and most of its 5 s readings.
  const samples: { at: number; rss: number; min: number; max: number }[] = [];
  let recent: number[] = [];
  const tick = async () => {
    const m = rssMb(pid);
    recent.push(m.rss);
    const h = await healthz();
    const r = await redisNow();
    const at = Math.round((Date.now() - t0) / 1000);
    samples.push({ at, rss: m.rss, min: Math.min(...recent), max: Math.max(...recent) });
    const redisCols = r ? `${r.usedMb.toFixed(1).padStart(10)}${String(r.keys).padStart(10)}` : '';
    const mb = (x: number, w: number) => x.toFixed(0).padStart(w);
    process.stdout.write(`${String(at).padStart(10)}${String(calls).padStart(10)}${String(errors).padStart(8)}${String(h.sessions).padStart(10)}${mb(m.rss, 9)}${mb(Math.min(...recent), 7)}${mb(Math.max(...recent), 7)}${redisCols}${loadavg()[0]!.toFixed(2).padStart(9)}\n`);
    recent = [];
  };
  let lastTick = t0;
  while (Date.now() - t0 < seconds * 1000) {
    await new Promise((r) => setTimeout(r, Math.min(5000, seconds * 1000 - (Date.now() - t0))));
    if (Date.now() - lastTick >= 29_500 || Date.now() - t0 >= seconds * 1000) {
      lastTick = Date.now();
      await tick();
    } else recent.push(rssMb(pid).rss);
  }
  stop = true;
  await Promise.all(running);
  const c = await client(url);
  const budget = (await c.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: { id: string; reserved: number }[] };
  await done(c);
  const h = await healthz();
  await rc?.quit();
  process.stdout.write(`after the soak: ${h.sessions} sessions open; reserved ${budget.budgets.map((b) => `${b.id}=${b.reserved}`).join(', ')}\n`);
  const after = samples.filter((s) => s.at >= warmupS);
  if (after.length > 1) {
    // Judged three ways against the first line after warm-up: the 30 s readings, and the least and
    // the most of each 30 s (the bottom and the top of the saw-tooth).
    for (const [what, of] of [['RSS', (s: (typeof after)[0]) => s.rss], ['30 s minimum', (s: (typeof after)[0]) => s.min], ['30 s maximum', (s: (typeof after)[0]) => s.max]] as const) {
      const base = of(after[0]!);
      const dev = after.map((s) => ((of(s) - base) / base) * 100);
      const lo = Math.min(...dev);
      const hi = Math.max(...dev);
      process.stdout.write(`${what} after ${warmupS}s of warm-up: ${base.toFixed(0)} MB at ${after[0]!.at}s, then ${lo.toFixed(1)} % to +${hi.toFixed(1)} % (${lo >= -10 && hi <= 10 ? 'within' : 'NOT within'} ±10 %); last ${of(after.at(-1)!).toFixed(0)} MB\n`);
    }
  }
}

/** Opens `count` MCP sessions (initialize only, as idle agents would) and reports the server's RSS. */
async function openSessions(url: string, count: number): Promise<number> {
  let opened = 0;
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } } });
  const worker = async () => {
    while (opened < count) {
      opened++;
      const r = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body,
      });
      await r.text();
      if (!r.headers.get('mcp-session-id')) throw new Error(`session ${opened} not opened: HTTP ${r.status}`);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return opened;
}


function row(name: string, r: LoadResult, rss?: { rss: number; peak: number }): string {
  const f = (n: number, d = 2) => n.toFixed(d).padStart(9);
  const cpu = r.cpuPerCall ? `${f(r.cpuPerCall[0]!, 3)}${f(r.cpuPerCall[1]!, 3)}${f(r.loadCpuPerCall!, 3)}` : '';
  return `${name.padEnd(25)}${f(r.p50)}${f(r.p99)}${f(r.mean)}${f(r.callsPerSec, 0)}${String(r.errors).padStart(7)}${rss ? f(rss.rss, 0) + f(rss.peak, 0) : ''}${cpu}`;
}

/** tollgate runs as deployed: the JavaScript `npm run build` writes, not the TypeScript sources. */
const GATEWAY = 'dist/src/cli.js';
const cleanup: (() => Promise<unknown>)[] = [];

async function main(): Promise<void> {
  if (TARGETS.some((t) => t === 'memory' || t.startsWith('redis'))) execFileSync('npm', ['run', 'build', '--silent'], { stdio: 'inherit' });
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-bench-'));
  try {
    const fakes = await startChild(['tools/fake-providers/main.ts'], {}, /anthropic\s+(http\S+)\s+openai\s+(http\S+)/, 'stdout');
    const openaiUrl = fakes.match[2]!;
    // The Anthropic SDK's base URL has no /v1; every target's here ends in it, as on the OpenAI wire.
    const anthropic = API === 'anthropic' ? { url: fakes.match[1]! } : undefined;
    const upstreamUrl = anthropic ? `${anthropic.url}/v1` : openaiUrl;
    const client = values['openai-client'];
    // The other builds (memory-b) read the policy without `client`, which they may not know.
    const plainPolicy = join(dir, 'bench-plain.yaml');
    writeFileSync(plainPolicy, httpBenchPolicy(openaiUrl, KEY, { anthropic }));
    const policyFile = join(dir, 'bench.yaml');
    writeFileSync(policyFile, httpBenchPolicy(openaiUrl, KEY, { client, anthropic }));
    const settleFirstPolicy = join(dir, 'bench-settle-before-reply.yaml');
    writeFileSync(settleFirstPolicy, httpBenchPolicy(openaiUrl, KEY, { settleBeforeReply: true, client, anthropic }));

    const servers: { name: string; url: string; pid: number }[] = [];
    const floors: WireTarget[] = [];
    if (TARGETS.includes('upstream')) floors.push({ name: 'upstream (fake, direct)', baseUrl: upstreamUrl, pid: fakes.child.pid!, headers: {} });
    if (TARGETS.includes('nginx')) {
      const n = await startNginx(join(dir, 'nginx'), upstreamUrl);
      if (n) floors.push({ name: 'nginx', ...n });
      else process.stdout.write('nginx: not installed; skipping that target\n');
    }
    if (TARGETS.includes('node')) {
      const p = await startChild(['tools/bench/nodefloor.ts', upstreamUrl, ...(anthropic ? ['--anthropic'] : [])], {}, /serving at (\S+)/, 'stderr', PROF);
      floors.push({ name: 'node floor', baseUrl: p.match[1]!, pid: p.child.pid!, headers: {} });
    }
    if (TARGETS.includes('node-express')) {
      const p = await startChild(['tools/bench/nodefloor.ts', upstreamUrl, '--express', ...(anthropic ? ['--anthropic'] : [])], {}, /serving at (\S+)/, 'stderr', PROF);
      floors.push({ name: 'node floor, express', baseUrl: p.match[1]!, pid: p.child.pid!, headers: {} });
    }
    if (TARGETS.includes('portkey')) {
      const p = await startPortkey(upstreamUrl, anthropic ? 'anthropic' : 'openai');
      if (p) floors.push({ name: 'portkey', ...p });
      else process.stdout.write('portkey: not installed (npm ci --prefix tools/bench/peer); skipping that target\n');
    }
    if (TARGETS.includes('passthrough')) {
      const p = await startChild(['tools/bench/passthrough.ts', openaiUrl], {}, /serving MCP at (\S+)/, 'stderr', PROF);
      servers.push({ name: 'passthrough (no policy)', url: p.match[1]!, pid: p.child.pid! });
    }
    if (TARGETS.includes('passthrough-light')) {
      const p = await startChild(['tools/bench/passthrough.ts', openaiUrl, '--light'], {}, /serving MCP at (\S+)/, 'stderr', PROF);
      servers.push({ name: 'passthrough, light HTTP', url: p.match[1]!, pid: p.child.pid! });
    }
    const redisUrl = TARGETS.some((t) => t.startsWith('redis')) ? await localRedisUrl() : undefined;
    const gatewayEnv = { NODE_OPTIONS: values['node-options'], TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl'), TOLLGATE_DATA_DIR: join(dir, 'data'), TOLLGATE_MAX_SESSIONS: String(Math.max(10_000, SESSIONS + 1000)),
      // The session measurement opens every session with the one bench key.
      TOLLGATE_MAX_SESSIONS_PER_CALLER: String(Math.max(10_000, SESSIONS + 1000)),
    };
    // `--node-options-b` gives the --dist-b builds their own NODE_OPTIONS (with `--dist-b dist`, a flag's A/B on one build).
    const nodeOptionsB = values['node-options-b'] !== undefined ? { NODE_OPTIONS: values['node-options-b'] } : {};
    /** What `--soak` runs on: the memory target, then the Redis one (with its prefix, for Redis's figures). */
    const soakTargets: [string, { url: string; prefix: string } | undefined][] = [];
    // The memory targets must not find the REDIS_URL this bench may have been given for the Redis ones.
    const memoryEnv = { ...gatewayEnv, REDIS_URL: '', REDIS_CLUSTER_NODES: '' };
    if (TARGETS.includes('memory')) {
      const g = await startChild([GATEWAY, 'serve', '--port', '0', '--policy', policyFile], memoryEnv, /serving MCP at (\S+)/, 'stderr', PROF);
      servers.push({ name: 'tollgate (memory)', url: g.match[1]!, pid: g.child.pid! });
      soakTargets.push(['tollgate (memory)', undefined]);
    }
    // Other builds side by side with this one (an A/B in one run): each on the memory store.
    for (const other of TARGETS.includes('memory-b') ? (values['dist-b'] ?? '').split(',').filter(Boolean) : []) {
      const label = basename(other);
      const env = { ...memoryEnv, ...nodeOptionsB, TOLLGATE_EVENTS_FILE: join(dir, `events-${label}.jsonl`), TOLLGATE_DATA_DIR: join(dir, `data-${label}`) };
      const g = await startChild([join(other, 'src/cli.js'), 'serve', '--port', '0', '--policy', plainPolicy], env, /serving MCP at (\S+)/, 'stderr', PROF);
      servers.push({ name: `tollgate (memory, ${label})`, url: g.match[1]!, pid: g.child.pid! });
    }
    // `redis` is one process; `redis-Nw` is one gateway of N cluster workers; `redis-sbr` answers
    // only once the settlement is written (limits.settleBeforeReply). Each gets a key prefix of its own.
    const redisTargets = TARGETS.filter((t) => t === 'redis' || t === 'redis-sbr' || /^redis-\d+w$/.test(t));
    if (redisTargets.length > 0 && !redisUrl) process.stdout.write('redis: no REDIS_URL and nothing on 127.0.0.1:6379; skipping the Redis targets\n');
    for (const target of redisUrl ? redisTargets : []) {
      const workers = /^redis-\d+w$/.test(target) ? target.slice(6, -1) : undefined;
      const prefix = `tgbench:${randomBytes(4).toString('hex')}:`;
      cleanup.push(() => deleteKeys(redisUrl!, prefix));
      const env = { ...gatewayEnv, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_EVENTS_FILE: join(dir, `events-${target}.jsonl`), ...(workers ? { TOLLGATE_WORKERS: workers } : {}) };
      const policy = target === 'redis-sbr' ? settleFirstPolicy : policyFile;
      const g = await startChild([GATEWAY, 'serve', '--port', '0', '--policy', policy, '--redis', redisUrl!], env, /serving MCP at (\S+)/, 'stderr', PROF);
      const name = workers ? `tollgate (redis, ${workers}w)` : target === 'redis-sbr' ? 'tollgate (redis, sbr)' : 'tollgate (redis)';
      servers.push({ name, url: g.match[1]!, pid: g.child.pid! });
      if (target === 'redis') soakTargets.push([name, { url: redisUrl!, prefix }]);
    }
    // Other builds on the Redis store beside this one (`redis-b` with `--dist-b`), each under a prefix of its own.
    for (const other of redisUrl && TARGETS.includes('redis-b') ? (values['dist-b'] ?? '').split(',').filter(Boolean) : []) {
      const label = basename(dirname(resolve(other))) + '/' + basename(other);
      const prefix = `tgbench:${randomBytes(4).toString('hex')}:`;
      cleanup.push(() => deleteKeys(redisUrl!, prefix));
      const env = { ...gatewayEnv, ...nodeOptionsB, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_EVENTS_FILE: join(dir, `events-redis-${label.replace('/', '-')}.jsonl`) };
      const g = await startChild([join(other, 'src/cli.js'), 'serve', '--port', '0', '--policy', plainPolicy, '--redis', redisUrl!], env, /serving MCP at (\S+)/, 'stderr', PROF);
      servers.push({ name: `tollgate (redis, ${label})`, url: g.match[1]!, pid: g.child.pid! });
    }

    if (WIRE) {
      const tollgates = servers.map((x): WireTarget => ({ name: x.name, baseUrl: x.url.replace(/\/mcp$/, '/v1'), pid: x.pid, headers: {}, tollgate: true }));
      const opts = { wire: WIRE, clients: CLIENTS, seconds: SECONDS, warmup: WARMUP, sequential: SEQUENTIAL, rounds: Number(values.rounds), key: KEY, prompt: values['prompt-chars'] ? prosePrompt(Number(values['prompt-chars'])) : ARGS.prompt, freshPrompt: values['prompt-fresh'], maxTokens: ARGS.max_tokens, model: 'standard', fakePid: fakes.child.pid!, together: values.together };
      if (values['prompt-chars']) process.stdout.write(`prompt: ${opts.prompt.length} characters of prose${opts.freshPrompt ? ', each call its own (numbered)' : ', the same on every call'}\n`);
      process.stdout.write(`node ${process.version}; tollgate NODE_OPTIONS: ${values['node-options'] || '(none)'}\n`);
      await runWire([...floors, ...tollgates.filter((x) => !x.name.startsWith('passthrough'))], opts, (text) => process.stdout.write(text));
      return;
    }
    const head = `${'target'.padEnd(25)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'mean ms'.padStart(9)}${'calls/s'.padStart(9)}${'errors'.padStart(7)}`;
    process.stdout.write(`node ${process.version}, ${CLIENTS} clients x ${SECONDS}s (after ${WARMUP}s warm-up); sequential ${SEQUENTIAL} calls; tollgate NODE_OPTIONS: ${values['node-options'] || '(none)'}${values['node-options-b'] !== undefined ? `, --dist-b builds: ${values['node-options-b'] || '(none)'}` : ''}\n\n`);
    // `--rounds N` repeats the measurement; each round starts the concurrent runs at the next target
    // (rotating), so that no target always runs first or last on a machine whose state drifts.
    const rounds = Math.max(1, Number(values.rounds));
    const baselines = servers.filter((s) => s.name.startsWith('passthrough'));
    const signed = (n: number, digits: number) => `${n >= 0 ? '+' : ''}${n.toFixed(digits)}`;
    const perRound: { seq: Record<string, LoadResult>; conc: Record<string, LoadResult> }[] = [];
    for (let round = 0; round < rounds; round++) {
      if (rounds > 1) process.stdout.write(`\n=== round ${round + 1} of ${rounds}\n`);
      const seq: Record<string, LoadResult> = {};
      if (SEQUENTIAL > 0) {
        process.stdout.write(`sequential (one client per target, targets taking turns call by call; calls/s = 1000 / mean)\n${head}\n`);
        const results = await sequential(servers.map((x) => x.url), SEQUENTIAL);
        servers.forEach((x, i) => {
          seq[x.name] = results[i]!;
          process.stdout.write(`${row(x.name, results[i]!)}\n`);
        });
      }
      const conc: Record<string, LoadResult> = {};
      if (SECONDS > 0) {
        process.stdout.write(`\nconcurrent (${CLIENTS} clients)\n${head}${'RSS MB'.padStart(9)}${'peak MB'.padStart(9)}${'srv cpu'.padStart(9)}${'fake cpu'.padStart(9)}${'load cpu'.padStart(9)}\n`);
        const measure = (s: (typeof servers)[number]) => load(s.url, CLIENTS, SECONDS, [s.pid, fakes.child.pid!]);
        const report = (s: (typeof servers)[number], r: LoadResult) => {
          conc[s.name] = r;
          process.stdout.write(`${row(s.name, r, rssMb(s.pid))}\n`);
        };
        if (values.together) {
          // Every target under load at once, each with its own clients: a change in the machine's
          // speed meets all of them alike, and each target's share of the CPU, so its throughput,
          // follows what a call costs it. The fake's CPU is the whole fake's, shared by the targets.
          (await Promise.all(servers.map(measure))).forEach((r, i) => report(servers[i]!, r));
        } else {
          for (let k = 0; k < servers.length; k++) {
            const s = servers[(round + k) % servers.length]!;
            report(s, await measure(s));
          }
        }
      }
      perRound.push({ seq, conc });
      // Enforcement's cost is measured against the passthrough with the same HTTP plumbing when it ran.
      for (const base of baselines) {
        process.stdout.write(`\noverhead over the ${base.name}\n`);
        for (const s of servers.filter((x) => !x.name.startsWith('passthrough'))) {
          const a = seq[s.name];
          const b = seq[base.name];
          if (a && b) process.stdout.write(`${s.name.padEnd(25)} sequential: ${signed(a.p50 - b.p50, 3)} ms p50, ${signed(a.p99 - b.p99, 3)} ms p99\n`);
          const c = conc[s.name];
          const d = conc[base.name];
          if (c && d) process.stdout.write(`${s.name.padEnd(25)} concurrent: ${signed(c.p50 - d.p50, 2)} ms p50, ${signed(c.p99 - d.p99, 2)} ms p99, throughput x${(c.callsPerSec / d.callsPerSec).toFixed(2)}\n`);
        }
      }
    }
    if (rounds > 1) {
      const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
      process.stdout.write(`\nmedians of ${rounds} rounds: sequential p99 ms, calls/s (${CLIENTS} clients), server CPU ms per call\n`);
      for (const s of servers) {
        const seqP99 = perRound.map((r) => r.seq[s.name]?.p99).filter((x): x is number => x !== undefined);
        const rate = perRound.map((r) => r.conc[s.name]?.callsPerSec).filter((x): x is number => x !== undefined);
        const cpu = perRound.map((r) => r.conc[s.name]?.cpuPerCall?.[0]).filter((x): x is number => x !== undefined);
        process.stdout.write(`${s.name.padEnd(25)}${seqP99.length ? median(seqP99).toFixed(2).padStart(9) : ''.padStart(9)}${rate.length ? median(rate).toFixed(0).padStart(9) : ''.padStart(9)}${cpu.length ? median(cpu).toFixed(3).padStart(9) : ''.padStart(9)}\n`);
      }
      // An A/B (--dist-b): this build against each other build on the same store, round by round,
      // since the targets of one round meet the machine in one state and rounds differ more than
      // targets do. Issue 16's criterion (within 10 % of the build before the journal) reads here.
      const others = servers.filter((s) => thisBuildBeside(s.name) !== undefined);
      if (others.length > 0) {
        const ratios = (name: string, other: string, pick: (r: (typeof perRound)[number], n: string) => number | undefined) =>
          perRound.flatMap((r) => {
            const a = pick(r, name);
            const b = pick(r, other);
            return a !== undefined && b !== undefined && b > 0 ? [a / b] : [];
          });
        process.stdout.write(`\nthis build against the others, round by round (ratios; median of the rounds, the two middle ones averaged when even)\n`);
        for (const o of others) {
          const mine = thisBuildBeside(o.name)!;
          if (!servers.some((s) => s.name === mine)) continue;
          const rate = ratios(mine, o.name, (r, n) => r.conc[n]?.callsPerSec);
          const p99 = ratios(mine, o.name, (r, n) => r.seq[n]?.p99);
          process.stdout.write(`${mine} / ${o.name}: calls/s ${ratiosText(rate)}\n`);
          process.stdout.write(`${mine} / ${o.name}: sequential p99 ${ratiosText(p99)}\n`);
        }
      }
    }
    // The soak runs on the memory and the Redis store (whichever of them are targets), one after the other.
    for (const [name, redis] of SOAK > 0 ? soakTargets : []) {
      const g = servers.find((x) => x.name === name);
      if (g) await soak(g.url, g.pid, SOAK, CLIENTS, SOAK_WARMUP, redis);
    }
    if (SESSIONS > 0) {
      // A gateway of its own, so that what the load runs left on the heap does not count: RSS when
      // idle, then 5 s after SESSIONS sessions were opened, and again as the gateway sits idle with
      // them open (V8 gives back the heap that the burst of initialize requests grew only after a
      // while without allocation).
      const g = await startChild([GATEWAY, 'serve', '--port', '0', '--policy', policyFile], { ...memoryEnv, TOLLGATE_EVENTS_FILE: join(dir, 'events-sessions.jsonl'), TOLLGATE_DATA_DIR: join(dir, 'data-sessions') }, /serving MCP at (\S+)/, 'stderr', PROF);
      await sleep(3000);
      const before = rssMb(g.child.pid!);
      const opened = await openSessions(g.match[1]!, SESSIONS);
      await sleep(5000);
      const after = rssMb(g.child.pid!);
      const later: string[] = [];
      const marks = [...new Set([15, 30, SESSIONS_IDLE])].filter((m) => m > 5 && m <= SESSIONS_IDLE).sort((x, y) => x - y);
      let waited = 5;
      for (const mark of marks) {
        await sleep((mark - waited) * 1000);
        waited = mark;
        later.push(`${rssMb(g.child.pid!).rss.toFixed(0)} MB after ${mark} s`);
      }
      const health = (await (await fetch(g.match[1]!.replace(/\/mcp$/, '/healthz'))).json()) as { sessions: number };
      process.stdout.write(
        `\nsessions: ${opened} opened on a fresh tollgate (memory): RSS ${before.rss.toFixed(0)} MB idle -> ${after.rss.toFixed(0)} MB 5 s after the last one (peak ${after.peak.toFixed(0)} MB)` +
          `${later.length ? ` -> ${later.join(' -> ')}` : ''}; ${health.sessions} sessions open at the end\n`,
      );
    }
  } finally {
    killChildren();
    // The ledger keys this run wrote go with it, once the gateways have stopped writing.
    await new Promise((r) => setTimeout(r, 500));
    for (const c of cleanup) await c().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench('bench', main, () => killChildren('SIGKILL'));
