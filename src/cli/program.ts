/**
 * The `tollgate` command line, declared with commander: every command and subcommand with its
 * options, its help (`tollgate <command> [<sub>] --help`) and "did you mean" for a mistyped
 * command or option. Actions load their implementation on demand, so `--help` stays fast.
 *
 * Settings resolve the same way for every command: a flag, else the environment variable, else
 * the configuration file (`--config`, TOLLGATE_CONFIG, ./tollgate.yaml), else the default.
 */
import { Command, Option } from 'commander';
import { shown } from '../config/env.js';
import { url } from '../config/envValues.js';
import { withConfigFile } from '../config/file.js';
import { GatewayError } from '../errors.js';
import { VERSION } from '../main.js';
import { CliError, EXIT } from './exit.js';

/** What an action leaves for the entry point: text for stdout and stderr, and the exit code. */
export interface Result {
  out?: string;
  err?: string;
  code: number;
}

/** Where actions report; the entry point prints it (tests read it). */
export interface Reporter {
  result(r: Result): void;
}

/** `dataDir` → `data-dir`: the admin commands read their options by their flag names. */
export function flagNames(opts: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(opts).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v]));
}

/** The environment a command runs with: the process environment over the configuration file. */
export function commandEnv(cmd: Command, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return withConfigFile(env, (cmd.optsWithGlobals() as { config?: string }).config).env;
}

/**
 * `tollgate` alone, or with options only, serves (`tollgate serve`); `--stdio` among them serves
 * on stdio instead (the older spelling of `tollgate stdio`).
 */
export function withDefaultCommand(argv: string[]): string[] {
  // The global --config may come before a command (`tollgate --config prod.yaml check`).
  let at = 0;
  while (argv[at] === '--config' || argv[at]?.startsWith('--config=')) at += argv[at] === '--config' ? 2 : 1;
  const first = argv[at];
  if (first !== undefined && !first.startsWith('-')) return argv;
  if (argv.some((a) => ['-h', '--help', '-v', '--version'].includes(a))) return argv;
  if (argv.includes('--stdio')) return ['stdio', ...argv.filter((a) => a !== '--stdio')];
  return ['serve', ...argv];
}

const POLICY = ['--policy <file>', 'policy file (TOLLGATE_POLICY; default: policy/default.yaml)'] as const;
const redisUrl = url(['redis:', 'rediss:']);
/** --redis as REDIS_URL takes it; anything else would reach the Redis client and end in its stack trace. */
function redisFlag(value: string): string {
  if (!redisUrl.safeParse(value).success) throw new CliError(`--redis ${shown(value, undefined)}: expected a redis:// or rediss:// URL, e.g. redis://localhost:6379`);
  return value;
}
const REDIS = ['--redis <url>', 'the shared Redis store (REDIS_URL)', redisFlag] as const;
const DATA_DIR = ['--data-dir <dir>', 'the embedded store\'s journal directory, or none (TOLLGATE_DATA_DIR; default ./tollgate-data)'] as const;
const JSON_OUT = ['--json', 'print JSON'] as const;
const OTHER_BUDGETS = ['--allow-other-budgets', 'read a store holding live usage of budgets the policy does not declare (exit 4 otherwise)'] as const;

function storeSource(cmd: Command): Command {
  return cmd
    .option(...DATA_DIR)
    .option(...REDIS)
    .option('--events <file...>', 'decision event logs (JSON lines) instead of a journal')
    .option(...POLICY)
    .option(...OTHER_BUDGETS)
    .option('--trimmed', 'read a journal whose first entries were trimmed by retention or archived after --from as it is (refused otherwise)');
}

function serveOptions(cmd: Command, http: boolean): Command {
  cmd.option(...POLICY);
  if (http) cmd.option('--host <addr>', 'HTTP bind address (TOLLGATE_HOST; default 127.0.0.1)').option('--port <n>', 'HTTP port, 0 for any free one (TOLLGATE_PORT; default 8787)');
  cmd
    .option(...REDIS)
    // stdio keeps nothing unless told where: one caller, started afresh by its assistant.
    .option(DATA_DIR[0], http ? "the embedded store's journal directory (with --redis: where writes queued in an outage are kept), or none (TOLLGATE_DATA_DIR; default ./tollgate-data)" : "the embedded store's journal directory (TOLLGATE_DATA_DIR; default: none, usage kept in memory)")
    .option('--events <file>', 'decision events as JSON lines (TOLLGATE_EVENTS_FILE; default stderr)')
    .option('--no-watch', 'do not reload the policy when its file changes or on SIGHUP (TOLLGATE_POLICY_WATCH=0)')
    .option('--shutdown-timeout <ms>', 'on SIGTERM/SIGINT, how long calls in flight may take before exiting anyway (TOLLGATE_SHUTDOWN_TIMEOUT_MS; default 10000)');
  if (http) {
    cmd
      .option('--workers <n|auto>', 'gateway processes on the port; more than 1 needs --redis (TOLLGATE_WORKERS; default 1)')
      .option('--allow-demo-keys-on-network', 'serve a policy holding the published demo API keys on a non-loopback address')
      .option('--dev-anonymous <user>', 'development only: serve requests without a credential as this apiKeys id or user of the policy; loopback only (TOLLGATE_DEV_ANONYMOUS)')
      .option('--allow-other-budgets', 'serve from a store holding live usage of budgets the policy does not declare (exit 4 otherwise)');
  }
  return cmd;
}

/**
 * The whole command line. `reporter` receives each finished command's output and exit code;
 * `env` is the process environment (the configuration file is applied per command).
 */
export function buildProgram(reporter: Reporter, env: NodeJS.ProcessEnv = process.env): Command {
  const done = (r: Result) => reporter.result(r);
  const program = new Command('tollgate')
    .description('Enforcement gateway for enterprise AI consumption: identity, budgets, tier-down and audit in front of model APIs.')
    .version(VERSION, '-v, --version', 'print the version')
    .option('--config <file>', 'configuration file (TOLLGATE_CONFIG; default ./tollgate.yaml when present)')
    .showSuggestionAfterError(true)
    .showHelpAfterError('(add --help for usage)')
    .exitOverride()
    .addHelpText('after', '\nWithout a command, tollgate serves (`tollgate serve`). Exit codes and every command: docs/cli.md.');

  serveOptions(program.command('serve').description('serve MCP over streamable HTTP, plus the OpenAI- and Anthropic-compatible APIs and A2A (the default command)'), true).action(
    async (opts, cmd: Command) => {
      const { serve } = await import('./serve.js');
      await serve(opts, commandEnv(cmd, env));
    },
  );

  serveOptions(program.command('stdio').description("serve MCP over stdin/stdout for one caller, whose key comes from TOLLGATE_API_KEY (or a JWT in TOLLGATE_TOKEN)"), false).action(
    async (opts, cmd: Command) => {
      const { stdio } = await import('./serve.js');
      await stdio(opts, commandEnv(cmd, env));
    },
  );

  program
    .command('call')
    .description("call a running gateway's complete tool (or my_budget with --budget, list_models with --models)")
    .argument('[prompt...]', 'the prompt')
    .option('--key <key>', 'API key (TOLLGATE_API_KEY)')
    .option('--url <url>', 'MCP endpoint (default http://<host>:<port>/mcp)')
    .option('--host <addr>', 'gateway address (TOLLGATE_HOST)')
    .option('--port <n>', 'gateway port (TOLLGATE_PORT)')
    .option('--tier <tier>', 'ask for a tier')
    .option('--model <model>', 'ask for a model (provider/model)')
    .option('--max-tokens <n>', 'most output tokens')
    .option('--budget', 'show my_budget instead')
    .option('--models', 'show list_models instead')
    .option(...JSON_OUT)
    .action(async (words: string[], opts, cmd: Command) => {
      const { call } = await import('./policyCommands.js');
      done(await call(words, opts, commandEnv(cmd, env)));
    });

  program
    .command('check')
    .description('validate a policy file: every error with its file:line:col; warns of shipped prices unchecked for 90 days and of models retired or retiring within 60 days')
    .argument('[file]', 'the policy (default: the one --policy, TOLLGATE_POLICY or the config file names)')
    .option(...POLICY)
    .action(async (file: string | undefined, opts, cmd: Command) => {
      const { check } = await import('./policyCommands.js');
      done(check(file, opts, commandEnv(cmd, env)));
    });

  program
    .command('test-policy')
    .description('run policy tests: YAML cases of principal + usage + request -> expected decision')
    .argument('<files...>', 'test files')
    .option('--policy <file>', "run against this policy instead of the one each file names (a file naming none uses TOLLGATE_POLICY or the config file's)")
    .action(async (files: string[], opts, cmd: Command) => {
      const { testPolicy } = await import('./policyCommands.js');
      done(await testPolicy(files, opts, commandEnv(cmd, env)));
    });

  program
    .command('explain')
    .description('show the decision for one call, what decided it and what would change it')
    .requiredOption('--as <who>', 'the caller: principal JSON, an API key or a JWT')
    .option(...POLICY)
    .option('--tier <tier>', 'the tier asked for')
    .option('--model <model>', 'the model asked for')
    .option('--prompt <text>', 'the prompt')
    .option('--max-tokens <n>', 'most output tokens')
    .option('--usage <budget=used,...>', 'usage to assume per budget')
    .option('--now <iso>', 'the time of the call')
    .action(async (opts, cmd: Command) => {
      const { explain } = await import('./policyCommands.js');
      done(await explain(opts, commandEnv(cmd, env)));
    });

  addUsage(program, done, env);
  addAudit(program, done, env);
  addKeys(program, done, env);

  program
    .command('mcp-config')
    .description("print the entry an assistant's MCP configuration needs, in that client's format")
    .addOption(new Option('--client <client>', 'the assistant').choices(['claude-desktop', 'cursor', 'vscode', 'claude-code']).makeOptionMandatory())
    .option('--http <url>', "the gateway's MCP URL, for the HTTP form (default: the stdio form, which starts tollgate itself)")
    .option('--key <key>', 'the caller\'s tollgate API key (TOLLGATE_API_KEY; without one, VS Code prompts and the others get a placeholder)')
    .option('--name <name>', 'the server name in the client (default tollgate)')
    .option(...POLICY)
    .action(async (opts, cmd: Command) => {
      const { mcpConfig, CONFIG_FILE } = await import('./mcpConfig.js');
      const key = (opts.key as string | undefined) ?? (commandEnv(cmd, env).TOLLGATE_API_KEY || undefined);
      const json = mcpConfig({ ...opts, key });
      done({ out: `${JSON.stringify(json, null, 2)}\n`, err: `# merge into ${CONFIG_FILE[opts.client as keyof typeof CONFIG_FILE]}\n`, code: EXIT.ok });
    });

  program
    .command('hash-key')
    .description('print the sha256 of an API key, to put under apiKeys[].sha256 in the policy')
    .argument('<api-key>', 'the key')
    .action(async (key: string) => {
      const { hashKey } = await import('./policyCommands.js');
      done(hashKey(key));
    });

  return program;
}

type Done = (r: Result) => void;

/**
 * Runs a command of the operator tools, which refuse a missing or bad option as INVALID_REQUEST:
 * the command line is wrong (exit 2), not a failure found (exit 1, which `audit verify` gives a
 * journal that fails its audit).
 */
async function usageErrors<T>(command: () => Promise<T>): Promise<T> {
  try {
    return await command();
  } catch (err) {
    if (err instanceof GatewayError && err.code === 'INVALID_REQUEST') throw new CliError(`${err.code}: ${err.message}`);
    throw err;
  }
}

function addUsage(program: Command, done: Done, env: NodeJS.ProcessEnv): void {
  const usage = program
    .command('usage')
    .description('usage of the ledger: per budget and subject, top consumers, credits, exports, reports and refusals')
    .addHelpText('after', '\nshow, top, adjust and credit read the shared Redis store; export, report and refusals read the decision events of the journal or event logs.');
  const run = async (verb: string, files: string[], opts: Record<string, unknown>, cmd: Command) => {
    const { usageCommand } = await import('../admin/cli.js');
    done({ out: await usageErrors(() => usageCommand(verb, flagNames(opts), files, commandEnv(cmd, env))), code: EXIT.ok });
  };
  const ledger = (name: string, description: string, isDefault = false) =>
    usage
      .command(name, { isDefault })
      .description(description)
      .option(...POLICY)
      .option(...REDIS)
      .option('--now <iso>', 'the time the command reads and adjusts at: its windows (default now)')
      .option(...OTHER_BUDGETS)
      .option(...JSON_OUT);
  ledger('show', 'usage in the current window per budget and subject (the default)', true)
    .option('--budget <id>', 'one budget')
    .option('--subject <subject>', 'one subject (user, team, cost centre)')
    .action((opts, cmd: Command) => run('show', [], opts, cmd));
  ledger('top', 'the biggest consumers of each budget in the current window')
    .option('--budget <id>', 'one budget')
    .option('--limit <n>', 'how many (default 10)')
    .action((opts, cmd: Command) => run('top', [], opts, cmd));
  for (const [verb, what] of [
    ['adjust', 'add an amount to a subject\'s usage, in the budget\'s unit (--amount=-N subtracts)'],
    ['credit', 'give an amount back to a subject (adjust with -N)'],
  ] as const) {
    ledger(verb, what)
      .requiredOption('--budget <id>', 'the budget')
      .requiredOption('--subject <subject>', 'the subject')
      .requiredOption('--amount <n>', "the amount, in the budget's unit (tokens or USD)")
      .action((opts, cmd: Command) => run(verb, [], opts, cmd));
  }
  storeSource(usage.command('export').description('usage and cost per period, model and principal from decision events (CSV or FOCUS 1.2)'))
    .argument('[event-files...]', 'event logs (same as --events)')
    .option('--from <iso>', 'start (required)')
    .option('--to <iso>', 'end, exclusive (required)')
    .addOption(new Option('--format <format>', 'output format').choices(['csv', 'focus']).default('csv'))
    .addOption(new Option('--granularity <g>', 'period').choices(['day', 'month']).default('day'))
    .option('--user <user>', 'one user')
    .option('--team <team>', 'one team')
    .option('--cost-center <cc>', 'one cost centre')
    .option(...JSON_OUT)
    .action((files: string[], opts, cmd: Command) => run('export', files, opts, cmd));
  storeSource(usage.command('report').description('tokens in and out, cost, calls and refusals by code, per period'))
    .argument('[event-files...]', 'event logs (same as --events)')
    .option('--by <dimension>', 'team, cost-center, user, model or tier (default user)')
    .option('--window <window>', 'day, week or month (default day)')
    .option('--from <iso>', 'start')
    .option('--to <iso>', 'end, exclusive')
    .option('--format <format>', 'table, csv or json (default table)')
    .option(...JSON_OUT)
    .action((files: string[], opts, cmd: Command) => run('report', files, opts, cmd));
  storeSource(usage.command('refusals').description('who was refused, by which rule or budget, with which code, how often'))
    .argument('[event-files...]', 'event logs (same as --events)')
    .option('--from <iso>', 'start (required)')
    .option('--to <iso>', 'end, exclusive (required)')
    .option('--by <dimensions>', 'comma-separated: user, team, rule, budget, code')
    .option('--format <format>', 'table, csv or json (default table)')
    .option(...JSON_OUT)
    .action((files: string[], opts, cmd: Command) => run('refusals', files, opts, cmd));
}

function addAudit(program: Command, done: Done, env: NodeJS.ProcessEnv): void {
  const audit = program.command('audit').description('check the journal: the record of every charge and decision');
  audit
    .command('verify')
    .description('verify the hash chain, the ledger against its snapshots and an event for every charge; exit 1 naming the first entry that fails')
    .option(...DATA_DIR)
    .option(...REDIS)
    .option(...POLICY)
    .option(...OTHER_BUDGETS)
    .option('--trimmed', 'earlier segments were archived: start at the first snapshot kept')
    .option(...JSON_OUT)
    .action(async (opts, cmd: Command) => {
      const { auditVerify } = await import('../admin/audit.js');
      done(await usageErrors(() => auditVerify(flagNames(opts), commandEnv(cmd, env))));
    });
}

function addKeys(program: Command, done: Done, env: NodeJS.ProcessEnv): void {
  const keys = program
    .command('keys')
    .description('issued API keys: in Redis with --redis or REDIS_URL (every replica sees them), else in the data directory');
  const run = async (verb: string, opts: Record<string, unknown>, cmd: Command) => {
    const { keysCommand } = await import('../admin/keys.js');
    done({ out: await usageErrors(() => keysCommand(verb, flagNames(opts), commandEnv(cmd, env))), code: EXIT.ok });
  };
  const store = (cmd: Command) => cmd.option(...REDIS).option(...DATA_DIR).option(...POLICY).option(...OTHER_BUDGETS).option(...JSON_OUT);
  store(keys.command('issue').description('issue a key; it is printed once, only its SHA-256 is stored'))
    .option('--user <user>', 'whom the key charges')
    .option('--app <name>', "an application's key: budgets and limits of scope application are keyed by it")
    .option('--owner <user>', "the application's owner, whose user (and --teams, --cost-center) lines it charges")
    .option('--id <id>', 'the key id (default: generated)')
    .option('--teams <a,b>', 'teams')
    .option('--cost-center <cc>', 'cost centre')
    .option('--groups <g,h>', 'groups')
    .option('--roles <r>', 'roles')
    .action((opts, cmd: Command) => run('issue', opts, cmd));
  store(keys.command('revoke').description('revoke a key; gateways refuse it within seconds'))
    .requiredOption('--id <id>', 'the key id')
    .action((opts, cmd: Command) => run('revoke', opts, cmd));
  store(keys.command('list').description('list issued keys')).action((opts, cmd: Command) => run('list', opts, cmd));
}
