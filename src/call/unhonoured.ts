/**
 * Fields of a provider's request that tollgate does not pass on. The compatible endpoints refuse
 * such a field (400, naming it) whenever dropping it would change what the caller gets or pays
 * for; a value that changes nothing (a sampling parameter at its default, `store: false`) is taken
 * as if it were absent.
 */
import { GatewayError } from '../errors.js';

/** The values of a field that change nothing, so are taken as absent (null and an empty list always are). */
export type Neutral = (value: unknown) => boolean;

/** No value of the field can be dropped unnoticed. */
export const never: Neutral = () => false;

/** Only this value is what tollgate does anyway. */
export const only =
  (expected: unknown): Neutral =>
  (value) =>
    value === expected;

/** An object with no field set, e.g. `logit_bias: {}`. */
export const unset: Neutral = (value) =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => v === undefined || v === null);

/**
 * The first field of `fields` that `body` sets to a value tollgate would drop with a difference:
 * present, not null, not an empty list (SDKs send `tools: []`), not a neutral value.
 */
export function unhonouredField(body: Record<string, unknown>, fields: Readonly<Record<string, Neutral>>): string | undefined {
  // The body's few keys looked up in the table, rather than the table's many in the body: this runs on every call.
  for (const key in body) {
    if (!Object.hasOwn(body, key) || !Object.hasOwn(fields, key)) continue;
    const v = body[key];
    if (v === undefined || v === null || (Array.isArray(v) && v.length === 0) || fields[key]!(v)) continue;
    return key;
  }
  return undefined;
}

/**
 * Refuses the first field of `object` (at `path` in the body) that tollgate would drop with a
 * difference, as INVALID_REQUEST naming it; `refusal` makes the error in the wire's own way (the
 * OpenAI endpoints also name the field as `param`).
 */
export function refuseUnhonoured(
  object: Record<string, unknown>,
  fields: Readonly<Record<string, Neutral>>,
  path = '',
  refusal: (message: string, param: string) => GatewayError = (message) => new GatewayError('INVALID_REQUEST', message),
): void {
  const key = unhonouredField(object, fields);
  if (key !== undefined) throw refusal(`Invalid request: ${path}${key} is not supported by tollgate.`, `${path}${key}`);
}
