#!/usr/bin/env node
/**
 * The `tollgate` command: parses the command line (src/cli/program.ts), runs the command, prints
 * what it returns and exits with one of the documented codes (src/cli/exit.ts, docs/cli.md).
 */
import { CommanderError } from 'commander';
import { StoreMismatchError } from './admin/mismatch.js';
import { ConfigFileError } from './config/file.js';
import { EnvError } from './config/env.js';
import { GatewayError } from './errors.js';
import { CliError, EXIT } from './cli/exit.js';
import { buildProgram, withDefaultCommand, type Result } from './cli/program.js';

function fail(message: string, code: number): never {
  process.stderr.write(`tollgate: ${message}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  let result: Result | undefined;
  const program = buildProgram({ result: (r) => (result = r) });
  try {
    await program.parseAsync(withDefaultCommand(argv), { from: 'user' });
  } catch (err) {
    // Commander has printed its message (and the help, for --help); only the code is left to set.
    if (err instanceof CommanderError) {
      const helped = err.code === 'commander.helpDisplayed' || err.code === 'commander.version';
      process.exit(helped ? EXIT.ok : EXIT.usage);
    }
    throw err;
  }
  if (result) {
    if (result.out) process.stdout.write(result.out);
    if (result.err) process.stderr.write(result.err);
    process.exitCode = result.code;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof CliError) fail(err.message, err.exitCode);
  if (err instanceof StoreMismatchError) fail(err.message, EXIT.mismatch);
  if (err instanceof EnvError || err instanceof ConfigFileError) fail(err.message, EXIT.usage);
  if (err instanceof GatewayError) fail(`${err.code}: ${err.message}`, EXIT.failed);
  fail(err instanceof Error ? (err.stack ?? err.message) : String(err), EXIT.failed);
});
