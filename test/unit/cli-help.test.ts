/**
 * Every command and subcommand of `tollgate` answers --help with exit 0. The list comes from the
 * commander program itself, so a command added later is covered without editing this file.
 */
import { spawnSync } from 'node:child_process';
import { Command, CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram, withDefaultCommand } from '../../src/cli/program.js';

/** Every command path under `cmd`, e.g. ['usage', 'export']. */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return cmd.commands.flatMap((c) => [[...prefix, c.name()], ...commandPaths(c, [...prefix, c.name()])]);
}

/** Runs `argv` in-process; returns what commander printed and the code it ended with. */
async function runInProcess(argv: string[]): Promise<{ out: string; err: string; code: string; exitCode: number }> {
  let out = '';
  let err = '';
  const program = buildProgram({ result: () => {} }, {});
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) c.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (err += s) });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return { out, err, code: e.code, exitCode: e.exitCode };
    throw e;
  }
  return { out, err, code: 'ran', exitCode: 0 };
}

const paths = commandPaths(buildProgram({ result: () => {} }, {}));

describe('tollgate --help', () => {
  it('knows the commands the issue lists', () => {
    const names = paths.map((p) => p.join(' '));
    for (const expected of ['serve', 'stdio', 'check', 'explain', 'test-policy', 'usage show', 'usage top', 'usage export', 'usage report', 'usage refusals', 'keys issue', 'keys list', 'keys revoke', 'audit verify']) {
      expect(names).toContain(expected);
    }
  });

  it.each(paths.map((p) => [p.join(' '), p]))('tollgate %s --help prints its usage and exits 0', async (_name, path) => {
    const r = await runInProcess([...path, '--help']);
    expect(r.code).toBe('commander.helpDisplayed');
    expect(r.exitCode).toBe(0);
    expect(r.out).toContain(`Usage: tollgate ${path.join(' ')}`);
    expect(r.err).toBe('');
  });

  it('suggests the command meant for a typo and fails as a usage error', async () => {
    const r = await runInProcess(['usgae', 'show']);
    expect(r.code).toBe('commander.unknownCommand');
    expect(r.err).toContain("error: unknown command 'usgae'\n(Did you mean usage?)");
  });

  it('suggests the option meant for a typo', async () => {
    const r = await runInProcess(['usage', 'export', '--form', '2026-11-01']);
    expect(r.code).toBe('commander.unknownOption');
    expect(r.err).toContain("error: unknown option '--form'\n(Did you mean --from?)");
  });

  it('serves when given options only, and on stdio with the older --stdio', () => {
    expect(withDefaultCommand([])).toEqual(['serve']);
    expect(withDefaultCommand(['--port', '0'])).toEqual(['serve', '--port', '0']);
    expect(withDefaultCommand(['--stdio', '--policy', 'p.yaml'])).toEqual(['stdio', '--policy', 'p.yaml']);
    expect(withDefaultCommand(['--help'])).toEqual(['--help']);
    expect(withDefaultCommand(['check', 'p.yaml'])).toEqual(['check', 'p.yaml']);
    expect(withDefaultCommand(['--config', 'c.yaml', '--port', '0'])).toEqual(['serve', '--config', 'c.yaml', '--port', '0']);
  });

  it('runs the command that follows the global --config, rather than serving', async () => {
    expect(withDefaultCommand(['--config', 'c.yaml', 'check'])).toEqual(['--config', 'c.yaml', 'check']);
    expect(withDefaultCommand(['--config=c.yaml', 'check'])).toEqual(['--config=c.yaml', 'check']);
    // check runs, with the configuration file given: it is the one to say the file is missing.
    await expect(runInProcess(['--config', 'no-such-config.yaml', 'check', 'policy/default.yaml'])).rejects.toThrow('no-such-config.yaml: no such file (given by --config)');
  });
});

describe('the tollgate process', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { encoding: 'utf8', timeout: 60_000, env: { PATH: process.env.PATH } });

  it('exits 0 with the help of usage export and of keys (once "Unknown option --help", exit 2)', () => {
    const exp = run('usage', 'export', '--help');
    expect(exp.status).toBe(0);
    expect(exp.stdout).toContain('Usage: tollgate usage export [options] [event-files...]');
    const keys = run('keys', '--help');
    expect(keys.status).toBe(0);
    expect(keys.stdout).toContain('issue [options]');
  });

  it('exits 2 on a bad option value of a usage command, as on any other command line fault', () => {
    const r = run('usage', 'report', '--by', 'nope', '--data-dir', 'none');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('tollgate: INVALID_REQUEST: --by must be one of team, cost-center, user, model, tier, got nope');
  });

  it('exits 2 on an unknown command, naming the closest one', () => {
    const r = run('sevre');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('(Did you mean serve?)');
  });
});
