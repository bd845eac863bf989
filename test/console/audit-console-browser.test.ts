/**
 * Output encoding on every console page, in a real headless Chromium (Debian's, through
 * playwright-core): users, teams, cost centres, a model, a rule's message (a refusal's reason), an
 * issued key's user, an OIDC user's name, a request id in the address and the issuer's `error`
 * parameter all carry markup and script. Each page must show them as text: no element the payload
 * would make, no dialog, no global the payload sets, and no Content-Security-Policy violation
 * (which would mean markup got through and only the CSP stopped it).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { sha } from '../fixtures/policies.js';
import { startConsoleGateway, type ConsoleGateway } from '../helpers/console.js';
import { connectHttp } from '../helpers/gateway.js';
import { startTestIssuer, type TestIssuer } from '../helpers/jwks.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ADMIN_KEY = 'xss-admin-key';

/** Each payload, if it were markup, would make an element marked `data-pwned` and set `window.pwned`. */
const USER = '<img src=x data-pwned onerror="window.pwned=1;alert(1)">';
const TEAM = '"><script data-pwned>window.pwned=2</script>';
const COST_CENTRE = "'><svg data-pwned onload=window.pwned=3>";
const MODEL = 'demo/<iframe/data-pwned/src=javascript:window.top.pwned=4>';
const MESSAGE = '</pre><a data-pwned href="javascript:window.pwned=5">click</a>';
const ISSUED_USER = '<b data-pwned onmouseover=window.pwned=6>dana</b>';
const OIDC_USER = '<details data-pwned open ontoggle=window.pwned=7>';
const REQUEST_ID = '<img data-pwned src=x onerror=window.pwned=8>';
const IDP_ERROR = '<img data-pwned src=x onerror=window.pwned=9>';

/** A YAML scalar of any text (JSON strings are YAML double-quoted scalars). */
const y = (s: string) => JSON.stringify(s);

const policyText = (issuer: string) => `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [${y(MODEL)}]
defaultTier: standard
models:
  ${y(MODEL)}: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
identity:
  resource: http://127.0.0.1/mcp
  oidc:
    - issuer: ${issuer}
      audience: [http://127.0.0.1/mcp, tollgate-console]
console:
  oidc: { issuer: ${issuer}, clientId: tollgate-console }
apiKeys:
  - { id: admin, sha256: ${sha(ADMIN_KEY)}, user: root, roles: [tollgate-admin] }
  - { id: k-evil, sha256: ${sha('key-evil')}, user: ${y(USER)}, teams: [${y(TEAM)}], costCenter: ${y(COST_CENTRE)} }
budgets:
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
  - { id: team-weekly, scope: team, window: { calendar: week }, limit: { tokens: 100000 } }
rules:
  - id: no-premium
    when: "request.tier == 'premium'"
    effect: deny
    message: ${y(MESSAGE)}
`;

let browser: Browser;
let issuer: TestIssuer;
let gw: ConsoleGateway;
let work: string;
const contexts: BrowserContext[] = [];

interface Watched {
  page: Page;
  dialogs: string[];
  violations: string[];
}

async function watchedPage(): Promise<Watched> {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  const w: Watched = { page, dialogs: [], violations: [] };
  page.on('dialog', (d) => {
    w.dialogs.push(d.message());
    void d.dismiss();
  });
  page.on('console', (m) => void (m.text().includes('Content Security Policy') && w.violations.push(m.text())));
  return w;
}

/** Opens `path` and expects every payload on it inert, and `texts` shown as they are. */
async function expectInert(w: Watched, path: string, texts: string[]): Promise<void> {
  await w.page.goto(`${gw.url}${path}`);
  await w.page.waitForLoadState('load');
  const body = (await w.page.textContent('body'))!;
  for (const t of texts) expect(body, path).toContain(t);
  expect(await w.page.$$eval('[data-pwned]', (els) => els.length), path).toBe(0);
  expect(await w.page.$$eval('a[href^="javascript:" i], iframe, [onerror], [onload], [ontoggle], [onmouseover]', (els) => els.length), path).toBe(0);
  expect(await w.page.evaluate(() => (window as unknown as { pwned?: number }).pwned), path).toBeUndefined();
  expect(w.dialogs, path).toEqual([]);
  expect(w.violations, path).toEqual([]);
}

async function signIn(): Promise<Watched> {
  const w = await watchedPage();
  await w.page.goto(`${gw.url}/console/login`);
  await w.page.fill('input[name=key]', ADMIN_KEY);
  await Promise.all([w.page.waitForURL(`${gw.url}/console`), w.page.click('form.login button')]);
  return w;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-audit-xss-'));
  const dir = join(work, 'data');
  issuer = await startTestIssuer();
  const { journal, replay } = FileJournal.open({ dir });
  const store = new MemoryQuotaStore(Date.now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  gw = await startConsoleGateway(policyText(issuer.issuer), { store, dataDir: dir });
  const evil = await connectHttp(`${gw.url}/mcp`, 'key-evil');
  await evil.callTool({ name: 'complete', arguments: { prompt: 'hello' } });
  await evil.callTool({ name: 'complete', arguments: { prompt: 'hello', tier: 'premium' } }); // refused: MESSAGE
  await evil.close();
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

describe('console output encoding in a browser', () => {
  it('shows names, a model and a rule message carrying markup as text on every data page', async () => {
    const w = await signIn();
    await expectInert(w, '/console?window=month', [USER, TEAM, COST_CENTRE, MODEL]);
    await expectInert(w, '/console/budgets', [USER, TEAM]);
    await expectInert(w, '/console/refusals?window=month', [USER, MESSAGE]);
    const href = await w.page.getAttribute('#refusal-recent [data-field=request] a', 'href');
    await expectInert(w, href!, [USER, MESSAGE]);
    await expectInert(w, '/console/policy', [MODEL, MESSAGE]);
    await expectInert(w, '/console/keys', [USER, TEAM]);
  });

  it('shows an issued key whose user carries markup as text, on the page that issues it and after', async () => {
    const w = await signIn();
    await w.page.goto(`${gw.url}/console/keys`);
    await w.page.fill('form.issue input[name=user]', ISSUED_USER);
    await w.page.fill('form.issue input[name=id]', 'k-dana');
    await Promise.all([w.page.waitForNavigation(), w.page.click('form.issue button')]);
    expect(await w.page.textContent('.issued h2')).toBe(`Key k-dana issued for ${ISSUED_USER}`);
    await expectInert(w, '/console/keys', [ISSUED_USER]);
  });

  it('shows a request id carrying markup, from the address, as text on the not-found page', async () => {
    const w = await signIn();
    await expectInert(w, `/console/requests/${encodeURIComponent(REQUEST_ID)}`, [REQUEST_ID]);
    await expectInert(w, `/console/requests?id=${encodeURIComponent(REQUEST_ID)}`, [REQUEST_ID]);
  });

  it("shows the issuer's error parameter as text on the sign-in page", async () => {
    const w = await watchedPage();
    await expectInert(w, `/console/auth/callback?error=${encodeURIComponent(IDP_ERROR)}`, [IDP_ERROR]);
  });

  it('shows an OIDC user whose name carries markup as text', async () => {
    issuer.setLoginUser({ sub: OIDC_USER, realm_access: { roles: ['tollgate-viewer'] } });
    const w = await watchedPage();
    await w.page.goto(`${gw.url}/console/login`);
    await Promise.all([w.page.waitForURL(`${gw.url}/console`), w.page.click('#sso')]);
    expect(await w.page.textContent('nav .who')).toBe(`${OIDC_USER} (read-only)`);
    await expectInert(w, '/console/keys', [OIDC_USER]);
  });
});
