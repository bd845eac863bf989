/**
 * CEL expressions in the policy (`rules[].when`, `budgets[].when`). Parsed once at load so a
 * syntax error fails start-up with its path; evaluated per call against plain data.
 */
import { parse } from '@marcbachmann/cel-js';

export type CelPredicate = (vars: Record<string, unknown>) => boolean;

/** Parses `source`; throws an Error whose message points at the offending character. */
export function compilePredicate(source: string): CelPredicate {
  const program = parse(source);
  return (vars) => {
    const out = program(vars);
    if (typeof out !== 'boolean') throw new Error(`expression returned ${typeof out}, not a boolean`);
    return out;
  };
}
