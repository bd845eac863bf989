/**
 * `audit` and `keys` end a wrong command line with exit 2, as every other command does: exit 1 from
 * `audit verify` means the journal failed its audit, and a mistyped directory must not read as that.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CliError } from '../../src/cli/exit.js';
import { buildProgram, type Result } from '../../src/cli/program.js';

/** Runs `args` as the tollgate command line; the CliError it ends with, or its result. */
async function run(args: string[]): Promise<CliError | Result | undefined> {
  let result: Result | undefined;
  const program = buildProgram({ result: (r) => (result = r) }, {});
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (err) {
    if (err instanceof CliError) return err;
    throw err;
  }
  return result;
}

const exitOf = (r: CliError | Result | undefined) => (r instanceof CliError ? r.exitCode : r?.code);

describe('usage errors of audit and keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-exits-'));

  it('audit verify with both --data-dir and --redis exits 2', async () => {
    expect(exitOf(await run(['audit', 'verify', '--data-dir', dir, '--redis', 'redis://127.0.0.1:1']))).toBe(2);
  });

  it('keys issue without --user, with an id tollgate does not take, and revoke of an unknown id exit 2', async () => {
    const noUser = await run(['keys', 'issue', '--data-dir', dir]);
    expect(exitOf(noUser)).toBe(2);
    expect((noUser as CliError).message).toMatch(/^INVALID_REQUEST: usage: tollgate keys issue/);
    expect(exitOf(await run(['keys', 'issue', '--data-dir', dir, '--user', 'ada', '--id', 'bad id']))).toBe(2);
    expect(exitOf(await run(['keys', 'revoke', '--data-dir', dir, '--id', 'nope']))).toBe(2);
  });

  it('hash-key refuses a key an HTTP client cannot send as it hashes it (outside printable ASCII, or with a space), exit 2', async () => {
    for (const key of ['clé-secrète-123', 'key with space', 'tab\tkey', '']) {
      const r = await run(['hash-key', key]);
      expect(exitOf(r)).toBe(2);
      expect((r as CliError).message).toMatch(/^INVALID_REQUEST: /);
    }
    const ok = await run(['hash-key', 'sk-Ab0_~!']);
    expect(exitOf(ok)).toBe(0);
    expect((ok as Result).out).toMatch(/^[0-9a-f]{64}\n$/);
  });

  it('explain ends every bad command-line value with exit 2, and takes numbers in decimal only', async () => {
    const as = '{"user":"ada"}';
    for (const args of [
      ['--as', as, '--usage', 'employee-weekly=abc'],
      ['--as', as, '--usage', 'employee-weekly=0x10'],
      ['--as', as, '--usage', 'employee-weekly=1e3'],
      ['--as', '{"user":1}'],
      ['--as', 'not json {'],
      ['--as', as, '--max-tokens', '1e3'],
      ['--as', as, '--max-tokens', '0x10'],
    ]) {
      const r = await run(['explain', ...args]);
      expect([args.join(' '), exitOf(r)]).toEqual([args.join(' '), 2]);
    }
    expect(exitOf(await run(['explain', '--as', as, '--max-tokens', '100', '--usage', 'employee-weekly=12.5']))).toBe(0);
  });

  it('a command that runs still ends as it did: keys list exits 0', async () => {
    expect(exitOf(await run(['keys', 'list', '--data-dir', dir]))).toBe(0);
  });
});
