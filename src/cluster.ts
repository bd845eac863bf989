/**
 * `tollgate serve --workers N`: N gateway processes on one port (node:cluster), so that one gateway
 * uses every core of its machine. They share what must be shared: the Redis ledger (a budget is
 * one budget whichever worker serves the call), a session secret (any worker serves any MCP
 * session), and /metrics, which any worker answers with the sum over all of them.
 *
 * The primary serves nothing itself: it starts the workers, restarts one that dies, forwards SIGHUP
 * (policy reload) and stops them all on SIGTERM or SIGINT.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { EnvName } from './config/env.js';

const METRICS_REQUEST = 'tollgate:metrics-request';
const METRICS_REPLY = 'tollgate:metrics-reply';
/** How long stopping waits for workers to drain before killing them. */
const STOP_GRACE_MS = 10_000;

export interface PrimaryOptions {
  workers: number;
  /** Given to every worker; random for this gateway when not configured. */
  sessionSecret?: string;
  /** Called once every worker listens, with the URL they share. */
  onReady: (url: string) => void;
  log: (line: string) => void;
}

/** Runs the primary until it is told to stop; the process exits from here. */
export function runPrimary(opts: PrimaryOptions): void {
  // The variable is named by the env schema (src/config/env.ts), so a rename there fails here.
  const env = { TOLLGATE_SESSION_SECRET: opts.sessionSecret ?? randomBytes(32).toString('hex') } satisfies Partial<Record<EnvName, string>>;
  const aggregator = new AggregatorRegistry();
  const everListened = new WeakSet<Worker>();
  const started = new WeakMap<Worker, number>();
  let quickDeaths = 0;
  let listening = 0;
  let stopping = false;

  const fork = () => {
    const worker = cluster.fork(env);
    started.set(worker, Date.now());
    worker.on('message', (msg: { type?: string; id?: number }) => {
      if (msg?.type !== METRICS_REQUEST) return;
      aggregator.clusterMetrics().then(
        (text) => worker.isConnected() && worker.send({ type: METRICS_REPLY, id: msg.id, text }),
        (err: unknown) => worker.isConnected() && worker.send({ type: METRICS_REPLY, id: msg.id, error: String(err) }),
      );
    });
    return worker;
  };

  cluster.on('listening', (worker, address) => {
    everListened.add(worker);
    listening++;
    if (listening === opts.workers) {
      const host = address.address?.includes(':') ? `[${address.address}]` : (address.address ?? '127.0.0.1');
      opts.onReady(`http://${host}:${address.port}`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    if (!everListened.has(worker)) {
      // A worker that cannot start (bad settings, store unreachable) would fail again at once.
      opts.log(`tollgate: a worker exited during start-up (${signal ?? `code ${code}`}); stopping`);
      void stop(1);
      return;
    }
    // A worker that dies soon after it started is likely to die again: back off, up to 30 s.
    const lived = Date.now() - (started.get(worker) ?? 0);
    quickDeaths = lived < 10_000 ? quickDeaths + 1 : 0;
    const delay = Math.min(30_000, 500 * 2 ** quickDeaths);
    opts.log(`tollgate: worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); starting another in ${delay} ms`);
    // Not unref'd: with every worker gone, this timer is what keeps the primary alive to restart one.
    setTimeout(() => {
      if (!stopping) fork();
    }, delay);
  });

  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => Boolean(w));
    const exited = workers.map((w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))));
    for (const w of workers) w.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL');
    }, STOP_GRACE_MS);
    await Promise.all(exited);
    clearTimeout(timer);
    process.exit(code);
  };
  process.once('SIGTERM', () => void stop(0));
  process.once('SIGINT', () => void stop(0));
  process.on('SIGHUP', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
  });

  for (let i = 0; i < opts.workers; i++) fork();
}

/**
 * In a worker: lets the primary collect this worker's metrics, and returns how /metrics text is
 * made here (the sum over every worker, asked of the primary).
 */
export function workerMetrics(registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one is what makes prom-client answer the primary's requests in this process.
  new AggregatorRegistry();
  let next = 0;
  const pending = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void }>();
  process.on('message', (msg: { type?: string; id?: number; text?: string; error?: string }) => {
    if (msg?.type !== METRICS_REPLY || msg.id === undefined) return;
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error !== undefined) p?.reject(new Error(msg.error));
    else p?.resolve(msg.text ?? '');
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      // prom-client gives up on a silent worker after 5 s; this bounds a silent primary the same way.
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error('the cluster primary did not answer for metrics within 10 s'));
      }, 10_000);
      pending.set(id, {
        resolve: (text) => (clearTimeout(timer), resolve(text)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      process.send!({ type: METRICS_REQUEST, id });
    });
}

export const isWorker = (): boolean => cluster.isWorker;
