/**
 * The exit codes of `tollgate`, one meaning each (docs/cli.md lists them), and the error a command
 * throws to end with one of them.
 */
export const EXIT = {
  /** Done; for `check`, `test-policy` and `audit verify`: everything passed. */
  ok: 0,
  /** The command ran and found a failure: invalid policy, failed policy test, audit fault, a call refused, a store or gateway error. */
  failed: 1,
  /** The command line or configuration is wrong: unknown command or option, bad value, bad environment variable or config file, a setting refused as unsafe. */
  usage: 2,
  /** `tollgate stdio`: the caller's credential was refused at start. */
  credential: 3,
  /** The store holds data the policy does not describe (another deployment's policy or store). */
  mismatch: 4,
} as const;

/** Ends the command with `message` on stderr and `code`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.usage,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
