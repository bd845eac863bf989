/**
 * The times operators give commands and policy tests (`--from`, `--to`, `--now`, a test case's
 * `now`), read one way on every machine: an ISO 8601 date (midnight UTC, as the reports' periods
 * are) or a date and time with its zone. `Date.parse` alone would take a time without a zone in the
 * zone of the machine the command runs on, take `0` for the year 2000, and roll 2026-02-30 over to
 * March 2nd.
 */
import { GatewayError } from './errors.js';

const ISO = /^(\d{4}-\d{2}-\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?$/;

/** `value` of the option `flag` as epoch ms; INVALID_REQUEST, saying what is wrong, when it is not such a time. */
export function isoTime(flag: string, value: string): number {
  const m = ISO.exec(value);
  if (!m) {
    throw new GatewayError('INVALID_REQUEST', `${flag} ${value} is not an ISO time: give a date (2026-11-01, midnight UTC) or a date and time with its zone (2026-11-01T09:00:00Z, 2026-11-01T10:00:00+01:00)`);
  }
  const [, day, hours, minutes, seconds, zone] = m;
  if (hours !== undefined && zone === undefined) throw new GatewayError('INVALID_REQUEST', `${flag} ${value} has no time zone: add Z for UTC, or an offset such as +01:00`);
  const midnight = Date.parse(day!);
  const calendar = !Number.isNaN(midnight) && new Date(midnight).toISOString().endsWith(`${day}T00:00:00.000Z`);
  if (!calendar || Number(hours ?? 0) > 23 || Number(minutes ?? 0) > 59 || Number(seconds ?? 0) > 59) {
    throw new GatewayError('INVALID_REQUEST', `${flag} ${value} is not a day and time of the calendar`);
  }
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new GatewayError('INVALID_REQUEST', `${flag} ${value} is not a day and time of the calendar`);
  return ms;
}
