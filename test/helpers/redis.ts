/**
 * Real Redis for tests: REDIS_URL when set, else a server already answering on 127.0.0.1:6379,
 * else a private `redis-server` on a free port. Outage tests always get a private server they
 * may stop and start again on the same port. Tests write under `uniquePrefix()` and remove only
 * their own keys (SCAN + DEL), never FLUSHALL/FLUSHDB. Cluster tests get a private cluster of
 * their own (`startPrivateCluster`), removed with its files when they stop it.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createClient } from '@keyv/redis';
import { lineKeys } from '../../src/policy/budgets.js';
import type { LedgerLine, QuotaStore } from '../../src/quota/store.js';

export interface TestRedis {
  url: string;
  stop(): Promise<void>;
}

export interface PrivateRedis extends TestRedis {
  port: number;
  /** Ends the server at once (SIGKILL), as a crash would. */
  kill(): Promise<void>;
  /** Starts the server again on the same port (after a kill too, with its AOF if it has one); resolves once it answers PING. */
  restart(): Promise<void>;
  /** Suspends the server (SIGSTOP): connections stay open but nothing answers, like a hung host. */
  freeze(): void;
  /** Resumes a frozen server (SIGCONT). */
  thaw(): void;
}

/** True when something on host:port answers a RESP PING within `timeoutMs`. */
export function answersPing(host: string, port: number, timeoutMs = 300): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Spawns a throw-away redis-server on its own port: no persistence, or with `appendonly` an AOF
 * written on every command (`appendfsync always`) in a temporary directory, so a server killed
 * with SIGKILL and restarted comes back with every write it acknowledged. `args` are further
 * server options (e.g. `--maxmemory 4mb`).
 */
export async function startPrivateRedis(opts: { appendonly?: boolean; args?: string[] } = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = opts.appendonly ? await mkdtemp(join(tmpdir(), 'tollgate-redis-')) : undefined;
  const persistence = dir ? ['--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  let child: ChildProcess | undefined;
  const launch = async () => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence, ...(opts.args ?? [])], {
      stdio: 'ignore',
    });
    child = proc;
    // Test workers end by signal, skipping afterEach and 'exit' handlers; this watchdog ends the
    // server once this process is gone, so no redis-server outlives its test run.
    const watchdog = `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${proc.pid} 2>/dev/null; do sleep 0.5; done; kill -9 ${proc.pid} 2>/dev/null`;
    spawn('sh', ['-c', watchdog], { detached: true, stdio: 'ignore' }).unref();
    const failed = new Promise<never>((_, reject) => proc.once('error', (err) => reject(new Error(`redis-server did not start: ${err.message}`))));
    await Promise.race([waitFor(() => answersPing('127.0.0.1', port), 5000, `redis-server on port ${port}`), failed]);
  };
  const end = async (signal: NodeJS.Signals) => {
    const proc = child;
    child = undefined;
    if (!proc) return;
    proc.kill('SIGCONT');
    proc.kill(signal);
    await exited(proc);
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      await end('SIGTERM');
      if (dir) await rm(dir, { recursive: true, force: true });
    },
    kill: () => end('SIGKILL'),
    async restart() {
      await end('SIGTERM');
      await launch();
    },
    freeze: () => void child?.kill('SIGSTOP'),
    thaw: () => void child?.kill('SIGCONT'),
  };
}

/** A Redis for ordinary tests; `stop()` only stops a server this helper started. */
export async function startRedis(): Promise<TestRedis> {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, stop: async () => {} };
  if (await answersPing('127.0.0.1', 6379)) return { url: 'redis://127.0.0.1:6379', stop: async () => {} };
  return startPrivateRedis();
}

const DAY_MS = 86_400_000;

/** Redis's own clock (TIME), epoch ms. */
export async function redisTimeMs(client: Pick<ReturnType<typeof createClient>, 'time'>): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/**
 * An instant on the UTC day Redis's own clock is on, for a test whose writes must all land on the
 * day Redis calls today (the rollup scripts compare the two): Redis's clock now, after waiting out
 * the last 30 seconds of a day.
 */
export async function onRedisDay(client: Pick<ReturnType<typeof createClient>, 'time'>): Promise<number> {
  const t = await redisTimeMs(client);
  const left = DAY_MS - (t % DAY_MS);
  if (left > 30_000) return t;
  await new Promise((r) => setTimeout(r, left + 50));
  return redisTimeMs(client);
}

/** A key prefix unique to this process and call, e.g. `tgtest:store:4242:9f3a1c:`. */
export function uniquePrefix(name: string): string {
  return `tgtest:${name}:${process.pid}:${randomBytes(4).toString('hex')}:`;
}

/** Deletes every key under `prefix` (SCAN + DEL); returns how many were deleted. */
export async function deleteKeys(url: string, prefix: string): Promise<number> {
  const client = createClient({ url });
  client.on('error', () => {});
  await client.connect();
  let deleted = 0;
  try {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      if (keys.length > 0) deleted += await client.del(keys);
    }
  } finally {
    client.destroy();
  }
  return deleted;
}

export interface PrivateCluster {
  /** `redis://127.0.0.1:<port>` of every node, masters first. */
  nodes: string[];
  /** Ports of the masters, then of the replicas. */
  ports: number[];
  /** Kills one node at once (SIGKILL), as a crash would. */
  kill(port: number): Promise<void>;
  /** Starts a killed node again on its port, with its cluster config (its data is gone). */
  restart(port: number): Promise<void>;
  /** Resolves once every running node reports `cluster_state:ok`. */
  waitUntilOk(): Promise<void>;
  /** Suspends one node (SIGSTOP): its connections stay open but nothing answers, like a hung host. */
  freeze(port: number): void;
  /** Resumes a frozen node (SIGCONT). */
  thaw(port: number): void;
  /** Runs `redis-cli -p <port> <args>` and returns its output, trimmed. */
  cli(port: number, ...args: string[]): Promise<string>;
  /** Kills every node and removes the cluster's files. */
  stop(): Promise<void>;
}

const run = promisify(execFile);

/** True when `redis-cli` can be run; cluster tests need it to create the cluster. */
export function hasRedisCli(): boolean {
  return spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * A throw-away Redis Cluster of `masters` masters (each with `replicas` replicas) on free ports,
 * no persistence, its node files in a temporary directory. Resolves once every node reports
 * `cluster_state:ok`. A short node timeout lets tests see a failover within seconds.
 */
export async function startPrivateCluster(masters = 3, opts: { replicas?: number } = {}): Promise<PrivateCluster> {
  const replicas = opts.replicas ?? 0;
  const dir = await mkdtemp(join(tmpdir(), 'tollgate-cluster-'));
  const ports: number[] = [];
  const children = new Map<number, ChildProcess>();
  const cli = async (port: number, ...args: string[]) => (await run('redis-cli', ['-p', String(port), ...args])).stdout.trim();
  // A node's cluster config lives in its own file, so a node launched again rejoins as it was.
  const launch = async (port: number) => {
    const proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout', '1000', '--save', '', '--appendonly', 'no',
        // Redis 7 waits 5 s before a diskless full sync; a replica must hold the data before it can take over.
        '--repl-diskless-sync-delay', '0'],
      { stdio: 'ignore' },
    );
    children.set(port, proc);
    const watchdog = `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${proc.pid} 2>/dev/null; do sleep 0.5; done; kill -9 ${proc.pid} 2>/dev/null`;
    spawn('sh', ['-c', watchdog], { detached: true, stdio: 'ignore' }).unref();
    await waitFor(() => answersPing('127.0.0.1', port), 5000, `cluster node on port ${port}`);
  };
  const ok = async () => (await Promise.all([...children.keys()].map((p) => cli(p, 'cluster', 'info')))).every((info) => info.includes('cluster_state:ok'));
  const stop = async () => {
    await Promise.all([...children.values()].map(async (proc) => {
      proc.kill('SIGKILL');
      await exited(proc);
    }));
    children.clear();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      // Ports are picked one at a time while the previous servers hold theirs, so none repeats.
      const port = await freePort();
      ports.push(port);
      await launch(port);
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes']);
    await waitFor(ok, 15_000, 'cluster_state:ok on every node');
    // `--cluster create` gives the first `masters` ports the slots; list them in that order.
    const roles = await Promise.all(ports.map(async (p) => ({ p, master: (await cli(p, 'role')).startsWith('master') })));
    const ordered = [...roles.filter((r) => r.master), ...roles.filter((r) => !r.master)].map((r) => r.p);
    return {
      nodes: ordered.map((p) => `redis://127.0.0.1:${p}`),
      ports: ordered,
      async kill(port) {
        const proc = children.get(port);
        children.delete(port);
        proc?.kill('SIGKILL');
        if (proc) await exited(proc);
      },
      async restart(port) {
        if (children.has(port)) throw new Error(`node ${port} is still running`);
        await launch(port);
      },
      waitUntilOk: () => waitFor(ok, 20_000, 'cluster_state:ok on every running node'),
      freeze: (port) => void children.get(port)?.kill('SIGSTOP'),
      thaw: (port) => void children.get(port)?.kill('SIGCONT'),
      cli,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

const HOUR = 3_600_000;

/** A ledger line of budget `weekly` for ada under `prefix`, on the current hour's counter (kept two hours). */
export function hourLine(prefix: string, amount: number, limit: number): LedgerLine {
  const start = Math.floor(Date.now() / HOUR) * HOUR;
  return { budgetId: 'weekly', subject: 'ada', limit, amount, expiresAt: start + 2 * HOUR, ...lineKeys(prefix, 'weekly', 'ada', [start], start) };
}

/** Reads `line` until `store` answers again (10 s at most), without opening a new store; resolves with what it read. */
export async function untilReachable(store: QuotaStore, line: LedgerLine): Promise<{ used: number; reserved: number }[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await store.read([line]);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
