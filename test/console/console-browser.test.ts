/**
 * The console driven in a real headless Chromium (Debian's, through playwright-core): signing in
 * with an admin API key and through the OIDC issuer (code + PKCE), the overview's numbers against
 * `tollgate usage report` and the ledger, a key issued (its secret shown once) and revoked (the next
 * call with it refused), CSRF and read-only refusals, the Content-Security-Policy, and no secret on
 * any page. One browser for the file; each test has its own context (its own cookies).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runUsageCommand } from '../../src/admin/cli.js';
import { journalDecisions, journalLines } from '../../src/admin/journalReader.js';
import type { UsageReport } from '../../src/admin/report.js';
import { formatMicroUsd } from '../../src/metering/focus.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { sha } from '../fixtures/policies.js';
import { startConsoleGateway, type ConsoleGateway } from '../helpers/console.js';
import { connectHttp } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ADMIN_KEY = 'admin-secret-key-1';
const VIEWER_KEY = 'viewer-secret-key-2';

const policyText = (issuer: string) => `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
defaultTier: standard
identity:
  resource: http://127.0.0.1/mcp
  oidc:
    - issuer: ${issuer}
      audience: [http://127.0.0.1/mcp, tollgate-console]
console:
  oidc: { issuer: ${issuer}, clientId: tollgate-console }
apiKeys:
  - { id: admin, sha256: ${sha(ADMIN_KEY)}, user: root, roles: [tollgate-admin] }
  - { id: viewer, sha256: ${sha(VIEWER_KEY)}, user: auditor, roles: [tollgate-viewer] }
  - { id: k-alice, sha256: ${sha('key-alice')}, user: alice, teams: [platform], costCenter: cc-1 }
  - { id: k-bob, sha256: ${sha('key-bob')}, user: bob, teams: [data], costCenter: cc-2, groups: [contractors] }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
  - { id: all-usd, scope: global, window: { calendar: month }, limit: { usd: 100 } }
rules:
  - id: contractors-no-premium
    when: "'contractors' in principal.groups && request.tier == 'premium'"
    effect: deny
    message: Contractors may use standard models only.
`;

let browser: Browser;
let issuer: TestIssuer;
let gw: ConsoleGateway;
let work: string;
let dir: string;
const contexts: BrowserContext[] = [];

async function newPage(): Promise<Page> {
  const context = await browser.newContext();
  contexts.push(context);
  return context.newPage();
}

/** Signs in through the login form with an API key; returns the page, on the overview when it worked. */
async function signIn(key: string): Promise<Page> {
  const page = await newPage();
  await page.goto(`${gw.url}/console`);
  expect(new URL(page.url()).pathname).toBe('/console/login');
  await page.fill('input[name=key]', key);
  await Promise.all([page.waitForNavigation(), page.click('form.login button')]);
  return page;
}

let policyEnv: NodeJS.ProcessEnv = {};

/** The console entries of the journal. */
const consoleActions = () => [...journalLines(dir)].flatMap((l) => ('entry' in l && l.entry.body.kind === 'console' ? [l.entry.body.action!] : []));

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-console-browser-'));
  dir = join(work, 'data');
  issuer = await startTestIssuer();
  const { journal, replay } = FileJournal.open({ dir });
  const store = new MemoryQuotaStore(Date.now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  gw = await startConsoleGateway(policyText(issuer.issuer), { store, dataDir: dir });
  // The usage commands read the journal through the policy that wrote it.
  writeFileSync(join(work, 'policy.yaml'), policyText(issuer.issuer));
  policyEnv = { TOLLGATE_POLICY: join(work, 'policy.yaml') };
  const alice = await connectHttp(`${gw.url}/mcp`, 'key-alice');
  const bob = await connectHttp(`${gw.url}/mcp`, 'key-bob');
  await alice.callTool({ name: 'complete', arguments: { prompt: 'hello there' } });
  await alice.callTool({ name: 'complete', arguments: { prompt: 'a premium question', tier: 'premium' } });
  await bob.callTool({ name: 'complete', arguments: { prompt: 'hi' } });
  await bob.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'premium' } }); // refused by the rule
  await alice.close();
  await bob.close();
  await gw.runtime.gateway.idle();
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (.ci/run does)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
}, 60_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await gw?.close();
  await issuer?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('the console in a browser', () => {
  it('signs in with an admin API key and shows the overview numbers usage report prints and the ledger charged', async () => {
    const page = await signIn(ADMIN_KEY);
    const violations: string[] = [];
    page.on('console', (m) => void (m.text().includes('Content Security Policy') && violations.push(m.text())));
    const response = await page.goto(`${gw.url}/console?window=month`);
    expect(response!.headers()['content-security-policy']).toContain("script-src 'self'");
    expect(await page.textContent('nav .who')).toBe('root (read-write)');
    // The chart script ran under the CSP and uPlot drew a canvas.
    await page.waitForSelector('html[data-charts=drawn] #trend canvas');
    expect(violations).toEqual([]);

    const month = new Date().toISOString().slice(0, 7);
    const nextMonth = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1)).toISOString();
    for (const by of ['user', 'team', 'cost-center', 'model', 'tier'] as const) {
      const report = JSON.parse(await runUsageCommand(['report', '--data-dir', dir, '--by', by, '--window', 'month', '--from', `${month}-01T00:00:00Z`, '--to', nextMonth, '--format', 'json'], policyEnv)) as UsageReport;
      const shown = await page.$$eval(`#by-${by} tbody tr`, (rows) =>
        rows.map((r) => Object.fromEntries([...r.querySelectorAll('td[data-field]')].map((td) => [td.getAttribute('data-field'), td.textContent]))),
      );
      const printed = report.rows.map((r) => ({ key: r.key, calls: String(r.calls), input: String(r.inputTokens), output: String(r.outputTokens), cost: formatMicroUsd(r.costMicroUsd) }));
      const pick = (r: Record<string, string | null>) => ({ key: r.key, calls: r.calls, input: r.input, output: r.output, cost: r.cost });
      expect(shown.map(pick).sort((a, b) => (a.key! < b.key! ? -1 : 1)), by).toEqual(printed.sort((a, b) => (a.key < b.key ? -1 : 1)));
    }
    // The total spend is what the ledger charged the global dollar budget every call pays into.
    const charged = [...journalDecisions(dir)].flatMap((d) => d.charges).filter((c) => c.budgetId === 'all-usd').reduce((n, c) => n + c.amount, 0);
    expect(charged).toBeGreaterThan(0);
    expect(await page.textContent('#totals [data-field=cost]')).toBe(formatMicroUsd(charged));
    expect(await page.textContent('#totals [data-field=calls]')).toBe('4');
    expect(await page.textContent('#totals [data-field=refused]')).toBe('1');
  });

  it('signs in through the OIDC issuer with the authorization code flow and PKCE', async () => {
    issuer.setLoginUser({ sub: 'carol', realm_access: { roles: ['tollgate-viewer'] } });
    const page = await newPage();
    await page.goto(`${gw.url}/console/login`);
    await Promise.all([page.waitForURL(`${gw.url}/console`), page.click('#sso')]);
    expect(await page.textContent('nav .who')).toBe('carol (read-only)');
    const [asked] = issuer.flow.authorize.slice(-1);
    expect(asked).toMatchObject({ response_type: 'code', client_id: 'tollgate-console', code_challenge_method: 'S256', redirect_uri: `${gw.url}/console/auth/callback` });
    expect(asked!.code_challenge).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(issuer.flow.token.slice(-1)[0]).toMatchObject({ status: 200, params: { grant_type: 'authorization_code', client_id: 'tollgate-console' } });
    expect(consoleActions().filter((a) => a.action === 'login' && a.user === 'carol')).toEqual([expect.objectContaining({ outcome: 'ok', via: 'oidc', role: 'read-only' })]);
  });

  it('refuses an OIDC user without a console role', async () => {
    issuer.setLoginUser({ sub: 'mallory', realm_access: { roles: ['employee'] } });
    const page = await newPage();
    await page.goto(`${gw.url}/console/login`);
    await Promise.all([page.waitForURL(/\/console\/auth\/callback/), page.click('#sso')]);
    expect(await page.textContent('#login-error')).toContain('FORBIDDEN');
    await page.goto(`${gw.url}/console`);
    expect(new URL(page.url()).pathname).toBe('/console/login');
  });

  it('issues a key, shows its secret once, and revokes it so that the next call with it is refused', async () => {
    const page = await signIn(ADMIN_KEY);
    await page.goto(`${gw.url}/console/keys`);
    await page.fill('form.issue input[name=user]', 'dana');
    await page.fill('form.issue input[name=id]', 'k-dana');
    await page.fill('form.issue input[name=teams]', 'data');
    await Promise.all([page.waitForNavigation(), page.click('form.issue button')]);
    const secret = (await page.textContent('#new-key'))!;
    expect(secret).toMatch(/^tg_/);
    const dana = await connectHttp(`${gw.url}/mcp`, secret);
    await dana.callTool({ name: 'complete', arguments: { prompt: 'hello' } });
    await dana.close();

    await page.goto(`${gw.url}/console/keys`);
    expect(await page.content()).not.toContain(secret);
    expect(await page.textContent('#issued-keys tr[data-key=k-dana] [data-field=fingerprint]')).toBe(sha(secret).slice(0, 12));
    await Promise.all([page.waitForNavigation(), page.click('#issued-keys tr[data-key=k-dana] button')]);
    expect(await page.textContent('#issued-keys tr[data-key=k-dana] [data-field=state]')).toMatch(/^revoked /);
    await expect(connectHttp(`${gw.url}/mcp`, secret)).rejects.toThrow(/401|AUTH_INVALID|not recognised/);
    const actions = consoleActions().filter((a) => a.action === 'key_issue' || a.action === 'key_revoke');
    expect(actions.map((a) => `${a.action} ${a.outcome} ${a.keyId}`)).toEqual(['key_issue requested k-dana', 'key_issue ok k-dana', 'key_revoke requested k-dana', 'key_revoke ok k-dana']);
  });

  it('refuses a POST without the CSRF token, or from another origin', async () => {
    const page = await signIn(ADMIN_KEY);
    const api = page.context().request;
    const before = (await page.context().request.get(`${gw.url}/console/keys`)).status();
    expect(before).toBe(200);
    const bare = await api.post(`${gw.url}/console/keys`, { form: { user: 'eve' }, maxRedirects: 0 });
    expect(bare.status()).toBe(403);
    expect(await bare.text()).toContain('CSRF');
    await page.goto(`${gw.url}/console/keys`);
    const csrf = (await page.getAttribute('form.issue input[name=_csrf]', 'value'))!;
    const foreign = await api.post(`${gw.url}/console/keys`, { form: { user: 'eve', _csrf: csrf }, headers: { origin: 'http://evil.example' }, maxRedirects: 0 });
    expect(foreign.status()).toBe(403);
    expect((await gw.runtime.gateway.keyRegistry!.list()).map((k) => k.user)).not.toContain('eve');
    expect(consoleActions().filter((a) => a.action === 'refused' && a.path === '/console/keys').length).toBe(2);
  });

  it('lets a read-only admin read every page but not issue or revoke', async () => {
    const page = await signIn(VIEWER_KEY);
    expect(await page.textContent('nav .who')).toBe('auditor (read-only)');
    await page.goto(`${gw.url}/console/keys`);
    expect(await page.$('form.issue')).toBeNull();
    expect(await page.$('#issued-keys button')).toBeNull();
    const csrf = (await page.getAttribute('nav form input[name=_csrf]', 'value'))!;
    const res = await page.context().request.post(`${gw.url}/console/keys`, { form: { user: 'eve', _csrf: csrf }, maxRedirects: 0 });
    expect(res.status()).toBe(403);
    expect(await res.text()).toContain('read-only');
    const revoke = await page.context().request.post(`${gw.url}/console/keys/k-dana/revoke`, { form: { _csrf: csrf }, maxRedirects: 0 });
    expect(revoke.status()).toBe(403);
  });

  it('refuses a caller who holds no admin role with 403', async () => {
    const page = await newPage();
    await page.goto(`${gw.url}/console/login`);
    await page.fill('input[name=key]', 'key-alice');
    const [response] = await Promise.all([page.waitForNavigation(), page.click('form.login button')]);
    expect(response!.status()).toBe(403);
    expect(await page.textContent('#login-error')).toContain('FORBIDDEN');
  });

  it('opens a refused request with its decision event and explain output, and shows no secret on any page', async () => {
    const page = await signIn(ADMIN_KEY);
    await page.goto(`${gw.url}/console/refusals?window=month`);
    const month = new Date().toISOString().slice(0, 7);
    const refusals = JSON.parse(await runUsageCommand(['refusals', '--data-dir', dir, '--from', `${month}-01T00:00:00Z`, '--to', new Date(Date.now() + 86_400_000).toISOString(), '--format', 'json'], policyEnv)) as { total: number };
    expect(await page.textContent('#refusal-total')).toBe(`${refusals.total} refused call${refusals.total === 1 ? '' : 's'}`);
    expect(await page.$$eval('#refusal-groups [data-field=rule]', (cells) => cells.map((c) => c.textContent))).toContain('contractors-no-premium');
    const row = page.locator('#refusal-recent tbody tr', { has: page.locator('[data-field=code]', { hasText: 'POLICY_DENIED' }) });
    await Promise.all([page.waitForNavigation(), row.locator('[data-field=request] a').click()]);
    const event = JSON.parse((await page.textContent('#event'))!) as Record<string, unknown>;
    expect(event).toMatchObject({ 'user.id': 'bob', outcome: 'refused', 'error.code': 'POLICY_DENIED', 'policy.rule_id': 'contractors-no-premium' });
    expect(await page.textContent('#explain')).toContain('contractors-no-premium');
    for (const path of ['/console', '/console/budgets', '/console/refusals', '/console/keys', '/console/policy', new URL(page.url()).pathname]) {
      await page.goto(`${gw.url}${path}`);
      const text = await page.content();
      for (const secret of [ADMIN_KEY, VIEWER_KEY, 'key-alice', 'key-bob']) expect(text, path).not.toContain(secret);
    }
  });
});
