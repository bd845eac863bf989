/**
 * The times the reading commands take (`--from`, `--to`, `--now`) mean one instant on every
 * machine: a date is midnight UTC, a date and time must carry its zone, and what is not a day of
 * the calendar is refused as a bad value (INVALID_REQUEST, exit 2) rather than read as something
 * else. The events file holds one call, at 2026-11-25T10:00:00Z.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import { GatewayError } from '../../src/errors.js';

let work: string;
let events: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-audit-times-'));
  events = join(work, 'events.jsonl');
  const call = {
    event: 'tollgate.decision',
    'request.id': 'r1',
    time: '2026-11-25T10:00:00.000Z',
    outcome: 'success',
    'user.id': 'alice',
    'tollgate.model.served': 'demo/medium',
    'tollgate.tier.served': 'standard',
    'gen_ai.provider.name': 'demo',
    'gen_ai.usage.input_tokens': 3,
    'gen_ai.usage.output_tokens': 4,
    'tollgate.cost_usd': 0.0001,
    'tollgate.charged': [{ budget: 'b', subject: 'alice', amount: 7, unit: 'tokens' }],
  };
  writeFileSync(events, `${JSON.stringify(call)}\n`);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const exported = (from: string, to: string) => usageCommand('export', { from, to, events: [events] }, [], {});

/** The error a command is refused with. */
async function refusal(run: Promise<unknown>): Promise<GatewayError> {
  const err = await run.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('INVALID_REQUEST');
  return err as GatewayError;
}

describe('usage export --from/--to', () => {
  it('refuses a time without a zone, which each machine would read in its own', async () => {
    const err = await refusal(exported('2026-11-25T09:00:00', '2026-11-26'));
    expect(err.message).toBe('--from 2026-11-25T09:00:00 has no time zone: add Z for UTC, or an offset such as +01:00');
  });

  it('refuses what is not an ISO time, such as 0 (which Date.parse takes for the year 2000)', async () => {
    const err = await refusal(exported('2026-11-01', '0'));
    expect(err.message).toBe('--to 0 is not an ISO time: give a date (2026-11-01, midnight UTC) or a date and time with its zone (2026-11-01T09:00:00Z, 2026-11-01T10:00:00+01:00)');
  });

  it('refuses a day that is not in the calendar rather than rolling it over (2026-02-30 is not March 2nd)', async () => {
    const err = await refusal(exported('2026-02-30', '2026-12-01'));
    expect(err.message).toBe('--from 2026-02-30 is not a day and time of the calendar');
    expect((await refusal(exported('2026-11-25T24:00:00Z', '2026-12-01'))).message).toBe('--from 2026-11-25T24:00:00Z is not a day and time of the calendar');
  });

  it('refuses --from after --to, naming both', async () => {
    const err = await refusal(exported('2026-12-01', '2026-11-01'));
    expect(err.message).toBe('--from and --to must be ISO times with --from before --to, got 2026-12-01 and 2026-11-01');
  });

  it('reads an offset as its instant: 11:00+01:00 is the call\'s 10:00 UTC', async () => {
    const csv = await exported('2026-11-25T11:00:00+01:00', '2026-11-25T11:00:00.001+01:00');
    // The row's period is the part of the day inside the window asked for.
    expect(csv.split('\n')[1]).toBe('2026-11-25T10:00:00.000Z,2026-11-25T10:00:00.001Z,alice,,,demo,demo/medium,standard,1,3,4,0,0.000100');
    expect(await exported('2026-11-25T10:00:00.001Z', '2026-11-26')).toBe('period_start,period_end,user,teams,cost_center,provider,model,tier,requests,input_tokens,output_tokens,cached_input_tokens,cost_usd\n');
  });

  it('takes a range reaching far into the future', async () => {
    expect((await exported('2026-11-25', '9999-12-31')).split('\n')).toHaveLength(3);
  });
});

describe('usage report and refusals --from/--to, usage show --now', () => {
  it('refuses a time without a zone in usage report and usage refusals', async () => {
    expect((await refusal(usageCommand('report', { to: '2026-11-26T00:00', events: [events] }, [], {}))).message).toBe('--to 2026-11-26T00:00 has no time zone: add Z for UTC, or an offset such as +01:00');
    expect((await refusal(usageCommand('refusals', { from: 'Nov 25 2026', to: '2026-11-26', events: [events] }, [], {}))).message).toMatch(/^--from Nov 25 2026 is not an ISO time/);
  });

  it('refuses a --now without a zone before it opens the store', async () => {
    const err = await refusal(usageCommand('show', { redis: 'redis://127.0.0.1:1', now: '2026-11-25T12:00:00' }, [], {}));
    expect(err.message).toBe('--now 2026-11-25T12:00:00 has no time zone: add Z for UTC, or an offset such as +01:00');
  });
});
