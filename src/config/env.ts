/**
 * Every environment variable tollgate reads, in one zod schema: its type, default and meaning.
 * `parseEnv` is the only place they are parsed, so a value such as `TOLLGATE_PORT=abc` stops
 * tollgate at start with a message naming the variable, instead of becoming NaN somewhere later.
 * docs/environment.md is generated from the same schema (`npm run gen-env-doc`).
 *
 * An empty value counts as unset. Variables a policy reads through `${env:...}` bindings are the
 * policy author's own and are not listed here.
 */
import { z } from 'zod';
import { countOrAuto, envRegistry, flag, list, oneOf, text, url, urlList, wholeNumber, type EnvMeta } from './envValues.js';

/** Records `meta` for `schema` (typed as a plain schema: the registry's generic signature does not resolve for a type parameter). */
function described<T extends z.ZodType>(schema: T, meta: EnvMeta): T {
  envRegistry.add(schema as z.ZodType, meta);
  return schema;
}
/** A variable used with `meta.default` when unset. */
const withDefault = <T extends z.ZodType>(schema: T, meta: EnvMeta & { default: string }) => described(schema, meta);
/** A variable without a default; `meta.unset` says what leaving it out means. */
const optional = <T extends z.ZodType>(schema: T, meta: EnvMeta & { unset: string }) => described(schema.optional(), meta);

const REDIS = ['redis:', 'rediss:'] as const;
const secret = true;

/** The environment variables of tollgate, in the order docs/environment.md lists them. */
export const envSchema = z.object({
  TOLLGATE_CONFIG: optional(text(), {
    type: 'path',
    unset: '`tollgate.yaml` in the working directory, if there is one',
    description: 'The configuration file every command reads (`--config`); a flag, then a variable, then this file decide each setting (docs/configuration.md).',
  }),
  TOLLGATE_POLICY: optional(text(), { type: 'path', unset: '`policy/default.yaml`, shipped with tollgate', description: 'The policy file (`--policy`).' }),
  TOLLGATE_POLICY_WATCH: withDefault(flag(), { type: '`0`, `1`, `false` or `true`', default: '1', description: '`0` or `false`: do not reload the policy when its file changes or on SIGHUP (`--no-watch`).' }),
  TOLLGATE_HOST: withDefault(text(), { type: 'host name or address', default: '127.0.0.1', description: 'HTTP bind address (`--host`).' }),
  TOLLGATE_PORT: withDefault(wholeNumber('port number', 0, 65535), { type: 'integer 0-65535', default: '8787', description: 'HTTP port; 0 takes any free port (`--port`).' }),
  TOLLGATE_ALLOWED_HOSTS: optional(list(), { type: 'comma-separated list', unset: 'only local names when bound to a local address', description: 'Host header values accepted, against DNS rebinding; local names are added when bound to a local address.' }),
  TOLLGATE_ALLOWED_ORIGINS: optional(list(), {
    type: 'comma-separated list',
    unset: 'none besides this machine: when bound to loopback, http(s)://localhost, 127.0.0.1 and [::1] on any port; any other Origin gets 403',
    description: 'Browser origins allowed to call the gateway.',
  }),
  TOLLGATE_DEV_ANONYMOUS: optional(text(), {
    type: 'an API key id or user of the policy',
    unset: 'off: a request without a credential gets 401',
    description: 'Development only (`--dev-anonymous`): serve requests without a credential as this principal of the policy\'s `apiKeys`; `serve` refuses it unless bound to loopback.',
  }),
  TOLLGATE_MAX_BODY_BYTES: withDefault(wholeNumber('whole number of bytes', 1), { type: 'integer ≥ 1 (bytes)', default: '1048576', description: 'Largest HTTP request body accepted.' }),
  TOLLGATE_MAX_SESSIONS: withDefault(wholeNumber('whole number of sessions', 1), { type: 'integer ≥ 1', default: '10000', description: 'Most MCP sessions one process holds.' }),
  TOLLGATE_MAX_SESSIONS_PER_CALLER: withDefault(wholeNumber('whole number of sessions', 1), { type: 'integer ≥ 1', default: '1000', description: "Most MCP sessions one caller holds; one more ends that caller's least recently used idle one." }),
  TOLLGATE_SESSION_IDLE_SECONDS: withDefault(wholeNumber('whole number of seconds', 1), { type: 'integer ≥ 1 (seconds)', default: '1800', description: 'An MCP session idle this long is ended.' }),
  TOLLGATE_SESSION_SECRET: optional(text(32, 'at least 32 characters, e.g. the output of `openssl rand -hex 32`'), {
    type: 'secret, ≥ 32 characters',
    unset: 'random, per process (per gateway with `--workers`)',
    description: 'Signs MCP session ids; give every replica the same one so that any of them serves any session.',
    secret,
  }),
  TOLLGATE_METRICS_TOKEN: optional(text(), { type: 'secret', unset: 'none: GET /metrics is open', description: 'Bearer token GET /metrics requires.', secret }),
  TOLLGATE_METRICS_MAX_TEAMS: withDefault(wholeNumber('whole number of teams', 0), {
    type: 'integer ≥ 0',
    default: '200',
    description: 'Most distinct teams given their own `team` label value in /metrics; later teams are counted as `other` (0: all of them).',
  }),
  REDIS_URL: optional(url(REDIS), { type: '`redis://` or `rediss://` URL', unset: 'the embedded in-memory store', description: 'The shared quota store, and issued API keys (`--redis`); a password in it is masked in errors.' }),
  REDIS_CLUSTER_NODES: optional(urlList(REDIS), {
    type: 'comma-separated `redis://` or `rediss://` URLs',
    unset: 'no cluster',
    description: "Seed nodes of a Redis Cluster; when set, the ledger uses the cluster rather than REDIS_URL. The first URL's credentials and TLS apply to every node.",
  }),
  TOLLGATE_KEY_PREFIX: withDefault(text(), { type: 'text', default: 'tollgate:', description: 'Prefix of every key tollgate writes to Redis.' }),
  TOLLGATE_STORE_TIMEOUT_MS: withDefault(wholeNumber('whole number of milliseconds', 1), { type: 'integer ≥ 1 (milliseconds)', default: '2000', description: 'A Redis command without a reply after this long counts as a store outage.' }),
  TOLLGATE_JOURNAL_MAXLEN: optional(wholeNumber('whole number of entries', 1), {
    type: 'integer ≥ 1 (entries)',
    unset: 'keep every entry',
    description:
      'Redis journal retention: each journal stream keeps about this many entries (`XADD … MAXLEN ~`); older ones are trimmed, so export them first (docs/quota.md, "Retention"). The audit then checks the chain from the first entry kept.',
  }),
  TOLLGATE_JOURNAL_MAX_AGE_SECONDS: optional(wholeNumber('whole number of seconds', 1), {
    type: 'integer ≥ 1 (seconds)',
    unset: 'keep every entry',
    description:
      "Redis journal retention by age: entries older than this (by Redis's clock) are trimmed as new ones are added (`XADD … MINID ~`); export them first. Ignored when TOLLGATE_JOURNAL_MAXLEN is set.",
  }),
  TOLLGATE_ROLLUP_DAYS: withDefault(wholeNumber('whole number of days', 1), {
    type: 'integer ≥ 1 (days)',
    default: '400',
    description: "How long Redis keeps each day's usage rollup hash (the console's and `tollgate report`'s usage by user, team and model).",
  }),
  TOLLGATE_SETTLED_MARKER_SECONDS: withDefault(wholeNumber('whole number of seconds', 1, 86400), {
    type: 'integer 1-86400 (seconds)',
    default: '86400',
    description:
      "How long Redis keeps each call's settled markers (one key per budget line), which make a replayed settlement count once; the policy's reservation TTL + 1 h is used if longer. A settlement later than this after its reservation (queued through a longer outage) is dropped and logged as `quota_settle_expired`, and recovery charges the reservation instead (docs/quota.md, \"Redis memory\").",
  }),
  TOLLGATE_SHUTDOWN_TIMEOUT_MS: withDefault(wholeNumber('whole number of milliseconds', 0), {
    type: 'integer ≥ 0 (milliseconds)',
    default: '10000',
    description:
      'On SIGTERM or SIGINT, how long the calls in flight (an A2A task running after its answer included) and their ledger writes may take; then the calls still running are cut and recorded CANCELLED (up to 1 s more) and the process exits anyway, with code 1 and every settlement it could not write logged (`--shutdown-timeout`; 0: do not wait). A second signal exits at once.',
  }),
  TOLLGATE_DATA_DIR: optional(text(), {
    type: 'path, or `none`',
    unset: '`tollgate-data` under the working directory for `tollgate serve`; none for `stdio`',
    description: "Where the embedded store keeps its journal (`--data-dir`): budgets, open reservations and the hash chain survive a restart. With Redis, where the ledger writes queued during a Redis outage are kept (`redis-spill/`, made at the first one), so that a replica stopped or killed before Redis is back loses none: the next start on the directory writes them. `none` keeps nothing (state, or with Redis those queued writes, lost on exit).",
  }),
  TOLLGATE_EVENTS_FILE: optional(text(), { type: 'path', unset: 'stderr', description: 'Where decision events go, as JSON lines (`--events`).' }),
  TOLLGATE_SIEM_URL: optional(url(['http:', 'https:']), { type: '`http://` or `https://` URL', unset: 'no SIEM', description: 'Splunk HEC collector for decision events when the policy has no `metering.siem`.' }),
  TOLLGATE_SIEM_TOKEN: optional(text(), { type: 'secret', unset: 'empty', description: 'HEC token for TOLLGATE_SIEM_URL.', secret }),
  TOLLGATE_LOG_LEVEL: withDefault(oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), { type: 'fatal, error, warn, info, debug, trace or silent', default: 'info', description: 'Gateway log level (logs go to stderr).' }),
  TOLLGATE_WORKERS: withDefault(countOrAuto('whole number of workers', 256), { type: 'integer 1-256, or `auto`', default: '1', description: 'Gateway processes sharing the port, `auto` for one per core (`--workers`); more than 1 needs Redis.' }),
  TOLLGATE_API_KEY: optional(text(), { type: 'secret', unset: 'none', description: "The caller's API key for `tollgate stdio` and `tollgate call` (`--key`).", secret }),
  TOLLGATE_TOKEN: optional(text(), { type: 'secret (JWT)', unset: 'none', description: 'For `tollgate stdio`: the caller as a JWT from a trusted issuer, instead of TOLLGATE_API_KEY (set one of the two).', secret }),
});

/** The name of an environment variable tollgate reads. */
export type EnvName = keyof typeof envSchema.shape;

/** The environment, parsed: each variable as its type, defaults applied. */
export type Env = Readonly<z.output<typeof envSchema>>;

/** Every variable of the schema with its metadata, in schema order. */
export function envVariables(): { name: EnvName; meta: EnvMeta }[] {
  return (Object.keys(envSchema.shape) as EnvName[]).map((name) => ({ name, meta: envRegistry.get(envSchema.shape[name])! }));
}

/** One variable with a bad value. */
export interface EnvIssue {
  name: EnvName;
  /** `NAME=value: expected ...`, with the value hidden for secrets. */
  message: string;
}

/** Thrown by `parseEnv`: names every variable with a bad value and what it expects. */
export class EnvError extends Error {
  constructor(readonly issues: EnvIssue[]) {
    const lines = issues.map((i) => i.message);
    super(lines.length === 1 ? lines[0] : `${lines.length} environment variables are invalid:\n  ${lines.join('\n  ')}`);
    this.name = 'EnvError';
  }
}

/**
 * The value as an error shows it: hidden for a secret, a URL's password masked, quoted when it
 * holds odd characters, cut when long.
 */
export function shown(value: string, meta: EnvMeta | undefined): string {
  if (meta?.secret) return `<hidden, ${value.length} character${value.length === 1 ? '' : 's'}>`;
  const masked = value.replace(/(\/\/[^/:@\s]*:)[^@\s]*@/g, '$1***@');
  const cut = masked.length > 80 ? `${masked.slice(0, 77)}...` : masked;
  return /^[\x21-\x7e]*$/.test(cut) ? cut : JSON.stringify(cut);
}

/**
 * Parses tollgate's variables out of `env` (other variables are ignored). Returns a frozen object;
 * throws an EnvError listing every variable with a bad value.
 */
export function parseEnv(env: NodeJS.ProcessEnv): Env {
  const input: Record<string, string> = {};
  for (const { name, meta } of envVariables()) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') input[name] = raw;
    else if (meta.default !== undefined) input[name] = meta.default;
  }
  const result = envSchema.safeParse(input);
  if (result.success) return Object.freeze(result.data);
  const issues = new Map<EnvName, EnvIssue>();
  for (const issue of result.error.issues) {
    const name = issue.path[0] as EnvName;
    if (issues.has(name)) continue;
    const meta = envRegistry.get(envSchema.shape[name]);
    issues.set(name, { name, message: `${name}=${shown(input[name] ?? '', meta)}: expected ${issue.message}` });
  }
  throw new EnvError([...issues.values()]);
}
