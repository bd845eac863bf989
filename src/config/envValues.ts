/**
 * The kinds of value an environment variable of tollgate holds, as zod schemas over the raw string.
 * Each refuses a bad value with one message saying what is expected ("a whole number of seconds
 * ≥ 1"), which the error of `parseEnv` puts after the variable's name and value.
 */
import { z } from 'zod';

/** What the table in docs/environment.md says of one variable. */
export interface EnvMeta {
  /** The kind of value, as an operator would read it, e.g. `integer ≥ 1 (seconds)`. */
  type: string;
  /** Used when the variable is unset or empty, written as it would be in the environment. */
  default?: string;
  /** What leaving the variable unset means when it has no default value. */
  unset?: string;
  description: string;
  /** The value is a credential (or may hold one), so an error never repeats it. */
  secret?: boolean;
}

/** Holds the metadata of every variable of the env schema. */
export const envRegistry = z.registry<EnvMeta>();

/**
 * An integer from `min` to `max`, in decimal digits only (no sign, no exponent); `what` names it in
 * the error, e.g. `whole number of seconds`.
 */
export function wholeNumber(what: string, min: number, max?: number) {
  const expected = max === undefined ? `a ${what} ≥ ${min}` : `a ${what} from ${min} to ${max}`;
  return z
    .string()
    .regex(/^\d+$/, expected)
    .transform(Number)
    .refine((n) => Number.isSafeInteger(n) && n >= min && n <= (max ?? Number.MAX_SAFE_INTEGER), expected);
}

/** One of a fixed set of words. */
export function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, `one of ${values.join(', ')}`);
}

/** `0`/`false` or `1`/`true`. */
export function flag() {
  return z.enum(['0', '1', 'false', 'true'], '0, 1, false or true').transform((v) => v === '1' || v === 'true');
}

/** Any text of at least `min` characters. */
export function text(min = 1, expected = `at least ${min} character${min === 1 ? '' : 's'}`) {
  return z.string().min(min, expected);
}

/** Splits a comma-separated list, dropping blanks; at least one item. */
function items(raw: string): readonly string[] {
  return Object.freeze(raw.split(',').map((s) => s.trim()).filter(Boolean));
}

/** A comma-separated list of at least one item. */
export function list(expected = 'a comma-separated list of at least one item') {
  return z.string().transform(items).refine((l) => l.length > 0, expected);
}

function hasProtocol(value: string, protocols: readonly string[]): boolean {
  try {
    return protocols.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

const describeProtocols = (protocols: readonly string[]) => protocols.map((p) => `${p}//`).join(' or ');

/** A URL with one of `protocols` (written with the colon, as `URL.protocol` gives them). */
export function url(protocols: readonly string[]) {
  return z.string().refine((v) => hasProtocol(v, protocols), `a ${describeProtocols(protocols)} URL`);
}

/** A comma-separated list of URLs, each with one of `protocols`. */
export function urlList(protocols: readonly string[]) {
  const expected = `a comma-separated list of ${describeProtocols(protocols)} URLs`;
  return z.string().transform(items).refine((l) => l.length > 0 && l.every((u) => hasProtocol(u, protocols)), expected);
}

/** A whole number from 1 to `max`, or `auto`. */
export function countOrAuto(what: string, max: number) {
  const expected = `a ${what} from 1 to ${max}, or auto`;
  return z.union([z.literal('auto'), wholeNumber(what, 1, max)], expected);
}
