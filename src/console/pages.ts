/**
 * The console's pages, rendered on the server from the data of data.ts. Amounts are shown the way
 * `tollgate usage report` prints them (tokens as whole numbers, dollars with formatMicroUsd), so a
 * page and the report can be compared cell by cell. Nothing secret is rendered: keys appear by id
 * and fingerprint (the first 12 hex digits of their SHA-256), providers by name and kind, and
 * bindings not at all. The one exception is a new key's secret, on the page that issues it.
 */
import type { ReloadRecord } from '../policy/reload.js';
import type { Policy } from '../policy/load.js';
import type { StoredKey } from '../identity/storedKeys.js';
import type { ApiKeyConfig } from '../identity/config.js';
import { formatMicroUsd } from '../metering/focus.js';
import type { Decision } from '../admin/journalReader.js';
import type { ReportDimension, ReportFigures, ReportRow } from '../admin/report.js';
import { html, jsonBlock, layout, Safe, table, type Viewer } from './html.js';
import { BUDGET_SCOPES, type BudgetLine, type DayRange, type Overview, type RefusalSummary } from './data.js';

const sum = (m: Record<string, number>) => Object.values(m).reduce((a, b) => a + b, 0);
const num = (n: number, digits = 0) => (Number.isInteger(n) && digits === 0 ? String(n) : n.toFixed(digits || 2));
const codes = (m: Record<string, number>) =>
  Object.entries(m)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([c, n]) => `${c} ${n}`)
    .join(', ');

const DIMENSION_TITLES: Record<ReportDimension, string> = { 'cost-center': 'By cost centre', team: 'By team', user: 'By user', model: 'By model', tier: 'By tier' };
const ORDER: ReportDimension[] = ['cost-center', 'team', 'user', 'model', 'tier'];

function figures(f: ReportFigures): Safe {
  return html`<dl class="figures" id="totals"><div><dt>Spend (USD)</dt><dd data-field="cost">${formatMicroUsd(f.costMicroUsd)}</dd></div><div><dt>Tokens in</dt><dd data-field="input">${f.inputTokens}</dd></div><div><dt>Tokens out</dt><dd data-field="output">${f.outputTokens}</dd></div><div><dt>Calls</dt><dd data-field="calls">${f.calls}</dd></div><div><dt>Refused</dt><dd data-field="refused">${sum(f.refused)}</dd></div><div><dt>Failed</dt><dd data-field="failed">${sum(f.failed)}</dd></div></dl>`;
}

function windowPicker(range: DayRange, action: string): Safe {
  const opt = (w: string, label: string) => html`<option value="${w}"${range.window === w ? new Safe(' selected') : ''}>${label}</option>`;
  const custom = range.window === 'custom';
  const lastDay = new Date(Date.parse(`${range.end}T00:00:00Z`) - 86_400_000).toISOString().slice(0, 10);
  return html`<form method="get" action="${action}" class="picker"><label>Window <select name="window">${opt('day', 'Today')}${opt('week', 'This week')}${opt('month', 'This month')}${opt('custom', 'Custom')}</select></label><label>From <input type="date" name="from" value="${custom ? range.start : ''}"></label><label>To <input type="date" name="to" value="${custom ? lastDay : ''}"></label><button type="submit">Show</button></form><p class="range">UTC days <span id="range-start">${range.start}</span> to <span id="range-end">${lastDay}</span></p>`;
}

/** Overview: spend and tokens in the window by every dimension, and the daily trend. */
export function overviewPage(viewer: Viewer, o: Overview): string {
  const columns = [
    { head: 'calls', cell: (r: ReportRow) => r.calls, numeric: true, data: 'calls' },
    { head: 'tokens in', cell: (r: ReportRow) => r.inputTokens, numeric: true, data: 'input' },
    { head: 'tokens out', cell: (r: ReportRow) => r.outputTokens, numeric: true, data: 'output' },
    { head: 'cost USD', cell: (r: ReportRow) => formatMicroUsd(r.costMicroUsd), numeric: true, data: 'cost' },
    { head: 'refused', cell: (r: ReportRow) => (sum(r.refused) ? `${sum(r.refused)} (${codes(r.refused)})` : '0'), data: 'refused' },
    { head: 'failed', cell: (r: ReportRow) => sum(r.failed), numeric: true, data: 'failed' },
  ];
  const sections = ORDER.map(
    (dim) => html`<section><h2>${DIMENSION_TITLES[dim]}</h2>${table(`by-${dim}`, [{ head: dim === 'cost-center' ? 'cost centre' : dim, cell: (r: ReportRow) => r.key, data: 'key' }, ...columns], o.by[dim], (r) => r.key)}</section>`,
  );
  const journal = o.journal === 'none' ? html`<p class="warn">This gateway keeps no journal (an in-memory store without a data directory): there is nothing to report.</p>` : '';
  const body = html`${windowPicker(o.range, '/console')}${journal}${figures(o.total)}<section><h2>Daily trend</h2><div id="trend" class="chart" data-series="cost,tokens"></div>${jsonBlock('trend-data', o.trend)}</section>${sections}${o.notes.map((n) => html`<p class="note">${n}</p>`)}`;
  return layout('Overview', viewer, body, { current: '/console', chart: true });
}

function amount(unit: string, n: number): string {
  return unit === 'usd' ? `$${n.toFixed(6)}` : String(Math.round(n));
}

/** Budgets: every line with usage in its window, riskiest first. */
export function budgetsPage(viewer: Viewer, lines: BudgetLine[], scope: string | undefined): string {
  const opt = (s: string) => html`<option value="${s}"${scope === s ? new Safe(' selected') : ''}>${s}</option>`;
  const filter = html`<form method="get" action="/console/budgets" class="picker"><label>Scope <select name="scope"><option value="">every scope</option>${BUDGET_SCOPES.map(opt)}</select></label><button type="submit">Filter</button></form>`;
  const t = table(
    'budgets',
    [
      { head: 'budget', cell: (l: BudgetLine) => l.budgetId, data: 'budget' },
      { head: 'scope', cell: (l: BudgetLine) => l.scope, data: 'scope' },
      { head: 'subject', cell: (l: BudgetLine) => l.subject, data: 'subject' },
      { head: 'used', cell: (l: BudgetLine) => amount(l.unit, l.used), numeric: true, data: 'used' },
      { head: 'reserved', cell: (l: BudgetLine) => amount(l.unit, l.reserved), numeric: true, data: 'reserved' },
      { head: 'remaining', cell: (l: BudgetLine) => amount(l.unit, l.remaining), numeric: true, data: 'remaining' },
      { head: 'limit', cell: (l: BudgetLine) => amount(l.unit, l.limit), numeric: true, data: 'limit' },
      { head: 'resets', cell: (l: BudgetLine) => l.resetsAt, data: 'resets' },
      { head: 'burn / hour', cell: (l: BudgetLine) => (l.unit === 'usd' ? `$${l.burnPerHour.toFixed(6)}` : num(l.burnPerHour, 1)), numeric: true, data: 'burn' },
      { head: 'runs out', cell: (l: BudgetLine) => l.exhaustsAt ?? 'not before the reset', data: 'exhausts' },
      { head: 'risk', cell: (l: BudgetLine) => `${Math.round(l.risk * 100)} %`, numeric: true, data: 'risk' },
    ],
    lines,
    (l) => `${l.budgetId}|${l.subject}`,
  );
  const note = html`<p class="note">Risk is the share of the limit used, reserved and projected at the burn rate (usage per hour since the window began) until the reset. Only lines with usage in their current window are listed.</p>`;
  return layout('Budgets', viewer, html`${filter}${t}${note}`, { current: '/console/budgets' });
}

/** Refusals: who was refused, by which rule or budget, per day, and the latest refused requests. */
export function refusalsPage(viewer: Viewer, range: DayRange, r: RefusalSummary): string {
  const grouped = table(
    'refusal-groups',
    [
      { head: 'user', cell: (x: RefusalSummary['rows'][number]) => x.keys.user ?? '', data: 'user' },
      { head: 'rule', cell: (x: RefusalSummary['rows'][number]) => x.keys.rule || '-', data: 'rule' },
      { head: 'budget', cell: (x: RefusalSummary['rows'][number]) => x.keys.budget || '-', data: 'budget' },
      { head: 'code', cell: (x: RefusalSummary['rows'][number]) => x.keys.code ?? '', data: 'code' },
      { head: 'refusals', cell: (x: RefusalSummary['rows'][number]) => x.refusals, numeric: true, data: 'refusals' },
      { head: 'last', cell: (x: RefusalSummary['rows'][number]) => x.last, data: 'last' },
    ],
    r.rows,
  );
  const recent = table(
    'refusal-recent',
    [
      { head: 'time', cell: (x: RefusalSummary['recent'][number]) => x.at },
      { head: 'request', cell: (x: RefusalSummary['recent'][number]) => html`<a href="/console/requests/${encodeURIComponent(x.id)}">${x.id}</a>`, data: 'request' },
      { head: 'user', cell: (x: RefusalSummary['recent'][number]) => x.user || '-' },
      { head: 'code', cell: (x: RefusalSummary['recent'][number]) => x.code, data: 'code' },
      { head: 'rule / budget', cell: (x: RefusalSummary['recent'][number]) => x.rule || x.budget || '-' },
      { head: 'reason', cell: (x: RefusalSummary['recent'][number]) => x.reason },
    ],
    r.recent,
  );
  const lookup = html`<form method="get" action="/console/requests" class="picker"><label>Request id <input name="id" required></label><button type="submit">Open</button></form>`;
  const body = html`${windowPicker(range, '/console/refusals')}<p id="refusal-total">${r.total} refused call${r.total === 1 ? '' : 's'}</p><section><h2>Per day</h2><div id="refusal-trend" class="chart" data-series="refusals"></div>${jsonBlock('refusal-data', r.perDay)}</section><section><h2>By user, rule, budget and code</h2>${grouped}</section><section><h2>Latest refused requests</h2>${lookup}${recent}</section>${r.notes.map((n) => html`<p class="note">${n}</p>`)}`;
  return layout('Refusals', viewer, body, { current: '/console/refusals', chart: true });
}

/** One request's decision event and the `explain` output for the same call. */
export function requestPage(viewer: Viewer, d: Decision, explanation: string | undefined, explainError?: string): string {
  const explain = explanation
    ? html`<pre id="explain">${explanation}</pre>`
    : html`<p class="note" id="explain">${explainError ?? 'The caller was not identified, so there is no call to explain.'}</p>`;
  const body = html`<p>Committed ${new Date(d.at).toISOString()}${d.kind ? ` in a ${d.kind} entry` : ''}.</p><section><h2>Decision event</h2><pre id="event">${JSON.stringify(d.event, null, 2)}</pre></section><section><h2>Explain (the same call under the policy and usage of now)</h2>${explain}</section>`;
  return layout(`Request ${d.event['request.id']}`, viewer, body, { current: '/console/refusals' });
}

const fingerprint = (sha256: string) => sha256.slice(0, 12);

/** Keys: the policy's keys (read-only) and the issued ones, with issue and revoke for read-write admins. */
export function keysPage(viewer: Viewer, policyKeys: ApiKeyConfig[], issued: StoredKey[] | undefined, message?: Safe): string {
  const canWrite = viewer.role === 'read-write';
  const declared = table(
    'policy-keys',
    [
      { head: 'id', cell: (k: ApiKeyConfig) => k.id, data: 'id' },
      { head: 'fingerprint', cell: (k: ApiKeyConfig) => fingerprint(k.sha256), data: 'fingerprint' },
      { head: 'user', cell: (k: ApiKeyConfig) => k.user },
      { head: 'teams', cell: (k: ApiKeyConfig) => k.teams.join(', ') },
      { head: 'roles', cell: (k: ApiKeyConfig) => k.roles.join(', ') },
      { head: 'state', cell: (k: ApiKeyConfig) => (k.disabled ? 'disabled' : 'active') },
    ],
    policyKeys,
    (k) => k.id,
  );
  const revoke = (k: StoredKey) =>
    k.revokedAt
      ? `revoked ${k.revokedAt}`
      : canWrite
        ? html`<form method="post" action="/console/keys/${encodeURIComponent(k.id)}/revoke"><input type="hidden" name="_csrf" value="${viewer.csrf}"><button type="submit" class="danger">Revoke</button></form>`
        : 'active';
  const issuedTable = issued
    ? table(
        'issued-keys',
        [
          { head: 'id', cell: (k: StoredKey) => k.id, data: 'id' },
          { head: 'fingerprint', cell: (k: StoredKey) => fingerprint(k.sha256), data: 'fingerprint' },
          { head: 'user', cell: (k: StoredKey) => k.user, data: 'user' },
          { head: 'teams', cell: (k: StoredKey) => k.teams.join(', ') },
          { head: 'cost centre', cell: (k: StoredKey) => k.costCenter ?? '' },
          { head: 'roles', cell: (k: StoredKey) => k.roles.join(', ') },
          { head: 'created', cell: (k: StoredKey) => k.createdAt },
          { head: 'state', cell: revoke, data: 'state' },
        ],
        issued,
        (k) => k.id,
      )
    : html`<p class="warn">This gateway has nowhere to keep issued keys (no Redis and no data directory).</p>`;
  const form =
    canWrite && issued
      ? html`<section><h2>Issue a key</h2><form method="post" action="/console/keys" class="issue"><input type="hidden" name="_csrf" value="${viewer.csrf}"><label>User <input name="user" required></label><label>Id (optional) <input name="id"></label><label>Teams <input name="teams" placeholder="a,b"></label><label>Cost centre <input name="costCenter"></label><label>Groups <input name="groups"></label><label>Roles <input name="roles"></label><button type="submit">Issue</button></form></section>`
      : '';
  const body = html`${message ?? ''}<section><h2>Issued keys</h2>${issuedTable}</section>${form}<section><h2>Keys declared in the policy</h2>${declared}<p class="note">Declared keys change with the policy file; only their ids and fingerprints are shown.</p></section>`;
  return layout('Keys', viewer, body, { current: '/console/keys' });
}

/** The page that shows a new key's secret, once. */
export function issuedKeyMessage(key: string, record: StoredKey): Safe {
  return html`<section class="issued"><h2>Key ${record.id} issued for ${record.user}</h2><p>Copy the key now: it is shown this once and tollgate keeps only its SHA-256.</p><p><code id="new-key">${key}</code></p><p>Fingerprint <code>${fingerprint(record.sha256)}</code></p></section>`;
}

/** A reload's outcome for the history table: the versions, what a refusal found, whose count a reload started afresh, what it removed. */
function reloadOutcome(r: ReloadRecord): string {
  if (r.status !== 'reloaded') return `refused, ${r.oldVersion} kept: ${(r.issues ?? []).map((i) => `${i.path ? `${i.path}: ` : ''}${i.message}`).join('; ')}`;
  const changed = (r.windowChanges ?? []).map((c) => `${'budget' in c ? `budget ${c.budget}` : `rate limit ${c.rateLimit}`}: ${c.from} → ${c.to}`);
  const removed = (r.removed ?? []).map((c) => ('budget' in c ? `budget ${c.budget}` : `rate limit ${c.rateLimit}`));
  return `${r.oldVersion} → ${r.newVersion}${changed.length > 0 ? `; counted afresh: ${changed.join('; ')}` : ''}${removed.length > 0 ? `; removed: ${removed.join(', ')}` : ''}`;
}

/** Policy: the version serving, its tiers, budgets and rules, and the reload history. */
export function policyPage(viewer: Viewer, policy: Policy, startedWith: { version: string; at: string }, reloads: ReloadRecord[] | undefined): string {
  const c = policy.config;
  const tiers = table(
    'tiers',
    [
      { head: 'tier', cell: (t: string) => (t === policy.defaultTier ? `${t} (default)` : t), data: 'tier' },
      {
        head: 'models, in order (USD per million tokens in / out)',
        cell: (t: string) =>
          policy
            .tierModels.get(t)!
            .map((m) => `${m.ref} (${m.price.inputPerMTok} / ${m.price.outputPerMTok})`)
            .join(', '),
      },
    ],
    [...policy.tiers],
    (t) => t,
  );
  const window = (w: (typeof c.budgets)[number]['window']) => ('calendar' in w ? `calendar ${w.calendar} (${w.timezone})` : `rolling ${w.rolling.days ? `${w.rolling.days} d` : ''}${w.rolling.hours ? ` ${w.rolling.hours} h` : ''} in ${w.buckets} buckets`);
  const budgets = table(
    'policy-budgets',
    [
      { head: 'budget', cell: (b: (typeof c.budgets)[number]) => b.id, data: 'budget' },
      { head: 'scope', cell: (b: (typeof c.budgets)[number]) => b.scope },
      { head: 'limit', cell: (b: (typeof c.budgets)[number]) => ('tokens' in b.limit ? `${b.limit.tokens} tokens` : `$${b.limit.usd}`) },
      { head: 'window', cell: (b: (typeof c.budgets)[number]) => window(b.window) },
      { head: 'tier down', cell: (b: (typeof c.budgets)[number]) => (b.tierDown ? `below ${b.tierDown.below} %` : '-') },
      { head: 'applies when', cell: (b: (typeof c.budgets)[number]) => b.when ?? 'always' },
      { head: 'tiers', cell: (b: (typeof c.budgets)[number]) => b.tiers?.join(', ') ?? 'every tier' },
      { head: 'store down', cell: (b: (typeof c.budgets)[number]) => b.failMode },
    ],
    [...c.budgets],
    (b) => b.id,
  );
  const rules = table(
    'policy-rules',
    [
      { head: 'rule', cell: (r: (typeof c.rules)[number]) => r.id, data: 'rule' },
      { head: 'when', cell: (r: (typeof c.rules)[number]) => html`<code>${r.when}</code>` },
      { head: 'effect', cell: (r: (typeof c.rules)[number]) => (r.effect === 'cap_tier' ? `cap tier at ${r.tier}` : r.effect) },
      { head: 'message', cell: (r: (typeof c.rules)[number]) => r.message ?? r.description ?? '' },
    ],
    [...c.rules],
    (r) => r.id,
  );
  const providers = table(
    'providers',
    [
      { head: 'provider', cell: (p: [string, { kind: string }]) => p[0] },
      { head: 'kind', cell: (p: [string, { kind: string }]) => p[1].kind },
    ],
    Object.entries(c.providers) as [string, { kind: string }][],
  );
  const history = reloads
    ? table(
        'reloads',
        [
          { head: 'time', cell: (r: ReloadRecord) => r.at },
          { head: 'trigger', cell: (r: ReloadRecord) => r.trigger },
          { head: 'outcome', cell: reloadOutcome, data: 'outcome' },
        ],
        [...reloads].reverse(),
      )
    : html`<p class="note">This gateway does not watch its policy file (--no-watch), so it is never reloaded.</p>`;
  const body = html`<dl class="figures"><div><dt>Version</dt><dd id="policy-version">${policy.version}</dd></div><div><dt>Name</dt><dd>${c.name}</dd></div><div><dt>File</dt><dd>${policy.source}</dd></div><div><dt>Serving since start</dt><dd>${startedWith.version} at ${startedWith.at}</dd></div></dl><section><h2>Tiers</h2>${tiers}</section><section><h2>Budgets</h2>${budgets}</section><section><h2>Rules (first match wins)</h2>${rules}</section><section><h2>Providers</h2>${providers}</section><section><h2>Reload history</h2>${history}</section>`;
  return layout('Policy', viewer, body, { current: '/console/policy' });
}

/** The sign-in page: an admin API key, or the OIDC issuer when one is configured. */
export function loginPage(csrf: string, sso: boolean, problem?: string): string {
  const error = problem ? html`<p class="error" id="login-error">${problem}</p>` : '';
  const oidc = sso ? html`<p><a class="button" id="sso" href="/console/login/oidc">Sign in with single sign-on</a></p>` : '';
  const body = html`${error}${oidc}<form method="post" action="/console/login" class="login"><input type="hidden" name="_csrf" value="${csrf}"><label>Admin API key <input type="password" name="key" autocomplete="off" required></label><button type="submit">Sign in</button></form>`;
  return layout('Sign in', undefined, body);
}

const ERROR_TITLES: Record<number, string> = { 400: 'Bad request', 401: 'Sign-in needed', 403: 'Not allowed', 404: 'Not found' };

/** A refusal or failure as a page: its code and message. */
export function errorPage(viewer: Viewer | undefined, status: number, code: string, message: string): string {
  return layout(ERROR_TITLES[status] ?? 'Something went wrong', viewer, html`<p class="error" id="error-code">${code}</p><p id="error-message">${message}</p>`);
}
