/**
 * Composition root: reads settings, loads the policy, builds the store, the gateway and the
 * transports. The CLI and the tests both start tollgate through here.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RequestHandler } from 'express';
import { isLoopbackHost } from './http/loopback.js';
import type { Logger } from 'pino';
import { AlertEngine } from './alerts/engine.js';
import { parseEnv, type Env } from './config/env.js';
import { GatewayError } from './errors.js';
import { Gateway } from './gateway/gateway.js';
import { createHttpApp, type HttpOptions } from './http/app.js';
import { FileApiKeys } from './identity/fileKeys.js';
import type { EventSink } from './metering/events.js';
import { createMetrics, type GatewayMetrics } from './metering/metrics.js';
import { createLogger } from './metering/redact.js';
import { splunkHecSink } from './metering/siem.js';
import { compositeSink, pinoSink } from './metering/sink.js';
import { loadPolicyFile, type Policy } from './policy/load.js';
import { MemoryQuotaStore } from './quota/memory.js';
import { recoveryEvent } from './quota/journal.js';
import { isAlertLedger, type QuotaStore } from './quota/store.js';

/** The directory holding package.json, found from this file whether run from src/ or dist/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + dir);
    dir = up;
  }
  return dir;
}

export const VERSION: string = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;

export function defaultPolicyPath(): string {
  return join(packageRoot(), 'policy', 'default.yaml');
}

export interface Settings {
  policyPath: string;
  http: HttpOptions;
  redisUrl?: string;
  /** Seed nodes of a Redis Cluster (`REDIS_CLUSTER_NODES`); when set, the ledger uses the cluster, not `redisUrl`. */
  redisClusterNodes?: string[];
  keyPrefix: string;
  /** The embedded store's journal directory; with Redis, where writes queued during an outage are kept (`redis-spill`). None keeps nothing on disk. */
  dataDir?: string;
  /** A Redis command without a reply after this long counts as a store outage. */
  storeTimeoutMs: number;
  /** Redis journal retention: entries each stream keeps (about); none keeps every entry. */
  journalMaxLen?: number;
  /** Redis journal retention by age (ms), when no journalMaxLen is set. */
  journalMaxAgeMs?: number;
  /** How long a day's usage rollup hash is kept in Redis (ms). */
  rollupTtlMs: number;
  /** How long Redis keeps settled markers (ms): see RedisQuotaStoreOptions.settledMarkerMs. */
  settledMarkerMs: number;
  /** How long a shutdown waits for calls in flight and ledger writes before exiting anyway (`--shutdown-timeout`). */
  shutdownTimeoutMs: number;
  eventsFile?: string;
  /** A Splunk HEC collector for decision events when the policy names none (TOLLGATE_SIEM_URL, TOLLGATE_SIEM_TOKEN). */
  siem?: { url: string; token: string };
  logLevel: string;
  /** Most distinct teams with a `team` label value of their own in /metrics (TOLLGATE_METRICS_MAX_TEAMS). */
  metricsMaxTeams: number;
  /** Serve requests without a credential as this principal of the policy (`--dev-anonymous`, TOLLGATE_DEV_ANONYMOUS); loopback only. */
  devAnonymous?: string;
}

/**
 * Settings from the environment, each overridable by a CLI flag. Throws an EnvError naming every
 * variable with a bad value (see src/config/env.ts).
 */
export function settingsFromEnv(env: NodeJS.ProcessEnv): Settings {
  return settingsFrom(parseEnv(env));
}

/** Settings from an environment already parsed; a fresh object the CLI may override. */
export function settingsFrom(env: Env): Settings {
  const copy = (list?: readonly string[]) => (list ? [...list] : undefined);
  return {
    policyPath: resolve(env.TOLLGATE_POLICY ?? defaultPolicyPath()),
    http: {
      host: env.TOLLGATE_HOST,
      port: env.TOLLGATE_PORT,
      allowedHosts: copy(env.TOLLGATE_ALLOWED_HOSTS),
      allowedOrigins: copy(env.TOLLGATE_ALLOWED_ORIGINS),
      maxBodyBytes: env.TOLLGATE_MAX_BODY_BYTES,
      maxSessions: env.TOLLGATE_MAX_SESSIONS,
      maxSessionsPerCaller: env.TOLLGATE_MAX_SESSIONS_PER_CALLER,
      sessionIdleMs: env.TOLLGATE_SESSION_IDLE_SECONDS * 1000,
      sessionSecret: env.TOLLGATE_SESSION_SECRET,
      metricsToken: env.TOLLGATE_METRICS_TOKEN,
      version: VERSION,
    },
    redisUrl: env.REDIS_URL,
    redisClusterNodes: copy(env.REDIS_CLUSTER_NODES),
    keyPrefix: env.TOLLGATE_KEY_PREFIX,
    dataDir: env.TOLLGATE_DATA_DIR === undefined || env.TOLLGATE_DATA_DIR === 'none' ? undefined : resolve(env.TOLLGATE_DATA_DIR),
    storeTimeoutMs: env.TOLLGATE_STORE_TIMEOUT_MS,
    journalMaxLen: env.TOLLGATE_JOURNAL_MAXLEN,
    journalMaxAgeMs: env.TOLLGATE_JOURNAL_MAX_AGE_SECONDS === undefined ? undefined : env.TOLLGATE_JOURNAL_MAX_AGE_SECONDS * 1000,
    rollupTtlMs: env.TOLLGATE_ROLLUP_DAYS * 86_400_000,
    settledMarkerMs: env.TOLLGATE_SETTLED_MARKER_SECONDS * 1000,
    shutdownTimeoutMs: env.TOLLGATE_SHUTDOWN_TIMEOUT_MS,
    eventsFile: env.TOLLGATE_EVENTS_FILE,
    devAnonymous: env.TOLLGATE_DEV_ANONYMOUS,
    siem: env.TOLLGATE_SIEM_URL ? { url: env.TOLLGATE_SIEM_URL, token: env.TOLLGATE_SIEM_TOKEN ?? '' } : undefined,
    logLevel: env.TOLLGATE_LOG_LEVEL,
    metricsMaxTeams: env.TOLLGATE_METRICS_MAX_TEAMS,
  };
}

export interface Runtime {
  gateway: Gateway;
  logger: Logger;
  /** Prometheus metrics fed by the decision events; served at /metrics. */
  metrics: GatewayMetrics;
  /** The policy's alerts, evaluated from the decision events (absent with a store that cannot hold alert marks). */
  alerts?: AlertEngine;
  /** Settlements that only this process holds, because the shared store could not take them yet. */
  unsettled(): UnsettledCharge[];
  /**
   * Logs `tollgate ready` (event `started`), once: when the transport serves, which for stdio is
   * after the caller's credential is accepted, never before a refusal.
   */
  ready(fields?: Record<string, unknown>): void;
  close(): Promise<void>;
}

/** A call's charge not yet written to the shared ledger: its request id and each budget line's amount (in the budget's unit). */
export interface UnsettledCharge {
  requestId: string;
  lines: { budgetId: string; subject: string; amount: number }[];
}

/** The settlements a store queues during an outage (the Redis store does; the embedded one writes at once). */
function queuedSettlements(store: QuotaStore): UnsettledCharge[] {
  const queue = store as QuotaStore & { pendingSettlements?: () => UnsettledCharge[] };
  return typeof queue.pendingSettlements === 'function' ? queue.pendingSettlements() : [];
}

export interface BuildOptions {
  policy?: Policy;
  store?: QuotaStore;
  sink?: EventSink;
  now?: () => number;
}

/** Builds the gateway (no transport). Logs go to stderr: stdout is the stdio transport's. */
export async function buildRuntime(settings: Settings, opts: BuildOptions = {}): Promise<Runtime> {
  const logger = createLogger(settings.logLevel);
  const policy = opts.policy ?? loadPolicyFile(settings.policyPath);
  const store = opts.store ?? (await createStore(settings, opts.now, logger));
  // Every event goes to the event log, the metrics and, when configured, the SIEM; the SIEM is
  // configured from the policy at start-up (a reload does not move it).
  const metrics = createMetrics({ maxTeams: settings.metricsMaxTeams });
  const siemConfig = policy.config.metering.siem ?? settings.siem;
  const sinks = [opts.sink ?? pinoSink(settings.eventsFile), metrics.sink];
  if (siemConfig) {
    const siem = splunkHecSink({ ...siemConfig, egressAllow: policy.config.egress.allow, logger });
    metrics.trackSiem(siem.stats);
    sinks.push(siem);
  }
  // Alerts read the policy in force, so they follow a reload; they need a store that holds their marks.
  let current: () => Policy = () => policy;
  const alerts = isAlertLedger(store) ? new AlertEngine({ store, policy: () => current(), keyPrefix: settings.keyPrefix, now: opts.now, logger }) : undefined;
  if (alerts) {
    sinks.push(alerts);
    metrics.trackAlerts(() => alerts.stats());
  } else if (policy.config.alerts.budgets.length + policy.config.alerts.refusals.length + policy.config.alerts.overruns.length > 0) {
    logger.warn({ event: 'alerts_unavailable', store: store.kind }, 'the policy declares alerts but this quota store cannot hold alert marks; no alert will fire');
  }
  const sink = compositeSink(sinks, logger);
  const gateway = new Gateway({
    policy,
    store,
    logger,
    sink,
    keyPrefix: settings.keyPrefix,
    now: opts.now,
    devAnonymous: settings.devAnonymous,
    issuedKeys: settings.redisUrl ? await issuedKeys(settings, opts.now) : settings.dataDir && !settings.redisClusterNodes ? new FileApiKeys({ dir: settings.dataDir, now: opts.now }) : undefined,
  });
  current = () => gateway.policy;
  // Loaded before anything is served: a first call would otherwise load them midway, stalling every
  // call in flight for 0.1 to 0.5 s (docs/benchmarks.md, "Disconnect drill").
  await gateway.prepare();
  // Reservations a previous process left open are closed once the event log listens (src/quota/memory.ts).
  if (store instanceof MemoryQuotaStore && store.journaled) {
    const report = store.recover((id, r) => recoveryEvent(id, r, (opts.now ?? Date.now)(), 'stopped'));
    if (report.charged.length || report.released.length) {
      logger.warn({ event: 'journal_recovered', charged: report.charged.map((c) => c.id), released: report.released }, 'closed the reservations the previous process left open');
    }
  }
  let announced = false;
  return {
    gateway,
    logger,
    metrics,
    alerts,
    unsettled: () => queuedSettlements(store),
    ready(fields = {}) {
      if (announced) return;
      announced = true;
      const dataDir = store instanceof MemoryQuotaStore && store.journaled ? settings.dataDir : undefined;
      logger.info({ event: 'started', policy: policy.source, policyVersion: policy.version, store: store.kind, dataDir, ...fields }, 'tollgate ready');
    },
    async close() {
      // Calls still in the pipeline are cut (a shutdown waits for them first, up to its deadline);
      // every call's charge and event is written, and alerts evaluated and their deliveries ended,
      // while the store can still journal them.
      gateway.cutCalls();
      await gateway.settled();
      await alerts?.close();
      await gateway.close();
      await sink.close?.();
    },
  };
}

/** API keys issued with `tollgate keys`, kept in the shared store next to the ledger. */
async function issuedKeys(settings: Settings, now?: () => number) {
  const { StoredApiKeys } = await import('./identity/storedKeys.js');
  return new StoredApiKeys({ url: settings.redisUrl!, prefix: settings.keyPrefix, now, commandTimeoutMs: settings.storeTimeoutMs });
}

/**
 * The shared Redis ledger (a cluster's, or one node's) when configured, else the embedded one:
 * journaled in `settings.dataDir` (replayed here; recovery runs in buildRuntime), or in memory only.
 */
export async function createStore(settings: Settings, now?: () => number, logger?: Logger): Promise<QuotaStore> {
  if (settings.redisClusterNodes || settings.redisUrl) {
    const { RedisQuotaStore } = await import('./quota/redis.js');
    const target = { url: settings.redisUrl, clusterNodes: settings.redisClusterNodes };
    return new RedisQuotaStore({
      ...target,
      prefix: settings.keyPrefix,
      now,
      commandTimeoutMs: settings.storeTimeoutMs,
      logger,
      settledMarkerMs: settings.settledMarkerMs,
      spillDir: settings.dataDir === undefined ? undefined : join(settings.dataDir, 'redis-spill'),
      journal: { maxLen: settings.journalMaxLen, maxAgeMs: settings.journalMaxAgeMs, rollupTtlMs: settings.rollupTtlMs },
    });
  }
  if (!settings.dataDir) return new MemoryQuotaStore(now);
  const { FileJournal } = await import('./quota/fileJournal.js');
  let opened: Awaited<ReturnType<typeof FileJournal.open>>;
  try {
    opened = FileJournal.open({ dir: settings.dataDir, now, warn: (message, fields) => logger?.warn({ ...fields, event: 'journal' }, message) });
  } catch (err) {
    // A directory that cannot be made or read, held by another process, or an unreadable segment:
    // said in one line (the CLI prints a GatewayError without its stack), and nothing is served.
    throw new GatewayError('QUOTA_STORE_UNAVAILABLE', `The journal in ${settings.dataDir} cannot be opened: ${err instanceof Error ? err.message : String(err)}`, {}, { cause: err });
  }
  const { journal, replay } = opened;
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  return store;
}

/** Starts the HTTP transport, with the operator routes given (the web console); resolves once listening. */
export async function startHttp(runtime: Runtime, settings: Settings, operatorRoutes: RequestHandler[] = []) {
  // The CLI refuses this with a clear message first (src/cli/serve.ts); kept here for every other caller.
  if (settings.devAnonymous !== undefined && !isLoopbackHost(settings.http.host)) {
    throw new Error(`--dev-anonymous is allowed on a loopback address only, not on ${settings.http.host}`);
  }
  const http = createHttpApp(runtime.gateway, { ...settings.http, dataDir: settings.redisUrl || settings.redisClusterNodes ? undefined : settings.dataDir }, runtime.metrics, operatorRoutes);
  // The A2A SDK's server code, loaded before the first request rather than during it (a2aRouter).
  await http.prepare().catch((err: unknown) => runtime.logger.warn({ event: 'a2a_prepare_failed', err }, 'the A2A server code could not be loaded ahead of the first A2A request; that request will report why'));
  const { server, url } = await http.listen();
  runtime.ready({ transport: 'http', url });
  // Requests being served, so that a drain can wait for their answers.
  let open = 0;
  let draining = false;
  let drained: (() => void) | undefined;
  server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
    open += 1;
    // While draining, a request that arrives on a kept-alive connection is served, and its connection closed after.
    if (draining) res.setHeader('Connection', 'close');
    res.once('close', () => {
      open -= 1;
      if (open === 0) drained?.();
    });
  });
  return {
    url,
    server,
    sessions: http.sessions,
    /** Requests received and not yet answered (or abandoned by their client). */
    inFlight: () => open,
    /**
     * Stops accepting connections, waits until every request being served is answered, then ends
     * the MCP sessions and closes the remaining (idle) connections. Not bounded: see `Shutdown`.
     */
    async drain() {
      draining = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      if (open > 0) await new Promise<void>((r) => (drained = r));
      http.sessions.closeAll();
      server.closeAllConnections();
      await closed;
    },
    /** Closes at once: connections and the requests on them are cut. */
    async close() {
      http.sessions.closeAll();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** What a shutdown stops: how it drains its transport, and what is still in flight there. */
export interface ShutdownOptions {
  runtime: Runtime;
  /** How long draining and closing may take before the process is to exit anyway. */
  deadlineMs: number;
  /** Stops taking work and resolves once the work already taken is answered (HTTP or stdio). */
  drain: () => Promise<void>;
  /** Requests or calls taken by the transport and not yet answered. */
  inFlight: () => number;
}

/**
 * How long calls cut at a shutdown's deadline have to end CANCELLED and be recorded (their aborts
 * reach the provider, their releases the store) before the process exits anyway.
 */
export const CUT_GRACE_MS = 1000;

/**
 * A process's shutdown, bounded by a deadline (issue 16: a replica with Redis unreachable was still
 * alive 20 minutes after SIGTERM). `run` drains the transport (no new connections, the requests in
 * flight answered), waits for every call still in the pipeline (an A2A task running after its
 * answer, a stdio call whose client left) to be committed, then closes the runtime (pending ledger
 * writes, the store connections, the event sinks), and resolves with the exit code: 0 when all of
 * it finished in time and nothing is left unsettled, else 1. At the deadline the calls still in the
 * pipeline are cut: each ends CANCELLED, charged what it consumed, with its event, within
 * CUT_GRACE_MS more at most. Every settlement left unwritten gets an error line naming its request
 * id and amounts (`shutdown_unsettled`), and every call still open one naming its request id
 * (`shutdown_call_open`), for an operator or a later recovery to charge. `force` is for a second
 * signal: it logs the same and returns the code to exit with at once. Neither exits the process itself.
 */
export class Shutdown {
  private running: Promise<number> | undefined;
  private step = 'not started';

  constructor(private readonly opts: ShutdownOptions) {}

  /** True once `run` was called. */
  get started(): boolean {
    return this.running !== undefined;
  }

  /** Runs the shutdown once (later calls share it); resolves with the exit code. Never rejects. */
  run(reason: string): Promise<number> {
    this.running ??= this.perform(reason);
    return this.running;
  }

  /** A second signal: logs what is still open and returns 130 for SIGINT, else 143 (128 + the signal's number). */
  force(signal: NodeJS.Signals): number {
    this.opts.runtime.logger.error(
      { event: 'shutdown_forced', signal, step: this.step, ...this.status() },
      `second ${signal} during shutdown: exiting at once`,
    );
    this.reportUnsettled();
    return signal === 'SIGINT' ? 130 : 143;
  }

  private async perform(reason: string): Promise<number> {
    const { runtime, deadlineMs } = this.opts;
    const log = runtime.logger;
    const startedAt = Date.now();
    log.info(
      { event: 'shutdown_started', reason, deadlineMs, ...this.status() },
      `shutting down (${reason}): no new connections; calls in flight and ledger writes have ${deadlineMs} ms`,
    );
    const work = (async () => {
      this.step = 'waiting for the requests in flight';
      await this.opts.drain();
      this.step = 'waiting for the calls in the pipeline';
      await runtime.gateway.settled();
      this.step = 'closing the gateway (ledger writes, store connections, event sinks)';
      await runtime.close();
      this.step = 'done';
    })();
    let outcome = await this.finishedWithin(work, deadlineMs);
    if (outcome === 'deadline') {
      log.error(
        { event: 'shutdown_deadline', deadlineMs, step: this.step, ...this.status() },
        `shutdown did not finish within ${deadlineMs} ms (still ${this.step}); cutting the calls in flight and exiting with that work unfinished`,
      );
      // Cut, a call is answered CANCELLED and recorded at what it consumed, rather than left to a recovery.
      if (runtime.gateway.cutCalls() > 0 && (await this.finishedWithin(work, CUT_GRACE_MS)) === 'failed') outcome = 'failed';
    }
    const unsettled = this.reportUnsettled();
    const code = outcome === 'done' && unsettled === 0 ? 0 : 1;
    log.info({ event: 'shutdown_complete', code, unsettled, ms: Date.now() - startedAt }, `shut down, exit code ${code}`);
    return code;
  }

  /** Whether `work` finished within `ms`, failed (logged), or is still running. */
  private async finishedWithin(work: Promise<void>, ms: number): Promise<'done' | 'deadline' | 'failed'> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), ms)));
    try {
      return await Promise.race([work.then(() => 'done' as const), expired]);
    } catch (err) {
      this.opts.runtime.logger.error({ err, event: 'shutdown_failed', step: this.step }, `shutdown failed while ${this.step}`);
      return 'failed';
    } finally {
      clearTimeout(timer);
    }
  }

  private status() {
    const { gateway } = this.opts.runtime;
    return { inFlightRequests: this.opts.inFlight(), runningCalls: gateway.runningCalls, finishingCalls: gateway.finishingCalls };
  }

  /** One error line per settlement this process holds unwritten, and per call still in the pipeline; returns how many. */
  private reportUnsettled(): number {
    const { runtime } = this.opts;
    const open = runtime.gateway.runningIds();
    for (const requestId of open) {
      runtime.logger.error(
        { event: 'shutdown_call_open', requestId, store: runtime.gateway.store.kind },
        `request ${requestId} was still in the pipeline at exit: its reservation is left for recovery to close (charged at the reservation if it reached its provider)`,
      );
    }
    const unsettled = runtime.unsettled();
    for (const u of unsettled) {
      const amounts = u.lines.map((l) => `${l.budgetId}/${l.subject} ${l.amount}`).join(', ');
      runtime.logger.error(
        { event: 'shutdown_unsettled', requestId: u.requestId, lines: u.lines, store: runtime.gateway.store.kind },
        `request ${u.requestId} left unsettled at exit (its charge never reached the ${runtime.gateway.store.kind} ledger): ${amounts}`,
      );
    }
    return open.length + unsettled.length;
  }
}
