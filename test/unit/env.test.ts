import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { EnvError, envSchema, envVariables, parseEnv } from '../../src/config/env.js';
import { withEnvTable } from '../../src/config/envDoc.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** The EnvError `parseEnv(env)` throws. */
function refusal(env: Record<string, string>): EnvError {
  try {
    parseEnv(env);
  } catch (err) {
    if (err instanceof EnvError) return err;
    throw err;
  }
  throw new Error(`parseEnv accepted ${JSON.stringify(env)}`);
}

/** `env.X`, `env?.X` and `env['X']` reads (process.env included) of a TOLLGATE_* or REDIS_* name. */
function envReads(source: string): string[] {
  return [...source.matchAll(/\benv(?:\?\.|\.|\[\s*['"`])((?:TOLLGATE|REDIS)_[A-Z0-9_]+)/g)].map((m) => m[1]!);
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

describe('environment variables', () => {
  it('docs/environment.md holds the table the schema generates (run npm run gen-env-doc after changing it)', () => {
    const doc = readFileSync(join(root, 'docs', 'environment.md'), 'utf8');
    expect(doc).toBe(withEnvTable(doc));
  });

  it('gives every variable a type, a description and a default or what unset means', () => {
    for (const { name, meta } of envVariables()) {
      expect(meta.type, name).not.toBe('');
      expect(meta.description, name).not.toBe('');
      expect(meta.default !== undefined || meta.unset !== undefined, name).toBe(true);
    }
    expect(envVariables().map((v) => v.name)).toEqual(Object.keys(envSchema.shape));
  });

  it('parses an empty environment to the defaults, and the values given', () => {
    expect(parseEnv({})).toMatchObject({ TOLLGATE_PORT: 8787, TOLLGATE_SESSION_IDLE_SECONDS: 1800, TOLLGATE_STORE_TIMEOUT_MS: 2000, TOLLGATE_POLICY_WATCH: true, TOLLGATE_WORKERS: 1 });
    const env = parseEnv({
      TOLLGATE_SESSION_IDLE_SECONDS: '60',
      TOLLGATE_POLICY_WATCH: '0',
      TOLLGATE_WORKERS: 'auto',
      REDIS_CLUSTER_NODES: 'redis://a:7000, rediss://b:7001,',
      TOLLGATE_MAX_BODY_BYTES: '',
      OTHER: 'ignored',
    });
    expect(env).toMatchObject({ TOLLGATE_SESSION_IDLE_SECONDS: 60, TOLLGATE_POLICY_WATCH: false, TOLLGATE_WORKERS: 'auto', REDIS_CLUSTER_NODES: ['redis://a:7000', 'rediss://b:7001'], TOLLGATE_MAX_BODY_BYTES: 1048576 });
    expect(Object.isFrozen(env)).toBe(true);
    expect('OTHER' in env).toBe(false);
  });

  it.each([
    ['TOLLGATE_SESSION_IDLE_SECONDS', 'abc', 'TOLLGATE_SESSION_IDLE_SECONDS=abc: expected a whole number of seconds ≥ 1'],
    ['TOLLGATE_STORE_TIMEOUT_MS', 'abc', 'TOLLGATE_STORE_TIMEOUT_MS=abc: expected a whole number of milliseconds ≥ 1'],
    ['TOLLGATE_STORE_TIMEOUT_MS', '-5', 'TOLLGATE_STORE_TIMEOUT_MS=-5: expected a whole number of milliseconds ≥ 1'],
    ['TOLLGATE_MAX_SESSIONS', '0', 'TOLLGATE_MAX_SESSIONS=0: expected a whole number of sessions ≥ 1'],
    ['TOLLGATE_MAX_BODY_BYTES', '1e6', 'TOLLGATE_MAX_BODY_BYTES=1e6: expected a whole number of bytes ≥ 1'],
    ['TOLLGATE_PORT', 'NaN', 'TOLLGATE_PORT=NaN: expected a port number from 0 to 65535'],
    ['TOLLGATE_PORT', '65536', 'TOLLGATE_PORT=65536: expected a port number from 0 to 65535'],
    ['TOLLGATE_WORKERS', '-1', 'TOLLGATE_WORKERS=-1: expected a whole number of workers from 1 to 256, or auto'],
    ['TOLLGATE_LOG_LEVEL', 'loud', 'TOLLGATE_LOG_LEVEL=loud: expected one of fatal, error, warn, info, debug, trace, silent'],
    ['TOLLGATE_POLICY_WATCH', 'no', 'TOLLGATE_POLICY_WATCH=no: expected 0, 1, false or true'],
    ['REDIS_URL', 'http://redis:6379', 'REDIS_URL=http://redis:6379: expected a redis:// or rediss:// URL'],
    ['REDIS_CLUSTER_NODES', ' , ', 'REDIS_CLUSTER_NODES=" , ": expected a comma-separated list of redis:// or rediss:// URLs'],
    ['TOLLGATE_SIEM_URL', 'splunk:8088', 'TOLLGATE_SIEM_URL=splunk:8088: expected a http:// or https:// URL'],
  ])('refuses %s=%s, naming the variable and what it expects', (name, value, message) => {
    const err = refusal({ [name]: value });
    expect(err.issues).toEqual([{ name, message }]);
    expect(err.message).toBe(message);
  });

  it('lists every bad variable in one error, without repeating secrets or Redis passwords', () => {
    const err = refusal({ TOLLGATE_PORT: 'x', TOLLGATE_SESSION_SECRET: 'too-short-secret', REDIS_URL: 'ftp://user:hunter2@redis' });
    expect(err.issues.map((i) => i.name)).toEqual(['TOLLGATE_PORT', 'TOLLGATE_SESSION_SECRET', 'REDIS_URL']);
    expect(err.message).toBe(
      [
        '3 environment variables are invalid:',
        '  TOLLGATE_PORT=x: expected a port number from 0 to 65535',
        '  TOLLGATE_SESSION_SECRET=<hidden, 16 characters>: expected at least 32 characters, e.g. the output of `openssl rand -hex 32`',
        '  REDIS_URL=ftp://user:***@redis: expected a redis:// or rediss:// URL',
      ].join('\n'),
    );
    expect(err.message).not.toContain('hunter2');
  });

  it('finds env reads in source text', () => {
    expect(envReads("a = process.env.TOLLGATE_X; b = env.REDIS_Y; c = env['TOLLGATE_Z']; d = env?.TOLLGATE_W; e = environment.TOLLGATE_V")).toEqual([
      'TOLLGATE_X',
      'REDIS_Y',
      'TOLLGATE_Z',
      'TOLLGATE_W',
    ]);
  });

  it('knows every TOLLGATE_* and REDIS_* variable src/ reads', () => {
    const known = new Set<string>(Object.keys(envSchema.shape));
    const unknown = tsFiles(join(root, 'src')).flatMap((file) => envReads(readFileSync(file, 'utf8')).filter((name) => !known.has(name)).map((name) => `${file.slice(root.length)}: ${name}`));
    expect(unknown, 'add these to src/config/env.ts').toEqual([]);
  });
});
