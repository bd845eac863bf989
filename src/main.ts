/**
 * Composition root: reads settings, loads the policy, builds the store, the gateway and the
 * transports. The CLI and the tests both start tollgate through here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { parseEnv, type Env } from './config/env.js';
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
import type { DecisionRecord, QuotaStore } from './quota/store.js';
import { recoveryEvent } from './pipeline/decisionEvent.js';

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
  /** The embedded store's journal directory; none keeps nothing on disk. Ignored with Redis. */
  dataDir?: string;
  /** A Redis command without a reply after this long counts as a store outage. */
  storeTimeoutMs: number;
  eventsFile?: string;
  /** A Splunk HEC collector for decision events when the policy names none (TOLLGATE_SIEM_URL, TOLLGATE_SIEM_TOKEN). */
  siem?: { url: string; token: string };
  logLevel: string;
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
    eventsFile: env.TOLLGATE_EVENTS_FILE,
    siem: env.TOLLGATE_SIEM_URL ? { url: env.TOLLGATE_SIEM_URL, token: env.TOLLGATE_SIEM_TOKEN ?? '' } : undefined,
    logLevel: env.TOLLGATE_LOG_LEVEL,
  };
}

export interface Runtime {
  gateway: Gateway;
  logger: Logger;
  /** Prometheus metrics fed by the decision events; served at /metrics. */
  metrics: GatewayMetrics;
  close(): Promise<void>;
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
  const metrics = createMetrics();
  const siemConfig = policy.config.metering.siem ?? settings.siem;
  const sinks = [opts.sink ?? pinoSink(settings.eventsFile), metrics.sink];
  if (siemConfig) {
    const siem = splunkHecSink({ ...siemConfig, egressAllow: policy.config.egress.allow, logger });
    metrics.trackSiem(siem.stats);
    sinks.push(siem);
  }
  const sink = compositeSink(sinks, logger);
  const gateway = new Gateway({
    policy,
    store,
    logger,
    sink,
    keyPrefix: settings.keyPrefix,
    now: opts.now,
    issuedKeys: settings.redisUrl ? await issuedKeys(settings, opts.now) : settings.dataDir && !settings.redisClusterNodes ? new FileApiKeys({ dir: settings.dataDir, now: opts.now }) : undefined,
  });
  // Reservations a previous process left open are closed once the event log listens (src/quota/memory.ts).
  if (store instanceof MemoryQuotaStore && store.journaled) {
    const report = store.recover((id, r) => recoveryEvent(id, r, (opts.now ?? Date.now)()) as unknown as DecisionRecord);
    if (report.charged.length || report.released.length) {
      logger.warn({ event: 'journal_recovered', charged: report.charged.map((c) => c.id), released: report.released }, 'closed the reservations the previous process left open');
    }
  }
  logger.info({ event: 'started', policy: policy.source, policyVersion: policy.version, store: store.kind, dataDir: store instanceof MemoryQuotaStore && store.journaled ? settings.dataDir : undefined }, 'tollgate ready');
  return {
    gateway,
    logger,
    metrics,
    async close() {
      await gateway.close();
      await sink.close?.();
    },
  };
}

/** API keys issued with `tollgate keys`, kept in the shared store next to the ledger. */
async function issuedKeys(settings: Settings, now?: () => number) {
  const { StoredApiKeys } = await import('./identity/storedKeys.js');
  return new StoredApiKeys({ url: settings.redisUrl!, prefix: settings.keyPrefix, now });
}

/**
 * The shared Redis ledger (a cluster's, or one node's) when configured, else the embedded one:
 * journaled in `settings.dataDir` (replayed here; recovery runs in buildRuntime), or in memory only.
 */
export async function createStore(settings: Settings, now?: () => number, logger?: Logger): Promise<QuotaStore> {
  if (settings.redisClusterNodes || settings.redisUrl) {
    const { RedisQuotaStore } = await import('./quota/redis.js');
    const target = { url: settings.redisUrl, clusterNodes: settings.redisClusterNodes };
    return new RedisQuotaStore({ ...target, prefix: settings.keyPrefix, now, commandTimeoutMs: settings.storeTimeoutMs, logger });
  }
  if (!settings.dataDir) return new MemoryQuotaStore(now);
  const { FileJournal } = await import('./quota/fileJournal.js');
  const { journal, replay } = FileJournal.open({ dir: settings.dataDir, now, warn: (message, fields) => logger?.warn({ ...fields, event: 'journal' }, message) });
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  return store;
}

/** Starts the HTTP transport; resolves once listening. */
export async function startHttp(runtime: Runtime, settings: Settings) {
  const http = createHttpApp(runtime.gateway, { ...settings.http, dataDir: settings.redisUrl || settings.redisClusterNodes ? undefined : settings.dataDir }, runtime.metrics);
  const { server, url } = await http.listen();
  return {
    url,
    server,
    sessions: http.sessions,
    async close() {
      http.sessions.closeAll();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
