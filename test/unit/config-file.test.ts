/**
 * One configuration for every command: a flag, else the environment, else tollgate.yaml.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigFileError, withConfigFile } from '../../src/config/file.js';
import { settingsWith } from '../../src/cli/serve.js';
import { parseEnv } from '../../src/config/env.js';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-config-'));
writeFileSync(join(dir, 'tollgate.yaml'), 'policy: policies/team.yaml\ndataDir: data\nport: 9000\nenv:\n  TOLLGATE_MAX_BODY_BYTES: 2048\n');

describe('tollgate.yaml', () => {
  it('is read from the working directory, its paths relative to it', () => {
    const { env, file } = withConfigFile({}, undefined, dir);
    expect(file).toBe(join(dir, 'tollgate.yaml'));
    expect(env).toMatchObject({ TOLLGATE_POLICY: join(dir, 'policies/team.yaml'), TOLLGATE_DATA_DIR: join(dir, 'data'), TOLLGATE_PORT: '9000', TOLLGATE_MAX_BODY_BYTES: '2048' });
  });

  it('gives way to the environment, and the environment to a flag', () => {
    const { env } = withConfigFile({ TOLLGATE_PORT: '7000' }, undefined, dir);
    expect(settingsWith({}, parseEnv(env)).http.port).toBe(7000);
    expect(settingsWith({ port: '6000' }, parseEnv(env)).http.port).toBe(6000);
    expect(settingsWith({}, parseEnv(env)).policyPath).toBe(join(dir, 'policies/team.yaml'));
    expect(settingsWith({ policy: '/srv/p.yaml' }, parseEnv(env)).policyPath).toBe('/srv/p.yaml');
  });

  it('names an unknown key with the closest known one', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'polcy: p.yaml\n');
    expect(() => withConfigFile({}, bad, dir)).toThrow(new ConfigFileError(bad, ['unknown key polcy; did you mean policy?; known: policy, dataDir, redis, redisClusterNodes, keyPrefix, host, port, events, workers, logLevel, env']));
  });

  it('refuses under env a variable with a key of its own, and TOLLGATE_CONFIG, which would be read otherwise than the file says', () => {
    const bad = join(dir, 'env-keys.yaml');
    writeFileSync(bad, 'policy: p.yaml\nenv:\n  TOLLGATE_POLICY: other.yaml\n  TOLLGATE_DATA_DIR: data\n  TOLLGATE_CONFIG: more.yaml\n');
    expect(() => withConfigFile({}, bad, dir)).toThrow(
      new ConfigFileError(bad, [
        'env.TOLLGATE_POLICY: set it with the key policy (a path there is relative to this file)',
        'env.TOLLGATE_DATA_DIR: set it with the key dataDir (a path there is relative to this file)',
        'env.TOLLGATE_CONFIG: a configuration file cannot name another; give it with --config or TOLLGATE_CONFIG',
      ]),
    );
  });

  it('refuses a file named by --config or TOLLGATE_CONFIG that does not exist', () => {
    expect(() => withConfigFile({ TOLLGATE_CONFIG: 'nope.yaml' }, undefined, dir)).toThrow('no such file (given by TOLLGATE_CONFIG)');
  });

  it('is not required', () => {
    const empty = mkdtempSync(join(tmpdir(), 'tollgate-noconfig-'));
    expect(withConfigFile({ A: '1' }, undefined, empty)).toEqual({ env: { A: '1' } });
  });
});
