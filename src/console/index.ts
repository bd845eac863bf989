/**
 * The web console at /console, served by the gateway's own HTTP server (mounted by the CLI through
 * startHttp's operator routes). Pages are rendered on the server (pages.ts) from the journal and
 * the live ledger (data.ts); the only scripts are two static files (ours and uPlot's, from the
 * package), so the Content-Security-Policy allows no inline script or style at all.
 *
 * Every request to /console is either a sign-in step or needs a session (session.ts), not signed
 * out, whose role is read again from the policy serving now (access.ts). Every action is journaled
 * as a `console` entry: page views, sign-ins (refused ones too, with who tried), sign-outs, key
 * issues and revocations, and refusals (no CSRF token, a read-only admin trying to act). A mutating
 * action is journaled before it is carried out, and refused when the journal cannot take it. Every
 * POST needs the session's CSRF token and, when the browser sends one, an Origin of the console's
 * own.
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import { checkIssue, type IssueRequest } from '../identity/storedKeys.js';
import type { ReloadRecord } from '../policy/reload.js';
import { markRecorded } from '../http/edgeRefusals.js';
import { packageRoot } from '../main.js';
import { admitApiKey, admitIdToken, consoleEnabled, sessionRole, type Admission, type ConsoleRole } from './access.js';
import { budgetLines, explainDecision, findDecision, overview, rangeOf, refusals, type ConsoleSources } from './data.js';
import type { Viewer } from './html.js';
import { checkIdToken, redeemCode, startLogin, type PendingLogin, FLOW_TTL_MS } from './oidc.js';
import { budgetsPage, errorPage, issuedKeyMessage, keysPage, loginPage, overviewPage, policyPage, refusalsPage, requestPage } from './pages.js';
import { CookieSigner, cookiesOf, EndedSessions, LOGIN_COOKIE, newNonce, OIDC_COOKIE, SESSION_COOKIE, setCookie, type ConsoleSession } from './session.js';

export interface ConsoleOptions {
  gateway: Gateway;
  /** The address the server binds: the console is off by default away from loopback (access.ts). */
  host: string;
  keyPrefix: string;
  /** The embedded store's journal directory, when the gateway keeps one. */
  dataDir?: string;
  /** Signs sign-in cookies; shared by replicas (TOLLGATE_SESSION_SECRET) so each accepts the others'. */
  sessionSecret?: string;
  /** The policy reloader's history, when the policy file is watched. */
  reloads?: () => ReloadRecord[];
  now?: () => number;
}

/** The Content-Security-Policy of every console response: our own files only, no inline code, no framing. */
export const CONSOLE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const require = createRequire(import.meta.url);
const ASSETS: Record<string, { file: string; type: string }> = {
  'console.js': { file: join(packageRoot(), 'assets', 'console', 'console.js'), type: 'text/javascript; charset=utf-8' },
  'console.css': { file: join(packageRoot(), 'assets', 'console', 'console.css'), type: 'text/css; charset=utf-8' },
  'uPlot.iife.min.js': { file: require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

interface Signed {
  session: ConsoleSession;
  role: ConsoleRole;
  viewer: Viewer;
}

type Locals = { console?: Signed };

/** The console's routes, all under /console. */
export function consoleRoutes(opts: ConsoleOptions): RequestHandler {
  const { gateway } = opts;
  const now = opts.now ?? Date.now;
  const signer = new CookieSigner(opts.sessionSecret);
  const ended = new EndedSessions();
  const src: ConsoleSources = { gateway, keyPrefix: opts.keyPrefix, dataDir: opts.dataDir, now };
  const startedWith = { version: gateway.policy.version, at: new Date(now()).toISOString() };
  const router = express.Router();
  const form = express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 20 });

  /** Journals one console action; resolves false when the journal could not take it. */
  const journal = async (req: Request, action: Record<string, unknown>): Promise<boolean> => {
    const s = (req.res?.locals as Locals | undefined)?.console;
    const who = s ? { user: s.session.user, role: s.role, via: s.session.via, ...(s.session.keyId ? { keyId: s.session.keyId } : {}) } : {};
    try {
      await gateway.store.recordAction?.(`console:${randomUUID()}`, { ...who, method: req.method, path: req.originalUrl.split('?')[0], ...action });
      return true;
    } catch {
      return false;
    }
  };
  const secure = (req: Request) => req.protocol === 'https' || (gateway.policy.config.console.publicUrl ?? '').startsWith('https:');
  const ownOrigin = (req: Request) => gateway.policy.config.console.publicUrl?.replace(/\/$/, '') ?? `${req.protocol}://${req.headers.host ?? ''}`;

  const refuse = async (req: Request, res: Response, err: GatewayError, record = true) => {
    if (record) await journal(req, { action: 'refused', outcome: 'refused', code: err.code, detail: err.message });
    markRecorded(res);
    res.status(err.status).type('html').send(errorPage((res.locals as Locals).console?.viewer, err.status, err.code, err.message));
  };

  router.use('/console', (req: Request, res: Response, next: NextFunction) => {
    // Off: as if there were no console (the gateway's own 404, recorded like any unknown path).
    if (!consoleEnabled(gateway.policy, opts.host)) return next('router');
    res.set({
      'Content-Security-Policy': CONSOLE_CSP,
      'X-Content-Type-Options': 'nosniff',
      // same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on the console's own form posts.
      'Referrer-Policy': 'same-origin',
      'X-Frame-Options': 'DENY',
      'Cache-Control': 'no-store',
    });
    next();
  });

  router.get('/console/assets/:name', (req, res) => {
    const asset = Object.hasOwn(ASSETS, req.params.name!) ? ASSETS[req.params.name!] : undefined;
    if (!asset) return void refuse(req, res, new GatewayError('NOT_FOUND', 'No such console file.'), false);
    res.set('Cache-Control', 'public, max-age=3600').type(asset.type).sendFile(asset.file);
  });

  // ---- sign-in -------------------------------------------------------------------------------

  router.get('/console/login', (req, res) => {
    const nonce = newNonce();
    setCookie(res, LOGIN_COOKIE, nonce, { maxAge: 3600, sameSite: 'Strict', secure: secure(req) });
    res.type('html').send(loginPage(signer.csrfToken(`login:${nonce}`), gateway.policy.config.console.oidc !== undefined));
  });

  const signIn = async (req: Request, res: Response, a: Admission, via: ConsoleSession['via']) => {
    const minutes = gateway.policy.config.console.sessionMinutes;
    const session: ConsoleSession = { user: a.principal.user, via, roles: a.principal.roles, expiresAt: now() + minutes * 60_000, nonce: newNonce() };
    if (via === 'api_key') {
      session.keyId = a.principal.credentialId;
      session.keyFingerprint = a.keyFingerprint;
    } else session.issuer = a.principal.credentialId;
    (res.locals as Locals).console = { session, role: a.role, viewer: { user: session.user, role: a.role, csrf: '' } };
    await journal(req, { action: 'login', outcome: 'ok' });
    setCookie(res, SESSION_COOKIE, signer.seal('session', session), { maxAge: minutes * 60, sameSite: 'Lax', secure: secure(req) });
    res.redirect(303, '/console');
  };

  /**
   * A refused sign-in, journaled with who tried as far as it is known: how, the request id the
   * identity pipeline's decision event carries, and the user and key or issuer of a credential it
   * proved (an admin role or the key's place in the policy is what was missing).
   */
  const loginRefused = async (req: Request, res: Response, err: unknown, attempt: { via: ConsoleSession['via']; requestId?: string }) => {
    const e = err instanceof GatewayError ? err : new GatewayError('INTERNAL', 'The sign-in failed; see the gateway log.');
    const who = Object.fromEntries(['user', 'keyId', 'issuer'].flatMap((k) => (typeof e.details[k] === 'string' ? [[k, e.details[k]]] : [])));
    await journal(req, { action: 'login', outcome: 'refused', code: e.code, detail: e.message, ...attempt, ...who });
    markRecorded(res);
    const nonce = newNonce();
    setCookie(res, LOGIN_COOKIE, nonce, { maxAge: 3600, sameSite: 'Strict', secure: secure(req) });
    res.status(e.status).type('html').send(loginPage(signer.csrfToken(`login:${nonce}`), gateway.policy.config.console.oidc !== undefined, `${e.code}: ${e.message}`));
  };

  router.post('/console/login', form, async (req, res) => {
    const nonce = cookiesOf(req)[LOGIN_COOKIE];
    if (!sameOrigin(req, ownOrigin(req)) || !nonce || !signer.checkCsrf(`login:${nonce}`, req.body?._csrf)) {
      return refuse(req, res, new GatewayError('FORBIDDEN', 'The sign-in form is stale or was not sent from this console (CSRF check); load the sign-in page again.'));
    }
    const key = typeof req.body?.key === 'string' ? req.body.key.trim() : '';
    const requestId = randomUUID();
    try {
      if (!key) throw new GatewayError('AUTH_REQUIRED', 'Give an admin API key.');
      await signIn(req, res, await admitApiKey(gateway, key, requestId), 'api_key');
    } catch (err) {
      await loginRefused(req, res, err, { via: 'api_key', requestId });
    }
  });

  router.get('/console/login/oidc', async (req, res) => {
    const oidc = gateway.policy.config.console.oidc;
    if (!oidc) return refuse(req, res, new GatewayError('NOT_FOUND', 'No OIDC sign-in is configured (console.oidc).'));
    try {
      const { location, pending } = await startLogin(oidc, `${ownOrigin(req)}/console/auth/callback`, now());
      setCookie(res, OIDC_COOKIE, signer.seal('oidc', pending), { maxAge: FLOW_TTL_MS / 1000, sameSite: 'Lax', secure: secure(req) });
      res.redirect(302, location);
    } catch (err) {
      await loginRefused(req, res, err, { via: 'oidc' });
    }
  });

  router.get('/console/auth/callback', async (req, res) => {
    const oidc = gateway.policy.config.console.oidc;
    const pending = signer.open<PendingLogin>('oidc', cookiesOf(req)[OIDC_COOKIE]);
    setCookie(res, OIDC_COOKIE, '', { maxAge: 0, sameSite: 'Lax', secure: secure(req) });
    const requestId = randomUUID();
    try {
      if (!oidc) throw new GatewayError('NOT_FOUND', 'No OIDC sign-in is configured (console.oidc).');
      if (typeof req.query.error === 'string') throw new GatewayError('AUTH_INVALID', `The issuer refused the sign-in: ${req.query.error}.`);
      const { code, state } = req.query;
      if (!pending || pending.expiresAt <= now() || pending.issuer !== oidc.issuer || typeof state !== 'string' || state !== pending.state) {
        throw new GatewayError('AUTH_INVALID', 'This sign-in was not started here, or took too long; start it again.');
      }
      if (typeof code !== 'string' || !code) throw new GatewayError('AUTH_INVALID', 'The issuer sent no authorization code.');
      const idToken = await redeemCode(oidc, pending, code, now());
      checkIdToken(idToken, oidc, pending);
      await signIn(req, res, await admitIdToken(gateway, idToken, requestId), 'oidc');
    } catch (err) {
      await loginRefused(req, res, err, { via: 'oidc', requestId });
    }
  });

  // ---- everything else needs a session -------------------------------------------------------

  router.use('/console', (req: Request, res: Response, next: NextFunction) => {
    const session = signer.open<ConsoleSession>('session', cookiesOf(req)[SESSION_COOKIE]);
    const role = session && !ended.has(session) ? sessionRole(gateway.policy, session, now()) : undefined;
    // A session the policy no longer grants a role (its role removed, its key replaced) is ended,
    // not only refused: putting the role back does not let the same cookie in again.
    if (session && !role && session.expiresAt > now() && !ended.has(session)) ended.end(session, now());
    // HEAD is a GET without its body (express serves it from the GET routes): safe, no token.
    const safe = req.method === 'GET' || req.method === 'HEAD';
    if (!session || !role) {
      if (safe) return void res.redirect(303, '/console/login');
      return void refuse(req, res, new GatewayError('AUTH_REQUIRED', 'Sign in to the console first.'));
    }
    (res.locals as Locals).console = { session, role, viewer: { user: session.user, role, csrf: signer.csrfToken(session.nonce) } };
    if (safe) return next();
    // Every POST: the session's CSRF token, and an Origin of our own when the browser names one.
    form(req, res, () => {
      if (!sameOrigin(req, ownOrigin(req)) || !signer.checkCsrf(session.nonce, req.body?._csrf)) {
        return void refuse(req, res, new GatewayError('FORBIDDEN', 'This action was not sent from a console page (missing or wrong CSRF token, or another origin).'));
      }
      next();
    });
  });

  const view = (render: (req: Request, s: Signed) => Promise<string>): RequestHandler =>
    async function consoleView(req, res) {
      const s = (res.locals as Locals).console!;
      try {
        const page = await render(req, s);
        await journal(req, { action: 'view', outcome: 'ok' });
        res.type('html').send(page);
      } catch (err) {
        const e = err instanceof GatewayError ? err : new GatewayError('INTERNAL', 'The page could not be built; see the gateway log.', {}, { cause: err });
        await refuse(req, res, e);
      }
    };

  router.get(
    '/console',
    view(async (req, s) => {
      const q = queryOf(req, ['window', 'from', 'to']);
      return overviewPage(s.viewer, await overview(src, rangeOf(q.window, now(), q.from, q.to)));
    }),
  );
  router.get(
    '/console/budgets',
    view(async (req, s) => {
      const { scope } = queryOf(req, ['scope']);
      return budgetsPage(s.viewer, await budgetLines(src, scope), scope);
    }),
  );
  router.get(
    '/console/refusals',
    view(async (req, s) => {
      const q = queryOf(req, ['window', 'from', 'to']);
      const range = rangeOf(q.window, now(), q.from, q.to);
      return refusalsPage(s.viewer, range, await refusals(src, range));
    }),
  );
  router.get('/console/requests', (req, res) => {
    let id: string | undefined;
    try {
      id = queryOf(req, ['id']).id;
    } catch (err) {
      return void refuse(req, res, err as GatewayError);
    }
    res.redirect(303, id ? `/console/requests/${encodeURIComponent(id)}` : '/console/refusals');
  });
  router.get(
    '/console/requests/:id',
    view(async (req, s) => {
      queryOf(req, []);
      const d = await findDecision(src, String(req.params.id));
      if (!d) throw new GatewayError('NOT_FOUND', `The journal holds no decision for request ${req.params.id}.`);
      const policy = gateway.policy;
      try {
        return requestPage(s.viewer, d, await explainDecision(src, policy, d.event));
      } catch (err) {
        return requestPage(s.viewer, d, undefined, `explain could not describe this call under the current policy: ${(err as Error).message}`);
      }
    }),
  );
  router.get(
    '/console/keys',
    view(async (req, s) => {
      queryOf(req, []);
      return keysPage(s.viewer, [...gateway.policy.apiKeys.values()], await gateway.keyRegistry?.list());
    }),
  );
  router.get(
    '/console/policy',
    view(async (req, s) => {
      queryOf(req, []);
      return policyPage(s.viewer, gateway.policy, startedWith, opts.reloads?.());
    }),
  );

  // ---- actions -------------------------------------------------------------------------------

  router.post('/console/logout', async (req, res) => {
    ended.end((res.locals as Locals).console!.session, now());
    await journal(req, { action: 'logout', outcome: 'ok' });
    setCookie(res, SESSION_COOKIE, '', { maxAge: 0, sameSite: 'Lax', secure: secure(req) });
    res.redirect(303, '/console/login');
  });

  /** A read-write action: refused for a read-only admin; journaled before it is carried out. */
  const act = (name: string, detail: (req: Request) => Record<string, unknown>, run: (req: Request, res: Response, s: Signed) => Promise<void>): RequestHandler =>
    async function consoleAction(req, res) {
      const s = (res.locals as Locals).console!;
      if (s.role !== 'read-write') return refuse(req, res, new GatewayError('FORBIDDEN', `${s.session.user} is a read-only admin: ${name} needs a read-write role.`));
      const registry = gateway.keyRegistry;
      if (!registry) return refuse(req, res, new GatewayError('INVALID_REQUEST', 'This gateway has nowhere to keep issued keys (no Redis and no data directory).'));
      if (!(await journal(req, { action: name, outcome: 'requested', ...detail(req) }))) {
        return refuse(req, res, new GatewayError('QUOTA_STORE_UNAVAILABLE', `The journal cannot take the record of this action, so ${name} was not carried out.`), false);
      }
      try {
        await run(req, res, s);
      } catch (err) {
        const e = err instanceof GatewayError ? err : new GatewayError('INTERNAL', `${name} failed; see the gateway log.`, {}, { cause: err });
        await refuse(req, res, e, false);
        await journal(req, { action: name, outcome: 'failed', code: e.code, detail: e.message, ...detail(req) });
      }
    };

  const list = (v: unknown) => (typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter(Boolean) : []);
  router.post(
    '/console/keys',
    act(
      'key_issue',
      (req) => ({ keyUser: req.body?.user, keyId: req.body?.id || undefined }),
      async (req, res, s) => {
        const b = req.body as Record<string, unknown>;
        const user = typeof b.user === 'string' ? b.user.trim() : '';
        if (!user) throw new GatewayError('INVALID_REQUEST', 'A key needs a user.');
        const roles = list(b.roles);
        const consoleRoles = gateway.policy.config.console.roles;
        const admin = roles.filter((r) => consoleRoles.readWrite.includes(r) || consoleRoles.readOnly.includes(r));
        if (admin.length) throw new GatewayError('INVALID_REQUEST', `Issued keys cannot carry console roles (${admin.join(', ')}): admin keys are declared in the policy.`);
        const request: IssueRequest = {
          id: typeof b.id === 'string' && b.id.trim() ? b.id.trim() : undefined,
          user,
          teams: list(b.teams),
          costCenter: typeof b.costCenter === 'string' && b.costCenter.trim() ? b.costCenter.trim() : undefined,
          groups: list(b.groups),
          roles,
        };
        checkIssue(request, [...gateway.policy.apiKeys.values()].map((k) => k.id), (field) => field);
        const { key, record } = await gateway.keyRegistry!.issue(request);
        await journal(req, { action: 'key_issue', outcome: 'ok', keyId: record.id, keyUser: record.user, fingerprint: record.sha256.slice(0, 12) });
        res.type('html').send(keysPage(s.viewer, [...gateway.policy.apiKeys.values()], await gateway.keyRegistry!.list(), issuedKeyMessage(key, record)));
      },
    ),
  );
  router.post(
    '/console/keys/:id/revoke',
    act(
      'key_revoke',
      (req) => ({ keyId: req.params.id }),
      async (req, res) => {
        const r = await gateway.keyRegistry!.revoke(String(req.params.id));
        await journal(req, { action: 'key_revoke', outcome: 'ok', keyId: r.id, keyUser: r.user });
        res.redirect(303, '/console/keys');
      },
    ),
  );

  router.use('/console', (req, res) => void refuse(req, res, new GatewayError('NOT_FOUND', 'There is no such console page.'), false));
  // Every other request (a call) passes with one string comparison, without walking the console's routes.
  return function consoleOnly(req, res, next) {
    if (req.path === '/console' || req.path.startsWith('/console/')) router(req, res, next);
    else next();
  };
}

/**
 * The query parameters a page takes, each given once; an empty one (a form's blank field) as none.
 * Throws INVALID_REQUEST for a parameter the page does not take (a filter it would silently ignore,
 * showing every caller's figures) or one given twice.
 */
function queryOf<K extends string>(req: Request, names: readonly K[]): Partial<Record<K, string>> {
  const out: Partial<Record<K, string>> = {};
  for (const [name, value] of Object.entries(req.query)) {
    if (!(names as readonly string[]).includes(name)) {
      throw new GatewayError('INVALID_REQUEST', `This page takes no parameter ${name} (${names.length ? `it takes ${names.join(', ')}` : 'it takes none'}).`);
    }
    if (typeof value !== 'string') throw new GatewayError('INVALID_REQUEST', `The parameter ${name} must be given once, as plain text.`);
    if (value !== '') out[name as K] = value;
  }
  return out;
}

/** True unless the browser named an Origin (or a Sec-Fetch-Site) that is not the console's own. */
function sameOrigin(req: Request, own: string): boolean {
  const site = req.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return false;
  const origin = req.headers.origin;
  return origin === undefined || origin === own;
}
