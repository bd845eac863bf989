/**
 * `tollgate serve` and `tollgate stdio`: settings from flags over the environment (the
 * configuration file already applied beneath it), then the runtime, the transport, and a bounded
 * shutdown on signals.
 */
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parseEnv, type Env } from '../config/env.js';
import { GatewayError } from '../errors.js';
import { isLoopbackHost } from '../http/loopback.js';
import { anonymousPrincipal } from '../identity/devAnonymous.js';
import { buildRuntime, settingsFrom, Shutdown, startHttp, VERSION, type Runtime, type Settings } from '../main.js';
import { serveStdio, stdioPrincipal } from '../mcp/stdio.js';
import type { Policy } from '../policy/load.js';
import { watchPolicy } from '../policy/reload.js';
import { CliError, EXIT } from './exit.js';
import { loadServedPolicy, parseServedPolicy } from './servedPolicy.js';

/** The flags `serve` and `stdio` share with the environment variables they override. */
export interface ServeFlags {
  policy?: string;
  host?: string;
  port?: string;
  redis?: string;
  dataDir?: string;
  events?: string;
  workers?: string;
  /** false with --no-watch. */
  watch?: boolean;
  shutdownTimeout?: string;
  allowDemoKeysOnNetwork?: boolean;
  /** --allow-other-budgets: serve from a store holding live usage of budgets the policy does not declare. */
  allowOtherBudgets?: boolean;
  /** --dev-anonymous USER: requests without a credential are served as this principal of the policy. */
  devAnonymous?: string;
}

/** The keys the README publishes for the demo policy: anyone may know them. */
export const DEMO_KEYS = ['tg-demo-alice', 'tg-demo-bob', 'tg-demo-ops'] as const;

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** The published demo keys a policy accepts. */
export function demoKeysIn(policy: Policy): string[] {
  return DEMO_KEYS.filter((k) => policy.apiKeys.has(sha256(k)));
}

export { isLoopbackHost };

/**
 * Refuses to serve published demo keys on an address other machines reach, unless
 * --allow-demo-keys-on-network says so.
 */
export function refuseDemoKeysOnNetwork(policy: Policy, host: string, allowed: boolean | undefined): void {
  const keys = demoKeysIn(policy);
  if (keys.length === 0 || isLoopbackHost(host) || allowed) return;
  throw new CliError(
    `refusing to serve on ${host}: the policy ${policy.source} accepts the demo API keys published in the README (${keys.join(', ')}), ` +
      'so anyone who can reach this address could spend through it. Serve on 127.0.0.1, remove the demo apiKeys from the policy, ' +
      'or pass --allow-demo-keys-on-network if this network is yours alone.',
    EXIT.usage,
  );
}

/**
 * --dev-anonymous: only on a loopback address, and only naming a principal the policy declares (an
 * apiKeys id or user); anything else refuses to start. Returns the warning to print once serving.
 */
export function checkDevAnonymous(policy: Policy, host: string, name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  if (!isLoopbackHost(host)) {
    throw new CliError(
      `refusing to serve on ${host} with --dev-anonymous ${name} (TOLLGATE_DEV_ANONYMOUS): anyone who can reach this address could spend as ${name} without a credential. ` +
        '--dev-anonymous is allowed on a loopback address only (127.0.0.1, localhost, ::1).',
      EXIT.usage,
    );
  }
  const principal = anonymousPrincipal(policy.apiKeys.values(), name);
  if (!principal) {
    throw new CliError(`--dev-anonymous ${name}: the policy ${policy.source} has no enabled apiKeys entry with that id or user to serve requests without a credential as.`, EXIT.usage);
  }
  const bar = '!'.repeat(78);
  return [
    bar,
    `tollgate: WARNING: --dev-anonymous ${name}: requests WITHOUT a credential are served and charged as user ${principal.user}`,
    `tollgate: WARNING: (teams ${principal.teams.join(', ') || 'none'}). For development on this machine only; never in production.`,
    bar,
  ].join('\n');
}

/**
 * A gateway started with another deployment's policy would charge budgets nobody reads and miss the
 * usage already there: the store must hold this policy's data (src/admin/mismatch.ts), else
 * StoreMismatchError (exit 4). `store` is the one the gateway opened; without it (the primary of
 * --workers) the shared Redis store is opened for the check alone.
 */
async function requireStoreOfPolicy(policy: Policy, settings: Settings, allow: boolean | undefined, store?: object): Promise<void> {
  const { budgetsInStore, listsUsage, requireSamePolicy } = await import('../admin/mismatch.js');
  const redis = settings.redisUrl ?? settings.redisClusterNodes?.join(',');
  if (!redis) {
    if (store && listsUsage(store)) requireSamePolicy(policy, await budgetsInStore(store, settings.keyPrefix), `The journal in ${settings.dataDir}`, allow);
    return;
  }
  const { shownUrl } = await import('../admin/redisJournal.js');
  const { RedisQuotaStore } = await import('../quota/redis.js');
  const quiet = { info() {}, warn() {}, error() {} };
  const opened = store ? undefined : new RedisQuotaStore({ url: settings.redisUrl, clusterNodes: settings.redisClusterNodes, prefix: settings.keyPrefix, commandTimeoutMs: settings.storeTimeoutMs, recover: false, logger: quiet });
  const own = store ?? opened!;
  try {
    if (listsUsage(own)) requireSamePolicy(policy, await budgetsInStore(own, settings.keyPrefix), `The store ${shownUrl(redis)} (prefix ${settings.keyPrefix})`, allow);
  } finally {
    await opened?.close();
  }
}

/**
 * Refuses to serve (exit 2, the runtime closed) a policy with an `apiKeys` id that a key issued at
 * run time holds (Gateway.vet): the two keys would share the id in events and rate-limit lines.
 * When the issued keys cannot be listed (Redis down), the start goes on, saying the ids went
 * unchecked: a gateway that can serve its policy's keys through an outage is not kept down for it.
 */
async function refuseIssuedKeyIds(runtime: Runtime, policy: Policy): Promise<void> {
  let issues;
  try {
    issues = await runtime.gateway.vet(policy);
  } catch (err) {
    runtime.logger.warn({ event: 'policy_key_ids_unchecked', err: String(err) }, "the keys issued with tollgate keys could not be listed: the policy's apiKeys ids are not checked against them at this start");
    return;
  }
  if (issues.length === 0) return;
  await runtime.close();
  throw new CliError(`refusing to serve the policy ${policy.source}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, EXIT.usage);
}

/** Settings from the environment with the flags applied over them. */
export function settingsWith(flags: ServeFlags, env: Env): Settings {
  const settings = settingsFrom(env);
  if (flags.policy) settings.policyPath = resolve(flags.policy);
  if (flags.host) settings.http.host = flags.host;
  if (flags.port !== undefined) {
    const port = Number(flags.port);
    if (!/^\d+$/.test(flags.port) || port > 65535) throw new CliError(`invalid --port ${flags.port}: give a whole number from 0 to 65535`);
    settings.http.port = port;
  }
  if (flags.devAnonymous !== undefined) settings.devAnonymous = flags.devAnonymous;
  if (flags.redis) settings.redisUrl = flags.redis;
  if (flags.events) settings.eventsFile = flags.events;
  if (flags.dataDir) settings.dataDir = flags.dataDir === 'none' ? undefined : resolve(flags.dataDir);
  if (flags.shutdownTimeout !== undefined) {
    const ms = flags.shutdownTimeout;
    if (!/^\d+$/.test(ms) || !Number.isSafeInteger(Number(ms))) throw new CliError(`invalid --shutdown-timeout ${ms}: give a whole number of milliseconds, 0 or more`);
    settings.shutdownTimeoutMs = Number(ms);
  }
  return settings;
}

/**
 * The decision events file must take writes before the gateway serves: the asynchronous writer
 * opens it later, and its failure then ended a gateway already serving with a stack trace.
 */
function requireWritableEvents(file: string | undefined): void {
  if (file === undefined) return;
  const open = () => closeSync(openSync(file, 'a'));
  try {
    try {
      open();
    } catch (err) {
      // As the writer does, a missing directory is made.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(dirname(file), { recursive: true });
      open();
    }
  } catch (err) {
    throw new CliError(`--events ${file} (TOLLGATE_EVENTS_FILE): cannot write decision events there (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (EADDRINUSE); choose another --port (TOLLGATE_PORT) or --host (TOLLGATE_HOST), or stop what holds it',
  EACCES: 'permission denied (EACCES): a port under 1024 needs privileges; choose another --port (TOLLGATE_PORT)',
  EADDRNOTAVAIL: 'no interface of this machine has that address (EADDRNOTAVAIL); choose another --host (TOLLGATE_HOST)',
  ENOTFOUND: 'the host name does not resolve (ENOTFOUND); choose another --host (TOLLGATE_HOST)',
  EAI_AGAIN: 'the host name could not be resolved now (EAI_AGAIN); check DNS or give an address as --host (TOLLGATE_HOST)',
};

/** A listen failure caused by the host or port given, as the line an operator can act on; undefined for any other error. */
function listenFailure(err: unknown, settings: Settings): CliError | undefined {
  const why = LISTEN_FAILURES[(err as NodeJS.ErrnoException)?.code ?? ''];
  return why === undefined ? undefined : new CliError(`cannot listen on ${settings.http.host}:${settings.http.port}: ${why}`);
}

/** --workers, else TOLLGATE_WORKERS (parsed with the environment): a count, or `auto` for one per core. */
function workerCount(flag: string | undefined, fromEnv: number | 'auto'): number {
  const raw = flag ?? fromEnv;
  if (raw === 'auto') return availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new CliError(`invalid --workers ${raw}: give a whole number from 1 to 256, or auto`);
  return n;
}

/**
 * The first SIGTERM or SIGINT runs `shutdown` (bounded by its deadline) and exits with its code; a
 * second one exits at once, with 143 or 130. The handlers stay installed: a signal left to its
 * default action is ignored by a process running as PID 1 (in a container), which is how a second
 * SIGTERM once failed to end a replica (issue 16). A cluster worker is asked by its primary instead.
 */
function exitOnSignals(shutdown: Shutdown, onPrimaryShutdown?: (handler: (force?: NodeJS.Signals) => void) => void): void {
  const begin = (reason: string) => void shutdown.run(reason).then((code) => process.exit(code));
  let signals = 0;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      signals += 1;
      if (signals > 1) process.exit(shutdown.force(signal));
      else begin(signal);
    });
  }
  onPrimaryShutdown?.((force) => (force ? process.exit(shutdown.force(force)) : begin('asked by the cluster primary')));
}

/** `tollgate serve`: MCP over streamable HTTP (and the compatible APIs), until a signal. */
export async function serve(flags: ServeFlags, processEnv: NodeJS.ProcessEnv): Promise<void> {
  const env = parseEnv(processEnv);
  const settings = settingsWith(flags, env);
  requireWritableEvents(settings.eventsFile);
  const watch = flags.watch !== false && env.TOLLGATE_POLICY_WATCH;
  const workers = workerCount(flags.workers, env.TOLLGATE_WORKERS);
  const { isWorker, onPrimaryShutdown, runPrimary, workerMetrics } = await import('../cluster.js');
  if (workers > 1 && !isWorker()) {
    if (!settings.redisUrl && !settings.redisClusterNodes) {
      throw new CliError(`--workers ${workers} needs the shared Redis store (--redis or REDIS_URL): with the embedded store each worker would keep budgets of its own`);
    }
    const primaryPolicy = loadServedPolicy(settings.policyPath);
    refuseDemoKeysOnNetwork(primaryPolicy, settings.http.host, flags.allowDemoKeysOnNetwork);
    const warning = checkDevAnonymous(primaryPolicy, settings.http.host, settings.devAnonymous);
    await requireStoreOfPolicy(primaryPolicy, settings, flags.allowOtherBudgets);
    if (warning) process.stderr.write(`${warning}\n`);
    return runPrimary({
      workers,
      sessionSecret: settings.http.sessionSecret,
      log: (line) => process.stderr.write(`${line}\n`),
      shutdownTimeoutMs: settings.shutdownTimeoutMs,
      onReady: (url) => process.stderr.write(`tollgate ${VERSION} serving MCP at ${url}/mcp (policy ${settings.policyPath}, store redis, ${workers} workers)\n`),
    });
  }
  // `serve` keeps its ledger in a journal under the working directory unless told otherwise; with
  // Redis, only the writes an outage leaves queued (created when the first one is).
  if (!flags.dataDir && env.TOLLGATE_DATA_DIR === undefined) settings.dataDir = resolve('tollgate-data');
  const policy = loadServedPolicy(settings.policyPath);
  refuseDemoKeysOnNetwork(policy, settings.http.host, flags.allowDemoKeysOnNetwork);
  const anonymousWarning = checkDevAnonymous(policy, settings.http.host, settings.devAnonymous);
  const runtime = await buildRuntime(settings, { policy });
  if (!isWorker() && (settings.dataDir !== undefined || settings.redisUrl || settings.redisClusterNodes)) {
    await requireStoreOfPolicy(policy, settings, flags.allowOtherBudgets, runtime.gateway.store).catch(async (err: unknown) => {
      await runtime.close();
      throw err;
    });
  }
  await refuseIssuedKeyIds(runtime, policy);
  if (isWorker()) runtime.metrics.text = workerMetrics(runtime.metrics.registry);
  const reloader = watch ? watchPolicy({ path: settings.policyPath, target: runtime.gateway, logger: runtime.logger, parse: parseServedPolicy }) : undefined;
  const { consoleRoutes } = await import('../console/index.js');
  const webConsole = consoleRoutes({
    gateway: runtime.gateway,
    host: settings.http.host,
    keyPrefix: settings.keyPrefix,
    dataDir: settings.redisUrl || settings.redisClusterNodes ? undefined : settings.dataDir,
    sessionSecret: settings.http.sessionSecret,
    reloads: reloader?.history,
  });
  const http = await startHttp(runtime, settings, [webConsole]).catch(async (err: unknown) => {
    const failure = listenFailure(err, settings);
    if (!failure) throw err;
    reloader?.close();
    await runtime.close();
    throw failure;
  });
  if (!isWorker()) process.stderr.write(`tollgate ${VERSION} serving MCP at ${http.url}/mcp (policy ${settings.policyPath}, store ${runtime.gateway.store.kind})\n`);
  if (anonymousWarning && !isWorker()) process.stderr.write(`${anonymousWarning}\n`);
  if (!isWorker() && demoKeysIn(policy).length > 0 && !isLoopbackHost(settings.http.host)) {
    process.stderr.write(`tollgate: WARNING: the demo API keys are accepted on ${settings.http.host} (--allow-demo-keys-on-network)\n`);
  }
  const drain = async () => {
    reloader?.close();
    await http.drain();
  };
  exitOnSignals(new Shutdown({ runtime, deadlineMs: settings.shutdownTimeoutMs, drain, inFlight: http.inFlight }), isWorker() ? onPrimaryShutdown : undefined);
}

/** `tollgate stdio`: MCP over stdin/stdout for one caller, until stdin closes or a signal. */
export async function stdio(flags: ServeFlags, processEnv: NodeJS.ProcessEnv): Promise<never> {
  const env = parseEnv(processEnv);
  const settings = settingsWith(flags, env);
  // stdio has one caller, whose credential comes from the environment: never anonymous.
  settings.devAnonymous = undefined;
  requireWritableEvents(settings.eventsFile);
  const watch = flags.watch !== false && env.TOLLGATE_POLICY_WATCH;
  const policy = loadServedPolicy(settings.policyPath);
  const runtime = await buildRuntime(settings, { policy });
  await refuseIssuedKeyIds(runtime, policy);
  let principal;
  try {
    principal = await stdioPrincipal(runtime.gateway, processEnv);
  } catch (err) {
    await runtime.close();
    throw new CliError(err instanceof GatewayError ? `${err.code}: ${err.message}` : String(err), EXIT.credential);
  }
  const reloader = watch ? watchPolicy({ path: settings.policyPath, target: runtime.gateway, logger: runtime.logger, parse: parseServedPolicy }) : undefined;
  const serving = await serveStdio(runtime.gateway, principal, VERSION);
  runtime.ready({ transport: 'stdio', user: principal.principal.user });
  const drain = async () => {
    reloader?.close();
    await serving.stop();
  };
  const shutdown = new Shutdown({ runtime, deadlineMs: settings.shutdownTimeoutMs, drain, inFlight: serving.inFlight });
  exitOnSignals(shutdown);
  // The client closed stdin: the same bounded shutdown (the one a signal started, if any).
  await serving.closed;
  process.exit(await shutdown.run('stdin closed'));
}
