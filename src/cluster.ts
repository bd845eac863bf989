/**
 * `tollgate serve --workers N`: N gateway processes on one port (node:cluster), so that one gateway
 * uses every core of its machine. They share what must be shared: the Redis ledger (a budget is
 * one budget whichever worker serves the call), a session secret (any worker serves any MCP
 * session), and /metrics, which any worker answers with the sum over all of them.
 *
 * The primary serves nothing itself: it starts the workers, restarts one that dies, forwards SIGHUP
 * (policy reload) and stops them all on SIGTERM or SIGINT: it asks each worker to shut down (each
 * drains within the shutdown deadline, as a single process does) and exits once they all have, with
 * code 1 if any of them did. A second SIGTERM or SIGINT tells the workers to exit at once and exits
 * with 143 or 130. The request goes over the cluster's IPC channel rather than as a signal, so a
 * worker that also got the terminal's SIGINT itself (Ctrl-C signals the whole process group) does
 * not take the two for a second signal.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { EnvName } from './config/env.js';

const METRICS_REQUEST = 'tollgate:metrics-request';
const METRICS_REPLY = 'tollgate:metrics-reply';
/** Primary to worker: shut down (`force` absent), or exit at once (`force`: the second signal). */
const SHUTDOWN_REQUEST = 'tollgate:shutdown';
/** How much longer than the workers' own deadline stopping waits before killing them. */
const STOP_GRACE_MARGIN_MS = 5000;
/** After a second signal, how long the workers get to log what they leave before they are killed. */
const FORCE_GRACE_MS = 2000;

export interface PrimaryOptions {
  workers: number;
  /** Given to every worker; random for this gateway when not configured. */
  sessionSecret?: string;
  /** Called once every worker listens, with the URL they share. */
  onReady: (url: string) => void;
  log: (line: string) => void;
  /** The workers' shutdown deadline; a worker still running this long (plus a margin) after being asked to stop is killed. */
  shutdownTimeoutMs: number;
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

  const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => Boolean(w) && !w!.isDead());
  /** Asks a worker to shut down, or to exit at once; by signal when its IPC channel is gone. */
  const ask = (w: Worker, force?: NodeJS.Signals) => {
    if (w.isConnected()) w.send({ type: SHUTDOWN_REQUEST, force });
    else w.process.kill(force ?? 'SIGTERM');
  };
  /** Resolves with whether every worker exited with code 0, killing those still running after `graceMs`. */
  const awaitWorkers = async (workers: Worker[], graceMs: number) => {
    const exits = workers.map((w) => new Promise<boolean>((r) => (w.isDead() ? r(w.process.exitCode === 0) : w.once('exit', (code: number) => r(code === 0)))));
    const timer = setTimeout(() => {
      for (const w of workers) {
        if (w.isDead()) continue;
        opts.log(`tollgate: worker ${w.process.pid} still running ${graceMs} ms after being asked to stop; killing it`);
        w.process.kill('SIGKILL');
      }
    }, graceMs);
    const clean = (await Promise.all(exits)).every(Boolean);
    clearTimeout(timer);
    return clean;
  };

  let stopped: Promise<void> | undefined;
  let forced = false;
  const stop = (code: number) => {
    stopping = true;
    stopped ??= (async () => {
      const workers = live();
      for (const w of workers) ask(w);
      const clean = await awaitWorkers(workers, opts.shutdownTimeoutMs + STOP_GRACE_MARGIN_MS);
      // After a second signal, `force` gives the exit code.
      if (!forced) process.exit(code !== 0 || !clean ? 1 : 0);
    })();
    return stopped;
  };
  /** A second signal: the workers exit at once (logging what they leave), then so does the primary. */
  const force = async (signal: NodeJS.Signals) => {
    forced = true;
    const workers = live();
    for (const w of workers) ask(w, signal);
    await awaitWorkers(workers, FORCE_GRACE_MS);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  // Handlers stay installed: a signal left to its default action is ignored by a process that runs
  // as PID 1 (in a container), which is how a second SIGTERM could fail to end a replica.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => void (stopped ? force(signal) : stop(0)));
  }
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

/**
 * In a worker: calls `handler` when the primary asks this worker to shut down (`force` absent), or
 * to exit at once (`force`: the signal the primary got a second time).
 */
export function onPrimaryShutdown(handler: (force?: NodeJS.Signals) => void): void {
  process.on('message', (msg: { type?: string; force?: NodeJS.Signals }) => {
    if (msg?.type === SHUTDOWN_REQUEST) handler(msg.force);
  });
}
