#!/usr/bin/env node
/**
 * The `tollgate` command: one entry, subcommands for serving and for operators.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { EnvError, parseEnv } from './config/env.js';
import { GatewayError } from './errors.js';
import { buildRuntime, settingsFrom, Shutdown, startHttp, VERSION, type Settings } from './main.js';
import { serveStdio, stdioPrincipal } from './mcp/stdio.js';
import { loadPolicyFile, PolicyError, type PolicyIssue } from './policy/load.js';
import { watchPolicy } from './policy/reload.js';

const HELP = `tollgate ${VERSION} — enforcement gateway for enterprise AI consumption

Usage:
  tollgate [serve] [options]      Serve MCP over streamable HTTP (default ${'http://127.0.0.1:8787/mcp'})
  tollgate stdio [options]        Serve MCP over stdio; the caller's key comes from TOLLGATE_API_KEY
  tollgate call [opts] <prompt>   Call a running gateway's complete tool (--key, --tier, --model, --max-tokens,
                                  --url, --json); \`call --budget\` and \`call --models\` show my_budget and list_models
  tollgate check <policy.yaml>    Validate a policy file and list every error with its line:column
  tollgate test-policy <t.yaml>.. Run policy tests (YAML cases: principal + usage + request -> decision)
  tollgate explain --as <principal JSON | API key | JWT> [--tier T | --model M] [--prompt P] [--max-tokens N]
                   [--usage budget=used,...] [--now ISO]
                                  Show the decision for one call, what decided it and what would change it
  tollgate usage show|top|adjust|credit  Shared-ledger usage per budget and subject, top consumers, credits
                                  (--budget, --subject, --limit, --amount, --json; needs --redis or REDIS_URL)
  tollgate usage export --from <ISO> --to <ISO> [--format csv|focus] [--granularity day|month]
                        [--user U] [--team T] [--cost-center C] [--json]
                                  Usage and cost per period, model and principal from decision events (FOCUS 1.2)
  tollgate usage report --by team|cost-center|user|model|tier --window day|week|month [--from ISO] [--to ISO]
                        [--format table|csv|json]
                                  Tokens in and out, cost, calls, refusals by code, per period
  tollgate usage refusals --from <ISO> --to <ISO> [--by user,team,rule,budget,code] [--format table|csv|json]
                                  Who was refused, by which rule or budget, with which code, how often
                                  (export, report, refusals read --data-dir <dir> (default: the embedded
                                  journal in TOLLGATE_DATA_DIR or ./tollgate-data), --redis <url> or --events <file>...)
  tollgate audit verify [--data-dir <dir> | --redis <url>] [--trimmed] [--json]
                                  Check the journal: hash chain, ledger replay against its snapshots, an event
                                  for every charge; exit 1 naming the first entry that fails
  tollgate keys issue|revoke|list   Issued API keys (--user, --id, --teams, --cost-center, --groups, --roles):
                                  in Redis with --redis or REDIS_URL, seen by every replica; else in the
                                  data directory (--data-dir, TOLLGATE_DATA_DIR; default ./tollgate-data)
  tollgate hash-key <api-key>     Print the sha256 to put under apiKeys[].sha256 in the policy
  tollgate --help | --version

Options (each also settable by the environment variable shown):
  --policy <file>        Policy file                      TOLLGATE_POLICY (default: policy/default.yaml)
  --host <addr>          HTTP bind address                TOLLGATE_HOST (default 127.0.0.1)
  --port <n>             HTTP port                        TOLLGATE_PORT (default 8787)
  --redis <url>          Shared quota store               REDIS_URL (default: the embedded store)
  --data-dir <dir|none>  Embedded store's journal         TOLLGATE_DATA_DIR (default for serve: ./tollgate-data;
                         (budgets survive a restart)      stdio keeps none unless set)
  --events <file>        Decision events (JSON lines)     TOLLGATE_EVENTS_FILE (default: stderr)
  --workers <n|auto>     Gateway processes on the port    TOLLGATE_WORKERS (default 1; more than 1 needs
                         (one per core with auto)         --redis, as every worker charges the same ledger)
  --no-watch             Do not reload the policy when its file changes or on SIGHUP
                                                          TOLLGATE_POLICY_WATCH=0
  --shutdown-timeout <ms>
                         On SIGTERM or SIGINT, how long   TOLLGATE_SHUTDOWN_TIMEOUT_MS (default 10000)
                         calls in flight and ledger writes may take before tollgate exits anyway (code 1);
                         a second SIGTERM or SIGINT exits at once (143, 130)
  Also: TOLLGATE_ALLOWED_HOSTS, TOLLGATE_ALLOWED_ORIGINS, TOLLGATE_MAX_BODY_BYTES,
        TOLLGATE_MAX_SESSIONS, TOLLGATE_MAX_SESSIONS_PER_CALLER, TOLLGATE_SESSION_IDLE_SECONDS,
        TOLLGATE_SESSION_SECRET (shared by replicas so that any of them serves any MCP session;
        32+ characters), REDIS_CLUSTER_NODES, TOLLGATE_KEY_PREFIX, TOLLGATE_STORE_TIMEOUT_MS,
        TOLLGATE_LOG_LEVEL, TOLLGATE_METRICS_TOKEN (bearer token for GET /metrics), TOLLGATE_SIEM_URL and
        TOLLGATE_SIEM_TOKEN (Splunk HEC collector for decision events when the policy has no metering.siem),
        TOLLGATE_TOKEN (stdio: a JWT instead of TOLLGATE_API_KEY).
        Every variable, its type and default: docs/environment.md. A bad value stops tollgate at start.
`;

/** One line per issue, `file:line:col: path: message`, the form editors and CI annotate. */
function formatIssues(file: string, issues: PolicyIssue[]): string {
  const lines = issues.map((i) => `${file}${i.line ? `:${i.line}:${i.column}` : ''}: ${i.path ? `${i.path}: ` : ''}${i.message}`);
  return `${lines.join('\n')}\n${file}: ${issues.length} error${issues.length === 1 ? '' : 's'}\n`;
}

/** --workers, else TOLLGATE_WORKERS (parsed with the environment): a count, or `auto` for one per core. */
function workerCount(flag: string | undefined, fromEnv: number | 'auto'): number {
  const raw = flag ?? fromEnv;
  if (raw === 'auto') return availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) fail(`invalid --workers ${raw}: give a whole number from 1 to 256, or auto`);
  return n;
}

function fail(message: string, code = 2): never {
  process.stderr.write(`tollgate: ${message}\n`);
  process.exit(code);
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

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'keys') {
    const { runKeysCommand } = await import('./admin/keys.js');
    return void process.stdout.write(await runKeysCommand(argv.slice(1), process.env));
  }
  if (argv[0] === 'audit') {
    const { runAuditCommand } = await import('./admin/audit.js');
    const { out, code } = await runAuditCommand(argv.slice(1), process.env);
    process.stdout.write(out);
    process.exitCode = code;
    return;
  }
  if (argv[0] === 'usage') {
    // Operator commands parse their own options (see src/admin/cli.ts).
    const { runUsageCommand } = await import('./admin/cli.js');
    return void process.stdout.write(await runUsageCommand(argv.slice(1), process.env));
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      stdio: { type: 'boolean' },
      policy: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      redis: { type: 'string' },
      events: { type: 'string' },
      workers: { type: 'string' },
      key: { type: 'string' },
      url: { type: 'string' },
      tier: { type: 'string' },
      model: { type: 'string' },
      'max-tokens': { type: 'string' },
      json: { type: 'boolean' },
      budget: { type: 'boolean' },
      models: { type: 'boolean' },
      'no-watch': { type: 'boolean' },
      'shutdown-timeout': { type: 'string' },
      'data-dir': { type: 'string' },
      as: { type: 'string' },
      prompt: { type: 'string' },
      usage: { type: 'string' },
      now: { type: 'string' },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  if (values.version) return void process.stdout.write(`${VERSION}\n`);
  const [command = values.stdio ? 'stdio' : 'serve', ...rest] = positionals;

  const env = parseEnv(process.env);
  const settings: Settings = settingsFrom(env);
  if (values.policy) settings.policyPath = resolve(values.policy);
  if (values.host) settings.http.host = values.host;
  if (values.port) settings.http.port = Number(values.port);
  if (values.redis) settings.redisUrl = values.redis;
  if (values.events) settings.eventsFile = values.events;
  if (values['data-dir']) settings.dataDir = values['data-dir'] === 'none' ? undefined : resolve(values['data-dir']);
  // `serve` without Redis keeps its ledger in a journal under the working directory unless told otherwise.
  const dataDirDefault = () => {
    if (settings.redisUrl || settings.redisClusterNodes || values['data-dir'] || env.TOLLGATE_DATA_DIR !== undefined) return;
    settings.dataDir = resolve('tollgate-data');
  };
  const watch = !values['no-watch'] && env.TOLLGATE_POLICY_WATCH;
  if (values['shutdown-timeout'] !== undefined) {
    const ms = values['shutdown-timeout'];
    if (!/^\d+$/.test(ms) || !Number.isSafeInteger(Number(ms))) fail(`invalid --shutdown-timeout ${ms}: give a whole number of milliseconds, 0 or more`);
    settings.shutdownTimeoutMs = Number(ms);
  }
  // The environment's values were checked by parseEnv; a --port flag is checked here.
  if (!Number.isInteger(settings.http.port) || settings.http.port < 0 || settings.http.port > 65535) fail(`invalid port ${settings.http.port}`);

  switch (command) {
    case 'serve': {
      const workers = workerCount(values.workers, env.TOLLGATE_WORKERS);
      const { isWorker, onPrimaryShutdown, runPrimary, workerMetrics } = await import('./cluster.js');
      if (workers > 1 && !isWorker()) {
        if (!settings.redisUrl && !settings.redisClusterNodes) {
          fail(`--workers ${workers} needs the shared Redis store (--redis or REDIS_URL): with the embedded store each worker would keep budgets of its own`);
        }
        return runPrimary({
          workers,
          sessionSecret: settings.http.sessionSecret,
          log: (line) => process.stderr.write(`${line}\n`),
          shutdownTimeoutMs: settings.shutdownTimeoutMs,
          onReady: (url) =>
            process.stderr.write(`tollgate ${VERSION} serving MCP at ${url}/mcp (policy ${settings.policyPath}, store redis, ${workers} workers)\n`),
        });
      }
      dataDirDefault();
      const runtime = await buildRuntime(settings);
      if (isWorker()) runtime.metrics.text = workerMetrics(runtime.metrics.registry);
      const reloader = watch ? watchPolicy({ path: settings.policyPath, target: runtime.gateway, logger: runtime.logger }) : undefined;
      const http = await startHttp(runtime, settings);
      if (!isWorker()) process.stderr.write(`tollgate ${VERSION} serving MCP at ${http.url}/mcp (policy ${settings.policyPath}, store ${runtime.gateway.store.kind})\n`);
      const drain = async () => {
        reloader?.close();
        await http.drain();
      };
      exitOnSignals(new Shutdown({ runtime, deadlineMs: settings.shutdownTimeoutMs, drain, inFlight: http.inFlight }), isWorker() ? onPrimaryShutdown : undefined);
      return;
    }
    case 'stdio': {
      const runtime = await buildRuntime(settings);
      let principal;
      try {
        principal = await stdioPrincipal(runtime.gateway, process.env);
      } catch (err) {
        await runtime.close();
        fail(err instanceof GatewayError ? `${err.code}: ${err.message}` : String(err), 3);
      }
      const reloader = watch ? watchPolicy({ path: settings.policyPath, target: runtime.gateway, logger: runtime.logger }) : undefined;
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
    // falls through (unreachable: process.exit above)
    case 'check': {
      const file = rest[0] ?? settings.policyPath;
      let policy;
      try {
        policy = loadPolicyFile(resolve(file));
      } catch (err) {
        if (!(err instanceof PolicyError)) throw err;
        process.stderr.write(formatIssues(file, err.issues));
        process.exit(1);
      }
      process.stdout.write(
        `${file}: valid (version ${policy.version}; ${policy.tiers.length} tiers, ${policy.models.size} models, ${policy.budgets.length} budgets, ${policy.rules.length} rules, ${policy.apiKeys.size} API keys)\n`,
      );
      return;
    }
    case 'call': {
      const apiKey = values.key ?? env.TOLLGATE_API_KEY;
      if (!apiKey) fail('call needs an API key: --key <key> or TOLLGATE_API_KEY');
      const tool = values.budget ? 'my_budget' : values.models ? 'list_models' : 'complete';
      const prompt = rest.join(' ');
      if (tool === 'complete' && !prompt) fail('usage: tollgate call [--key K] [--tier T | --model M] [--max-tokens N] <prompt>');
      const maxTokens = values['max-tokens'] ? Number(values['max-tokens']) : undefined;
      const url = values.url ?? `http://${settings.http.host}:${settings.http.port}/mcp`;
      const { callGateway } = await import('./client.js');
      const { out, code } = await callGateway({ url, apiKey, tool, prompt, tier: values.tier, model: values.model, maxTokens, json: values.json ?? false });
      (code === 0 ? process.stdout : process.stderr).write(`${out}\n`);
      process.exit(code);
    }
    // falls through (unreachable: process.exit above)
    case 'test-policy': {
      if (rest.length === 0) fail('usage: tollgate test-policy <tests.yaml>...');
      const { runPolicyTestFile, formatResults } = await import('./policy/policyTest.js');
      const { text, failed } = formatResults(rest.map(runPolicyTestFile));
      process.stdout.write(text);
      process.exit(failed > 0 ? 1 : 0);
    }
    // falls through (unreachable: process.exit above)
    case 'explain': {
      if (!values.as) fail('usage: tollgate explain [--policy p.yaml] --as <principal JSON | API key | JWT> [--tier T | --model M] [--prompt P] [--usage id=used,...] [--now ISO]');
      const { explainCall, explainRequest, formatExplanation, parseUsageArg, principalFromArg } = await import('./policy/explain.js');
      const now = values.now ? Date.parse(values.now) : Date.now();
      const maxTokens = values['max-tokens'] ? Number(values['max-tokens']) : undefined;
      if (Number.isNaN(now)) fail(`--now ${values.now} is not an ISO 8601 time`);
      if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens > 0)) fail('--max-tokens must be a positive integer');
      const policy = loadPolicyFile(settings.policyPath);
      const report = explainCall({
        policy,
        principal: principalFromArg(policy, values.as),
        request: explainRequest({ tier: values.tier, model: values.model, prompt: values.prompt, maxTokens }),
        usage: values.usage ? parseUsageArg(values.usage) : {},
        now,
      });
      process.stdout.write(formatExplanation(report));
      return;
    }
    case 'hash-key': {
      const key = rest[0];
      if (!key) fail('usage: tollgate hash-key <api-key>');
      process.stdout.write(`${createHash('sha256').update(key, 'utf8').digest('hex')}\n`);
      return;
    }
    default:
      fail(`unknown command "${command}"; see tollgate --help`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof EnvError) fail(err.message);
  if (err instanceof GatewayError) fail(`${err.code}: ${err.message}`, 1);
  if (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS')) fail(`${err.message}; see tollgate --help`);
  fail(err instanceof Error ? (err.stack ?? err.message) : String(err), 1);
});
