/**
 * Reliability drills on loopback, each bounded to a few seconds of load, each printing what was
 * charged against what was allowed:
 *
 *   npm run drills -- [redis] [provider] [kill]      (default: all three)
 *
 * redis     Redis killed and restarted under load (append-only file on, as in production).
 * provider  429, 5xx, hung and cut streams from the primary provider under load, with failover.
 * kill      one of two gateway replicas killed mid-call; its reservations must expire.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { applicableLines } from '../../src/policy/budgets.js';
import { parsePolicy } from '../../src/policy/load.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { startFakeAnthropic } from '../fake-providers/anthropic.js';
import { startFakeBedrock } from '../fake-providers/bedrock.js';
import { answersPing, freePort, killChildren, localRedisUrl, sleep, startChild } from './common.js';
import { deleteKeys } from '../../test/helpers/redis.js';

const KEY = 'tg-drill-key';
const SHA = createHash('sha256').update(KEY).digest('hex');
const PRINCIPAL = { user: 'drill-user', teams: ['drill-team'], costCenter: 'cc-drill', groups: ['employees'], roles: [], authMethod: 'api_key' as const };
const quiet = { info() {}, warn() {}, error() {} };

interface Outcome {
  served: number;
  refused: Record<string, number>;
}

function budgetsYaml(limit: number, ttl = 600): string {
  return `apiKeys:
  - { id: drill, sha256: ${SHA}, user: drill-user, teams: [drill-team], costCenter: cc-drill, groups: [employees] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week, timezone: Europe/Paris }, limit: { tokens: ${limit} } }
limits: { reservationTtlSeconds: ${ttl} }
`;
}

async function client(url: string): Promise<Client> {
  const c = new Client({ name: 'drill', version: '1' });
  await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${KEY}` } } }));
  return c;
}

/** `n` clients per URL calling back to back until `stop()` resolves; some calls stream. */
async function drive(urls: string[], n: number, until: Promise<void>): Promise<Outcome> {
  const out: Outcome = { served: 0, refused: {} };
  const clients = await Promise.all(urls.flatMap((u) => Array.from({ length: n }, () => client(u))));
  let done = false;
  void until.then(() => (done = true));
  let i = 0;
  await Promise.all(
    clients.map(async (c) => {
      while (!done) {
        const streamed = i++ % 2 === 0;
        const r = await c
          .callTool({ name: 'complete', arguments: { prompt: 'drill call with a few words in it', max_tokens: 40 } }, undefined, streamed ? { onprogress: () => {}, timeout: 20_000 } : { timeout: 20_000 })
          .catch((err: unknown) => ({ isError: true, _meta: { 'io.tollgate/error': { code: `client: ${(err as Error).message.slice(0, 40)}` } } }));
        if (!r.isError) out.served++;
        else {
          const code = ((r._meta as Record<string, { code: string }> | undefined)?.['io.tollgate/error']?.code ?? 'unknown').toString();
          out.refused[code] = (out.refused[code] ?? 0) + 1;
          if (code === 'BUDGET_EXHAUSTED') await sleep(50);
          if (code.includes('fetch failed')) break; // this client's replica is gone
        }
      }
    }),
  );
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  return out;
}

function eventsCharged(files: string[]): { events: number; charged: number } {
  let events = 0;
  let charged = 0;
  for (const f of files) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const e = JSON.parse(line) as { event?: string; 'tollgate.charged'?: { budget: string; amount: number }[] };
      if (e.event !== 'tollgate.decision') continue;
      events++;
      charged += (e['tollgate.charged'] ?? []).filter((c) => c.budget === 'user-weekly').reduce((n, c) => n + c.amount, 0);
    }
  }
  return { events, charged };
}

async function ledger(redisUrl: string, prefix: string, policyText: string): Promise<{ used: number; reserved: number }> {
  const store = new RedisQuotaStore({ url: redisUrl, prefix, recover: false, logger: quiet });
  try {
    const lines = applicableLines(parsePolicy(policyText, 'drill.yaml').budgets, PRINCIPAL, Date.now(), prefix);
    return (await store.read(lines.map((l) => l.line)))[0]!;
  } finally {
    await store.close();
  }
}

function report(name: string, limit: number, o: Outcome, l: { used: number; reserved: number }, ev: { events: number; charged: number }, note = ''): boolean {
  const ok = l.used <= limit && l.reserved === 0 && l.used === ev.charged;
  process.stdout.write(
    `\n[${name}] ${ok ? 'PASS' : 'FAIL'}\n` +
      `  calls served ${o.served}, refused ${JSON.stringify(o.refused)}\n` +
      `  allowed ${limit} tokens; ledger charged ${l.used} (reserved left ${l.reserved}); decision events charged ${ev.charged} over ${ev.events} events\n` +
      `  ledger <= allowed: ${l.used <= limit}; ledger == events: ${l.used === ev.charged}${note ? `\n  ${note}` : ''}\n`,
  );
  return ok;
}

/** A private redis-server with an append-only file, so a restart keeps the ledger as production would. */
async function privateRedis(dir: string): Promise<{ url: string; port: number; kill(): Promise<void>; start(): Promise<void> }> {
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir], { stdio: 'ignore' });
    const t0 = Date.now();
    while (!(await answersPing(port))) {
      if (Date.now() - t0 > 5000) throw new Error('redis-server did not start');
      await sleep(25);
    }
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    async kill() {
      const p = proc;
      if (!p) return;
      p.kill('SIGKILL');
      await new Promise((r) => p.once('exit', r));
    },
  };
}

async function gateway(dir: string, name: string, policyText: string, env: Record<string, string>) {
  const policyFile = join(dir, `${name}.yaml`);
  writeFileSync(policyFile, policyText);
  const events = join(dir, `${name}.jsonl`);
  const g = await startChild(['src/cli.ts', 'serve', '--port', '0', '--policy', policyFile, '--events', events], { TOLLGATE_LOG_LEVEL: 'error', TOLLGATE_DATA_DIR: `${events}.data`, ...env }, /serving MCP at (\S+)/, 'stderr');
  return { url: g.match[1]!, child: g.child, events };
}

async function redisDrill(dir: string): Promise<boolean> {
  const redis = await privateRedis(dir);
  const limit = 12_000;
  const ttl = 4;
  const policy = `version: 1\nproviders:\n  demo: { kind: demo, latencyMs: 20 }\ntiers:\n  standard: [demo/medium]\n${budgetsYaml(limit, ttl)}`;
  const prefix = 'drill:redis:';
  const g = await gateway(dir, 'redis', policy, { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_STORE_TIMEOUT_MS: '500' });
  const script = (async () => {
    await sleep(3000);
    await redis.kill();
    await sleep(3000);
    await redis.start();
    await sleep(4000);
  })();
  const o = await drive([g.url], 8, script);
  await sleep(1500); // queued settlements replay on reconnect
  const early = await ledger(redis.url, prefix, policy);
  await sleep(ttl * 1000); // a reserve Redis applied while its caller had given up on it expires
  // The drill reads without recovering (as the CLI does): the gateway's sweep, every 10 s or so,
  // closes what expired, and its event log hears it.
  let l = await ledger(redis.url, prefix, policy);
  for (let waited = 0; l.reserved > 0 && waited < 15_000; waited += 500) {
    await sleep(500);
    l = await ledger(redis.url, prefix, policy);
  }
  await sleep(500); // the event log's last writes
  const ok = report(
    'redis killed for 3 s and restarted',
    limit,
    o,
    l,
    eventsCharged([g.events]),
    `budget fails closed: calls during the outage are refused; ${early.reserved} tokens were still reserved right after the load, ${l.reserved} after the ${ttl} s reservation TTL`,
  );
  g.child.kill('SIGTERM');
  await redis.kill();
  return ok;
}

async function providerDrill(dir: string, redisUrl: string): Promise<boolean> {
  const [anthropic, bedrock] = await Promise.all([startFakeAnthropic(), startFakeBedrock()]);
  const limit = 12_000;
  const policy = `version: 1
providers:
  anthropic: { kind: anthropic, apiKey: k, baseUrl: "${anthropic.url}", timeoutMs: 800 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: a, secretAccessKey: s, baseUrl: "${bedrock.url}", timeoutMs: 800 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  bedrock/anthropic.claude-sonnet-4-5-v1:0: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
tiers:
  standard: [anthropic/claude-sonnet-4-5, bedrock/anthropic.claude-sonnet-4-5-v1:0]
${budgetsYaml(limit)}`;
  const prefix = `drill:provider:${randomBytes(3).toString('hex')}:`;
  const g = await gateway(dir, 'provider', policy, { REDIS_URL: redisUrl, TOLLGATE_KEY_PREFIX: prefix });
  let stop = false;
  const faults = (async () => {
    const kinds = [
      () => anthropic.failNext({ kind: 'status', status: 429 }, 3),
      () => anthropic.failNext({ kind: 'status', status: 529 }, 2),
      () => anthropic.failNext({ kind: 'hang' }, 1),
      () => anthropic.failNext({ kind: 'cut', afterWords: 2 }, 2),
      () => bedrock.failNext({ kind: 'status', status: 503 }, 2),
      () => anthropic.failNext({ kind: 'malformed' }, 1),
    ];
    for (let i = 0; !stop; i++) {
      kinds[i % kinds.length]!();
      await sleep(150);
    }
  })();
  const o = await drive([g.url], 8, sleep(8000).then(() => void (stop = true)));
  await faults;
  const l = await ledger(redisUrl, prefix, policy);
  const ok = report('provider 429/529/503/hang/cut/malformed under load', limit, o, l, eventsCharged([g.events]), `upstream requests: anthropic ${anthropic.requests.length}, bedrock ${bedrock.requests.length}`);
  g.child.kill('SIGTERM');
  await Promise.all([anthropic.close(), bedrock.close()]);
  await sleep(300);
  await deleteKeys(redisUrl, prefix);
  return ok;
}

async function killDrill(dir: string, redisUrl: string): Promise<boolean> {
  const limit = 1_000_000;
  const ttl = 3;
  const policy = `version: 1\nproviders:\n  demo: { kind: demo, latencyMs: 400 }\ntiers:\n  standard: [demo/medium]\n${budgetsYaml(limit, ttl)}`;
  const prefix = `drill:kill:${randomBytes(3).toString('hex')}:`;
  const env = { REDIS_URL: redisUrl, TOLLGATE_KEY_PREFIX: prefix };
  const [a, b] = await Promise.all([gateway(dir, 'kill-a', policy, env), gateway(dir, 'kill-b', policy, env)]);
  let killedWith = { used: 0, reserved: 0 };
  const script = (async () => {
    await sleep(3000);
    b.child.kill('SIGKILL');
    await sleep(100);
    killedWith = await ledger(redisUrl, prefix, policy);
    await sleep(2000);
  })();
  const o = await drive([a.url, b.url], 6, script);
  await sleep((ttl + 1) * 1000);
  const l = await ledger(redisUrl, prefix, policy);
  const ok = report(
    'replica killed mid-call',
    limit,
    o,
    l,
    eventsCharged([a.events, b.events]),
    `right after the kill ${killedWith.reserved} tokens were reserved (in-flight calls of both replicas); ${ttl} s later the killed replica's expired`,
  );
  a.child.kill('SIGTERM');
  await sleep(300);
  await deleteKeys(redisUrl, prefix);
  return ok;
}

async function main(): Promise<void> {
  const which = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const run = which.length ? which : ['redis', 'provider', 'kill'];
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-drills-'));
  const shared = await localRedisUrl();
  let sharedRedis: Awaited<ReturnType<typeof privateRedis>> | undefined;
  let ok = true;
  try {
    const redisUrl = shared ?? (sharedRedis = await privateRedis(mkdtempSync(join(dir, 'r-')))).url;
    if (run.includes('redis')) ok = (await redisDrill(dir)) && ok;
    if (run.includes('provider')) ok = (await providerDrill(dir, redisUrl)) && ok;
    if (run.includes('kill')) ok = (await killDrill(dir, redisUrl)) && ok;
  } finally {
    killChildren();
    await sharedRedis?.kill();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(ok ? 0 : 1);
}

main().catch((err: unknown) => {
  killChildren('SIGKILL');
  process.stderr.write(`drills failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
