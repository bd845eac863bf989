/**
 * Console sign-ins as signed cookies: the server keeps no session table, so every replica (and
 * every worker of `--workers`) accepts a sign-in another made when they share
 * TOLLGATE_SESSION_SECRET. A cookie holds who signed in, how, their roles and when it ends, with an
 * HMAC-SHA256 over it; it holds no credential. The CSRF token of a session is an HMAC of the
 * session's own nonce, so it cannot be computed without the secret and changes with each sign-in.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request, Response } from 'express';

/** The session cookie, scoped to the console's paths. */
export const SESSION_COOKIE = 'tollgate_console';
/** A pre-sign-in nonce binding the login form's CSRF token to this browser. */
export const LOGIN_COOKIE = 'tollgate_console_login';
/** The OIDC flow's state, nonce and PKCE verifier while the browser is at the issuer. */
export const OIDC_COOKIE = 'tollgate_console_oidc';
const COOKIE_PATH = '/console';

/** A signed-in admin as the cookie carries them. */
export interface ConsoleSession {
  user: string;
  /** How they signed in: an admin API key of the policy (its id in `keyId`), or OIDC (issuer in `issuer`). */
  via: 'api_key' | 'oidc';
  keyId?: string;
  /** The key's fingerprint (first 12 hex digits of its SHA-256): a new secret under the same id ends the sign-in. */
  keyFingerprint?: string;
  issuer?: string;
  /** Their roles at sign-in (OIDC); for an API key they are read from the policy on every request. */
  roles: string[];
  /** Epoch ms. */
  expiresAt: number;
  /** Random; the CSRF token is derived from it. */
  nonce: string;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** Signs and verifies the console's cookies and CSRF tokens with one secret. */
export class CookieSigner {
  private readonly key: Buffer;

  constructor(secret: string | undefined) {
    // Without a shared secret each process signs with its own: sign-ins last until it restarts.
    this.key = secret ? Buffer.from(`tollgate-console:${secret}`, 'utf8') : randomBytes(32);
  }

  private mac(purpose: string, data: string): string {
    return createHmac('sha256', this.key).update(`${purpose}\n${data}`).digest('base64url');
  }

  /** `payload.mac`, the payload base64url-encoded JSON. */
  seal(purpose: string, value: unknown): string {
    const data = b64(JSON.stringify(value));
    return `${data}.${this.mac(purpose, data)}`;
  }

  /** The value sealed for `purpose`, or undefined when the text was not made by `seal` with this secret. */
  open<T>(purpose: string, text: string | undefined): T | undefined {
    if (!text) return undefined;
    const dot = text.indexOf('.');
    if (dot <= 0) return undefined;
    const data = text.slice(0, dot);
    if (!same(text.slice(dot + 1), this.mac(purpose, data))) return undefined;
    try {
      return JSON.parse(Buffer.from(data, 'base64url').toString('utf8')) as T;
    } catch {
      return undefined;
    }
  }

  /** The CSRF token that goes with a nonce (a session's, or the login form's). */
  csrfToken(nonce: string): string {
    return this.mac('csrf', nonce);
  }

  /** Whether `token` is the CSRF token of `nonce`. */
  checkCsrf(nonce: string, token: unknown): boolean {
    return typeof token === 'string' && token.length > 0 && same(token, this.csrfToken(nonce));
  }
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Sign-ins ended by signing out, by their nonce, until they would have expired: a copy of the
 * cookie sent after the sign-out is refused. Kept in this process only (replicas and other workers
 * do not share it), so it ends the session everywhere only when one process serves the console.
 */
export class EndedSessions {
  private readonly ended = new Map<string, number>();

  /** Ends `s` from now on. */
  end(s: ConsoleSession, now: number): void {
    for (const [nonce, expiresAt] of this.ended) if (expiresAt <= now) this.ended.delete(nonce);
    if (s.expiresAt > now) this.ended.set(s.nonce, s.expiresAt);
  }

  /** Whether `s` was signed out. */
  has(s: ConsoleSession): boolean {
    return this.ended.has(s.nonce);
  }
}

/** 16 random bytes, base64url. */
export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

/** The cookies of a request (no parser middleware: three cookies do not need one). */
export function cookiesOf(req: Request): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!(name in out)) out[name] = part.slice(eq + 1).trim();
  }
  return out;
}

export interface CookieOptions {
  /** Seconds; 0 deletes the cookie. */
  maxAge: number;
  /** Lax for the session and the OIDC flow (the callback is a navigation from the issuer); Strict for the sign-in form's nonce. */
  sameSite: 'Strict' | 'Lax';
  secure: boolean;
}

/** Sets a cookie HttpOnly on the console's path. */
export function setCookie(res: Response, name: string, value: string, opts: CookieOptions): void {
  const parts = [`${name}=${value}`, `Path=${COOKIE_PATH}`, `Max-Age=${opts.maxAge}`, 'HttpOnly', `SameSite=${opts.sameSite}`];
  if (opts.secure) parts.push('Secure');
  res.append('Set-Cookie', parts.join('; '));
}
