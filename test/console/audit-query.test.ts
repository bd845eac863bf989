/**
 * The console's data pages given query parameters they cannot honour: a day the calendar does not
 * have, a budget scope that does not exist, a filter the page does not take, a parameter given
 * twice. Each is a 400 `INVALID_REQUEST` naming what is wrong, never a page that quietly shows
 * other figures than the ones asked for; the parameters the pages' own forms send still work.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha } from '../fixtures/policies.js';
import { startConsoleGateway, type ConsoleGateway } from '../helpers/console.js';

const POLICY = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
defaultTier: standard
apiKeys:
  - { id: admin, sha256: ${sha('admin-key')}, user: root, roles: [tollgate-admin] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
`;

let gw: ConsoleGateway;
let cookie: string;

/** Signs in through the login form with the admin key; returns the session cookie. */
async function signIn(): Promise<string> {
  const page = await fetch(`${gw.url}/console/login`);
  const pre = page.headers.get('set-cookie')!.split(';')[0]!;
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
  const res = await fetch(`${gw.url}/console/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: pre, origin: gw.url, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: csrf, key: 'admin-key' }),
  });
  expect(res.status).toBe(303);
  return res.headers.get('set-cookie')!.split(';')[0]!;
}

/** A console page as the signed-in admin: its status, and the code and message of an error page. */
async function get(path: string): Promise<{ status: number; code?: string; message?: string }> {
  const res = await fetch(`${gw.url}${path}`, { headers: { cookie }, redirect: 'manual' });
  const m = /id="error-code">([^<]*)<\/p><p id="error-message">([^<]*)<\/p>/.exec(await res.text());
  return m ? { status: res.status, code: m[1], message: m[2]!.replace(/&#39;/g, "'") } : { status: res.status };
}

beforeAll(async () => {
  gw = await startConsoleGateway(POLICY, { now: () => Date.parse('2026-03-02T10:00:00.000Z') });
  cookie = await signIn();
});

afterAll(async () => {
  await gw?.close();
});

describe('console query parameters', () => {
  it('refuses a custom window starting on a day the calendar does not have', async () => {
    expect(await get('/console?window=custom&from=2026-02-31&to=2026-03-01')).toEqual({
      status: 400,
      code: 'INVALID_REQUEST',
      message: 'A custom window needs from and to, as YYYY-MM-DD days of the calendar, with from on or before to.',
    });
  });

  it('refuses a custom window ending on a day the calendar does not have', async () => {
    expect(await get('/console/refusals?window=custom&from=2026-02-01&to=2026-02-30')).toMatchObject({ status: 400, code: 'INVALID_REQUEST' });
  });

  it('refuses a budget scope that does not exist instead of listing no budget', async () => {
    expect(await get('/console/budgets?scope=cost-center')).toEqual({
      status: 400,
      code: 'INVALID_REQUEST',
      message: 'The scope must be one of user, team, costCenter, application, global, got cost-center.',
    });
  });

  it('refuses a filter the page does not take instead of showing every caller', async () => {
    expect(await get('/console?window=month&team=platform')).toEqual({
      status: 400,
      code: 'INVALID_REQUEST',
      message: 'This page takes no parameter team (it takes window, from, to).',
    });
    expect(await get('/console/budgets?user=alice')).toMatchObject({ status: 400, code: 'INVALID_REQUEST', message: 'This page takes no parameter user (it takes scope).' });
    // Found by a probe: these pages showed everything to a filter they do not take.
    for (const path of ['/console/keys?user=bob', '/console/policy?team=data', '/console/requests/some-id?team=data']) {
      expect(await get(path), path).toMatchObject({ status: 400, code: 'INVALID_REQUEST', message: expect.stringMatching(/^This page takes no parameter (user|team) \(it takes none\)\.$/) });
    }
  });

  it('refuses a parameter given twice or as a structure', async () => {
    expect(await get('/console?window=day&window=month')).toEqual({ status: 400, code: 'INVALID_REQUEST', message: 'The parameter window must be given once, as plain text.' });
    expect(await get('/console/requests?id=a&id=b')).toMatchObject({ status: 400, code: 'INVALID_REQUEST' });
    expect(await get('/console/budgets?scope[user]=alice')).toMatchObject({ status: 400, code: 'INVALID_REQUEST', message: 'This page takes no parameter scope[user] (it takes scope).' });
  });

  it('offers every scope a budget may have in the budgets filter', async () => {
    const page = await (await fetch(`${gw.url}/console/budgets`, { headers: { cookie } })).text();
    expect([...page.matchAll(/<option value="([^"]*)"/g)].map((m) => m[1])).toEqual(['', 'user', 'team', 'costCenter', 'application', 'global']);
  });

  it('still shows the pages for what their own forms send', async () => {
    for (const path of [
      '/console',
      '/console?window=week&from=&to=',
      '/console?window=custom&from=2026-02-28&to=2026-03-01',
      '/console?window=custom&from=2024-02-29&to=2024-02-29',
      '/console/refusals?window=month&from=&to=',
      '/console/budgets?scope=',
      '/console/budgets?scope=costCenter',
      '/console/budgets?scope=application',
      '/console/keys',
      '/console/policy',
    ]) {
      expect((await get(path)).status, path).toBe(200);
    }
    expect((await get('/console/requests?id=abc')).status).toBe(303);
  });

  it('answers HEAD as GET without a body, signed in or not (a safe method needs no CSRF token)', async () => {
    const head = await fetch(`${gw.url}/console/budgets`, { method: 'HEAD', headers: { cookie }, redirect: 'manual' });
    expect([head.status, head.headers.get('content-type'), await head.text()]).toEqual([200, 'text/html; charset=utf-8', '']);
    const anonymous = await fetch(`${gw.url}/console/budgets`, { method: 'HEAD', redirect: 'manual' });
    expect([anonymous.status, anonymous.headers.get('location')]).toEqual([303, '/console/login']);
  });
});
