/**
 * The demo policy's API keys are published in the README: serving them on an address other
 * machines reach is refused unless --allow-demo-keys-on-network says so (issue 18 item 6).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CliError } from '../../src/cli/exit.js';
import { demoKeysIn, isLoopbackHost, refuseDemoKeysOnNetwork } from '../../src/cli/serve.js';
import { defaultPolicyPath } from '../../src/main.js';
import { loadPolicyFile, parsePolicy } from '../../src/policy/load.js';

const demo = loadPolicyFile(defaultPolicyPath());

describe('demo keys on the network', () => {
  it('finds the three published keys in the default policy', () => {
    expect(demoKeysIn(demo)).toEqual(['tg-demo-alice', 'tg-demo-bob', 'tg-demo-ops']);
  });

  it('serves them on loopback addresses only', () => {
    for (const host of ['127.0.0.1', '127.0.0.2', 'localhost', '::1', '[::1]']) expect(isLoopbackHost(host)).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'gateway.internal']) expect(isLoopbackHost(host)).toBe(false);
    expect(() => refuseDemoKeysOnNetwork(demo, '127.0.0.1', false)).not.toThrow();
  });

  it('refuses 0.0.0.0 with a usage error (exit 2) naming the keys and the flag', () => {
    let thrown: unknown;
    try {
      refuseDemoKeysOnNetwork(demo, '0.0.0.0', false);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(CliError);
    expect((thrown as CliError).exitCode).toBe(2);
    expect((thrown as CliError).message).toContain('refusing to serve on 0.0.0.0: the policy');
    expect((thrown as CliError).message).toContain('(tg-demo-alice, tg-demo-bob, tg-demo-ops)');
    expect((thrown as CliError).message).toContain('--allow-demo-keys-on-network');
  });

  it('serves them anywhere with --allow-demo-keys-on-network, and serves a policy without them anywhere', () => {
    expect(() => refuseDemoKeysOnNetwork(demo, '0.0.0.0', true)).not.toThrow();
    const own = parsePolicy('version: 1\nproviders: { demo: { kind: demo } }\ntiers: { standard: [demo/medium] }\n', 'own.yaml');
    expect(() => refuseDemoKeysOnNetwork(own, '0.0.0.0', false)).not.toThrow();
  });

  it('tollgate serve --host 0.0.0.0 on the demo policy exits 2 before listening', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--host', '0.0.0.0', '--port', '0', '--data-dir', 'none'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { PATH: process.env.PATH },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^tollgate: refusing to serve on 0\.0\.0\.0: the policy .*policy\/default\.yaml accepts the demo API keys/);
    expect(r.stderr).not.toContain('serving MCP');
  }, 90_000);
});
