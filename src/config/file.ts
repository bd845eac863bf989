/**
 * The deployment's configuration file, `tollgate.yaml`: the settings every command shares (which
 * policy, which store) written once, so that `serve`, `usage`, `keys`, `explain`, `test-policy`
 * and `audit` all read the same policy and the same ledger.
 *
 * Resolution, for every setting and every command: a flag, else the environment variable, else
 * the configuration file, else the default. The file is `--config <file>`, else TOLLGATE_CONFIG,
 * else `tollgate.yaml` in the working directory when there is one. Its values are applied as
 * defaults of the environment variables they stand for (`withConfigFile`), so everything that
 * reads the environment reads them too. Relative paths in it are relative to the file.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import { envVariables, type EnvName } from './env.js';
import { didYouMean } from './suggest.js';

/** The file's keys and the environment variable each stands for. */
export const CONFIG_KEYS = {
  policy: 'TOLLGATE_POLICY',
  dataDir: 'TOLLGATE_DATA_DIR',
  redis: 'REDIS_URL',
  redisClusterNodes: 'REDIS_CLUSTER_NODES',
  keyPrefix: 'TOLLGATE_KEY_PREFIX',
  host: 'TOLLGATE_HOST',
  port: 'TOLLGATE_PORT',
  events: 'TOLLGATE_EVENTS_FILE',
  workers: 'TOLLGATE_WORKERS',
  logLevel: 'TOLLGATE_LOG_LEVEL',
} as const satisfies Record<string, EnvName>;

/** Keys whose value is a path, resolved against the file's directory. */
const PATH_KEYS = new Set(['policy', 'dataDir', 'events']);

type ConfigKey = keyof typeof CONFIG_KEYS;

const scalar = z.union([z.string(), z.number(), z.boolean()]).transform(String);

const configSchema = z
  .object({
    ...(Object.fromEntries(Object.keys(CONFIG_KEYS).map((k) => [k, k === 'redisClusterNodes' ? z.union([z.array(z.string()).transform((a) => a.join(',')), z.string()]).optional() : scalar.optional()])) as unknown as Record<
      ConfigKey,
      z.ZodOptional<z.ZodType<string>>
    >),
    /** Any other variable of docs/environment.md, by its name. */
    env: z.record(z.string(), scalar).optional(),
  })
  .strict();

/** The default file name, looked for in the working directory. */
export const DEFAULT_CONFIG_FILE = 'tollgate.yaml';

/** A configuration file that cannot be used: names the file and every problem. */
export class ConfigFileError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`}`);
    this.name = 'ConfigFileError';
  }
}

/** Which file applies: `flag`, else TOLLGATE_CONFIG, else ./tollgate.yaml if present; undefined when none. */
export function configFilePath(flag: string | undefined, env: NodeJS.ProcessEnv, cwd = process.cwd()): string | undefined {
  const named = flag ?? (env.TOLLGATE_CONFIG || undefined);
  if (named !== undefined) {
    const file = resolve(cwd, named);
    if (!existsSync(file)) throw new ConfigFileError(file, ['no such file (given by ' + (flag !== undefined ? '--config' : 'TOLLGATE_CONFIG') + ')']);
    return file;
  }
  const found = resolve(cwd, DEFAULT_CONFIG_FILE);
  return existsSync(found) ? found : undefined;
}

/** The environment variables the file sets (values as strings, paths absolute). */
export function readConfigFile(file: string): Partial<Record<EnvName, string>> {
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, 'utf8')) ?? {};
  } catch (err) {
    throw new ConfigFileError(file, [err instanceof Error ? err.message : String(err)]);
  }
  const result = configSchema.safeParse(doc);
  const known = new Set<string>(envVariables().map((v) => v.name));
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((k) => `unknown key ${k}${didYouMean(k, [...Object.keys(CONFIG_KEYS), 'env'])}; known: ${Object.keys(CONFIG_KEYS).join(', ')}, env`).join('\n  ');
      }
      return `${issue.path.join('.') || '(root)'}: ${issue.message}`;
    });
    throw new ConfigFileError(file, problems);
  }
  const out: Partial<Record<EnvName, string>> = {};
  const problems: string[] = [];
  // A variable with a key of its own is set there (a path under env would be read against the
  // working directory, not the file, and could disagree with the key); TOLLGATE_CONFIG picks the file.
  const keyOf = new Map<string, string>(Object.entries(CONFIG_KEYS).map(([key, name]) => [name, key]));
  for (const [name, value] of Object.entries(result.data.env ?? {})) {
    const key = keyOf.get(name);
    if (key !== undefined) problems.push(`env.${name}: set it with the key ${key}${PATH_KEYS.has(key) ? ' (a path there is relative to this file)' : ''}`);
    else if (name === 'TOLLGATE_CONFIG') problems.push(`env.${name}: a configuration file cannot name another; give it with --config or TOLLGATE_CONFIG`);
    else if (!known.has(name)) problems.push(`env.${name}: not a variable tollgate reads${didYouMean(name, known)} (see docs/environment.md)`);
    else out[name as EnvName] = value;
  }
  if (problems.length) throw new ConfigFileError(file, problems);
  for (const key of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
    const value = result.data[key];
    if (value === undefined) continue;
    const absolute = PATH_KEYS.has(key) && value !== 'none' && !isAbsolute(value) ? resolve(dirname(file), value) : value;
    out[CONFIG_KEYS[key]] = absolute;
  }
  return out;
}

/**
 * `env` with the configuration file's values under it: a variable set (non-empty) in `env` wins,
 * the file fills the rest. `file` is the file applied, if any.
 */
export function withConfigFile(env: NodeJS.ProcessEnv, flag?: string, cwd = process.cwd()): { env: NodeJS.ProcessEnv; file?: string } {
  const file = configFilePath(flag, env, cwd);
  if (!file) return { env };
  const merged: NodeJS.ProcessEnv = { ...env };
  for (const [name, value] of Object.entries(readConfigFile(file))) {
    if (merged[name] === undefined || merged[name] === '') merged[name] = value;
  }
  return { env: merged, file };
}
