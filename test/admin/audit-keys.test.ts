/**
 * `tollgate keys` with what an operator may mistype or be handed: names holding control
 * characters (an escape sequence the terminal would run, a tab or a line break that splits the
 * listing) are refused at issue and shown escaped by `keys list`; an unknown key id is named; a
 * key revoked twice says it already was. Keys live in keys.jsonl in a data directory.
 */
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keysCommand, type KeysValues } from '../../src/admin/keys.js';
import { GatewayError } from '../../src/errors.js';

let dir: string;
const keys = (verb: string, values: KeysValues) => keysCommand(verb, { 'data-dir': dir, ...values }, {});

async function refusal(run: Promise<unknown>): Promise<string> {
  const err = await run.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('INVALID_REQUEST');
  return (err as GatewayError).message;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-keys-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('keys issue', () => {
  it('refuses a user holding an escape sequence, naming the character', async () => {
    expect(await refusal(keys('issue', { user: 'eve\u001b[2J' }))).toBe('--user "eve\\x1b[2J" holds a control character (\\x1b): names are printed in listings, reports and logs');
    expect(await keys('list', {})).toBe('no issued keys\n');
  });

  it('refuses a team, cost centre, group or role holding a tab or a line break', async () => {
    expect(await refusal(keys('issue', { user: 'ada', teams: 'core,da\nta' }))).toBe('--teams "da\\x0ata" holds a control character (\\x0a): names are printed in listings, reports and logs');
    expect(await refusal(keys('issue', { user: 'ada', 'cost-center': 'cc\t1' }))).toMatch(/^--cost-center "cc\\x091" holds a control character/);
    expect(await refusal(keys('issue', { user: 'ada', groups: 'g\rh' }))).toMatch(/^--groups "g\\x0dh" holds a control character/);
    expect(await refusal(keys('issue', { user: 'ada', roles: 'admin\u0085' }))).toMatch(/^--roles "admin\\x85" holds a control character/);
  });

  it('refuses a name holding a bidirectional override, and a blank one', async () => {
    expect(await refusal(keys('issue', { user: 'eve\u202egnp.exe' }))).toBe('--user "eve\\u202egnp.exe" holds a control character (\\u202e): names are printed in listings, reports and logs');
    expect(await refusal(keys('issue', { user: ' ' }))).toBe('--user is blank: a name must hold more than spaces');
    expect(await keys('list', {})).toBe('no issued keys\n');
  });

  it("refuses an id the policy's own keys use, which listings, the console and revoke could not tell apart", async () => {
    // The embedded default policy declares demo-alice.
    expect(await refusal(keys('issue', { user: 'mallory', id: 'demo-alice' }))).toBe('The policy declares an API key with id "demo-alice"; choose another id.');
    expect(await keys('list', {})).toBe('no issued keys\n');
  });

  it('issues a key to names a spreadsheet would run, which the CSV writers neutralise', async () => {
    const issued = JSON.parse(await keys('issue', { user: '=HYPERLINK("x")', teams: '+data,@ops', json: true })) as { user: string; teams: string[] };
    expect([issued.user, issued.teams]).toEqual(['=HYPERLINK("x")', ['+data', '@ops']]);
  });
});

describe('keys list', () => {
  it('shows control characters of a record written before they were refused as escapes, one line per key', async () => {
    const record = { op: 'issue', id: 'k1', sha256: 'a'.repeat(64), user: 'eve\u001b[2J\tx', teams: ['a\nb'], groups: [], roles: [], disabled: false, createdAt: '2026-11-25T10:00:00.000Z' };
    appendFileSync(join(dir, 'keys.jsonl'), `${JSON.stringify(record)}\n`);
    expect(await keys('list', {})).toBe('k1\teve\\x1b[2J\\x09x\tteams=a\\x0ab\tcostCenter=-\tactive\n');
  });
});

describe('keys revoke', () => {
  it('names an unknown key id', async () => {
    expect(await refusal(keys('revoke', { id: 'nope' }))).toBe('No issued key with id "nope".');
  });

  it('says a key revoked twice was already revoked, with the time of the first revocation', async () => {
    await keys('issue', { user: 'ada', id: 'k1' });
    const first = await keys('revoke', { id: 'k1' });
    const at = /at (\S+);/.exec(first)![1]!;
    expect(first).toBe(`revoked k1 (ada) at ${at}; the gateway serving from ${dir} refuses it within seconds\n`);
    await new Promise((r) => setTimeout(r, 5));
    expect(await keys('revoke', { id: 'k1' })).toBe(`k1 (ada) was already revoked at ${at}\n`);
  });
});
