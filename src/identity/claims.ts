/**
 * Verified JWT claims -> Principal, as the policy's claim mapping says. Pure: no I/O, no clock.
 * Keycloak shapes are first-class: full-path groups (`/eng/platform`), realm roles under
 * `realm_access.roles`, client roles under `resource_access.<client>.roles`.
 */
import type { JWTPayload } from 'jose';
import { GatewayError } from '../errors.js';
import type { ClaimsConfig } from './config.js';
import type { Principal } from './principal.js';

/**
 * Reads a claim by exact name first (claim names may be URLs with dots in them), then as a dotted
 * path into nested objects (`org.cost_center`).
 */
export function readClaim(payload: Record<string, unknown>, name: string): unknown {
  // Own properties only: a claim named `constructor` is absent unless the token carries it.
  if (Object.hasOwn(payload, name)) return payload[name];
  let cur: unknown = payload;
  for (const part of name.split('.')) {
    if (!cur || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** A claim read as a list of strings: a string is one item, anything not a string is dropped. */
function stringList(value: unknown): string[] {
  if (typeof value === 'string') return value ? [value] : [];
  if (!Array.isArray(value)) return [];
  return value.filter((v): v is string => typeof v === 'string' && v.length > 0);
}

/** `/eng/platform` -> `platform` (last) or `eng/platform` (full); `platform` stays `platform`. */
export function groupName(raw: string, mode: 'last' | 'full'): string {
  if (!raw.startsWith('/')) return raw;
  const trimmed = raw.replace(/^\/+|\/+$/g, '');
  return mode === 'full' ? trimmed : (trimmed.split('/').at(-1) ?? '');
}

function unique(values: string[]): string[] {
  return [...new Set(values.filter(Boolean))];
}

function rolesOf(payload: Record<string, unknown>, mapping: ClaimsConfig['roles']): string[] {
  const roles: string[] = [];
  if (mapping.claim) roles.push(...stringList(readClaim(payload, mapping.claim)));
  if (mapping.realm) roles.push(...stringList((payload.realm_access as { roles?: unknown } | undefined)?.roles));
  const access = payload.resource_access;
  if (access && typeof access === 'object') {
    for (const client of mapping.clients) {
      if (Object.hasOwn(access, client)) roles.push(...stringList((access as Record<string, { roles?: unknown } | undefined>)[client]?.roles));
    }
  }
  return unique(roles);
}

/** Whom an `act` object names: its `sub`, else its `client_id`. */
function actorId(act: Record<string, unknown>): string | undefined {
  if (typeof act.sub === 'string' && act.sub) return act.sub;
  if (typeof act.client_id === 'string' && act.client_id) return act.client_id;
  return undefined;
}

/** One link of a delegation chain: whom the `act` names, and its client id when it gives one. */
export interface Actor {
  id: string;
  clientId?: string;
}

/**
 * The RFC 8693 actor chain, current actor first: `act`, then `act.act`, ... Empty when the token
 * is not delegated. Depth is capped so a hostile token cannot make us walk for long.
 */
export function actorChain(payload: JWTPayload): Actor[] {
  const chain: Actor[] = [];
  let act = payload.act as unknown;
  for (let depth = 0; act !== undefined && depth < 16; depth++) {
    if (!act || typeof act !== 'object' || Array.isArray(act)) throw new GatewayError('AUTH_INVALID', 'The token\'s act claim is not an object.');
    const a = act as Record<string, unknown>;
    const id = actorId(a);
    if (!id) throw new GatewayError('AUTH_INVALID', 'The token\'s act claim names no actor (sub or client_id).');
    chain.push(typeof a.client_id === 'string' ? { id, clientId: a.client_id } : { id });
    act = a.act;
  }
  if (act !== undefined) throw new GatewayError('AUTH_INVALID', 'The token\'s actor chain is nested too deeply.');
  return chain;
}

/** Maps verified claims to a Principal. Throws AUTH_INVALID when the user claim is missing. */
export function principalFromClaims(payload: JWTPayload, mapping: ClaimsConfig, issuer: string): Principal {
  const claims = payload as Record<string, unknown>;
  const user = readClaim(claims, mapping.user);
  if (typeof user !== 'string' || user === '') {
    throw new GatewayError('AUTH_INVALID', `The token has no ${mapping.user} claim to identify the user.`);
  }
  const cost = mapping.costCenter ? readClaim(claims, mapping.costCenter) : undefined;
  const costCenter = typeof cost === 'string' && cost ? cost : typeof cost === 'number' ? String(cost) : undefined;
  const actors = actorChain(payload).map((a) => a.id);
  const principal: Principal = {
    user,
    teams: unique(stringList(readClaim(claims, mapping.teams)).map((g) => groupName(g, mapping.groupPath))),
    groups: unique(stringList(readClaim(claims, mapping.groups)).map((g) => groupName(g, mapping.groupPath))),
    roles: rolesOf(claims, mapping.roles),
    authMethod: 'jwt',
    credentialId: issuer,
  };
  if (costCenter !== undefined) principal.costCenter = costCenter;
  if (actors.length > 0) principal.actors = actors;
  return principal;
}
