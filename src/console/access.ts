/**
 * Who may use the console. An admin is a principal holding one of `console.roles`, proved through
 * the gateway's own identity pipeline (Gateway.authenticate: the same API key lookup, JWT
 * verification, claim mapping and required roles as a call; a refused credential leaves a
 * decision event like any refused call). Two ways in: an API key declared under the policy's
 * `apiKeys` (keys issued at run time never open the console), or an ID token from the OIDC login
 * flow (oidc.ts). Roles are read again from the policy on every request, so a reload that takes a
 * role away, disables a key, removes it or gives its id a new secret ends that admin's sign-in at once.
 */
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import { hashApiKey } from '../identity/apiKey.js';
import type { Principal } from '../identity/principal.js';
import type { Policy } from '../policy/load.js';
import type { ConsoleSession } from './session.js';

export type ConsoleRole = 'read-write' | 'read-only';

/** The console role `roles` grant under the policy, read-write first; none when they grant neither. */
export function roleOf(policy: Policy, roles: readonly string[]): ConsoleRole | undefined {
  const { readWrite, readOnly } = policy.config.console.roles;
  if (roles.some((r) => readWrite.includes(r))) return 'read-write';
  if (roles.some((r) => readOnly.includes(r))) return 'read-only';
  return undefined;
}

/** Whether the policy names a way to sign in as an admin: OIDC login, or an enabled API key holding an admin role. */
export function adminIdentityConfigured(policy: Policy): boolean {
  if (policy.config.console.oidc) return true;
  return [...policy.apiKeys.values()].some((k) => !k.disabled && roleOf(policy, k.roles) !== undefined);
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

/** Whether the console is served: `enabled` true or false, or `auto`: at a loopback address, or elsewhere once an admin identity is configured. */
export function consoleEnabled(policy: Policy, host: string): boolean {
  const enabled = policy.config.console.enabled;
  if (enabled !== 'auto') return enabled;
  return LOOPBACK.has(host) || /^127\./.test(host) || adminIdentityConfigured(policy);
}

/**
 * The role a session holds under the policy serving now; none when it no longer holds one, or when
 * its API key's id now stands for another secret (a leaked key replaced under the same id).
 */
export function sessionRole(policy: Policy, s: ConsoleSession, now: number): ConsoleRole | undefined {
  if (s.expiresAt <= now) return undefined;
  if (s.via === 'api_key') {
    const key = [...policy.apiKeys.values()].find((k) => k.id === s.keyId);
    if (!key || key.disabled || key.user !== s.user || !s.keyFingerprint || !key.sha256.startsWith(s.keyFingerprint)) return undefined;
    return roleOf(policy, key.roles);
  }
  const oidc = policy.config.console.oidc;
  if (!oidc || oidc.issuer !== s.issuer) return undefined;
  return roleOf(policy, s.roles);
}

/** A sign-in that passed the identity pipeline, with the console role it grants. */
export interface Admission {
  principal: Principal;
  role: ConsoleRole;
  /** The API key's fingerprint (first 12 hex digits of its SHA-256); none for OIDC. */
  keyFingerprint?: string;
}

/**
 * Proves an API key through the gateway and admits it when it is declared in the policy and holds
 * an admin role. Throws AUTH_INVALID (unknown, revoked or disabled key) or FORBIDDEN.
 */
export async function admitApiKey(gateway: Gateway, key: string, requestId: string): Promise<Admission> {
  const { principal, policy } = await gateway.authenticate({ secret: key, only: 'api_key' }, { transport: 'console', requestId });
  const who = { user: principal.user, keyId: principal.credentialId };
  const sha256 = hashApiKey(key);
  if (!policy.apiKeys.has(sha256)) {
    throw new GatewayError('FORBIDDEN', 'Only an API key declared in the policy (apiKeys) with an admin role opens the console; issued keys do not.', who);
  }
  return { principal, role: admitted(policy, principal, who), keyFingerprint: sha256.slice(0, 12) };
}

/** Proves an ID token from the login flow through the gateway (issuer, signature, audience, expiry, claims). */
export async function admitIdToken(gateway: Gateway, token: string, requestId: string): Promise<Admission> {
  const { principal, policy } = await gateway.authenticate({ secret: token, only: 'jwt' }, { transport: 'console', requestId });
  return { principal, role: admitted(policy, principal, { user: principal.user, issuer: principal.credentialId }) };
}

/** The principal's console role; FORBIDDEN, with `who` in its details for the journal, when it holds none. */
function admitted(policy: Policy, p: Principal, who: Record<string, string | undefined>): ConsoleRole {
  const role = roleOf(policy, p.roles);
  if (!role) {
    const { readWrite, readOnly } = policy.config.console.roles;
    throw new GatewayError('FORBIDDEN', `${p.user} holds no console role (read-write: ${readWrite.join(', ') || 'none'}; read-only: ${readOnly.join(', ') || 'none'}).`, who);
  }
  return role;
}
