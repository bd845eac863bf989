/**
 * Verified JWT claims -> Principal, as the policy's claim mapping says. Pure: no I/O, no clock.
 * Keycloak shapes are first-class: full-path groups (`/eng/platform`), realm roles under
 * `realm_access.roles`, client roles under `resource_access.<client>.roles`.
 */
import type { JWTPayload } from 'jose';
import { GatewayError } from '../errors.js';
import type { ClaimsConfig, ClaimSource } from './config.js';
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

/** A claim read as a list of strings: a string is one item, a number its decimal text, anything else is dropped. */
function stringList(value: unknown): string[] {
  const one = (v: unknown): string | undefined => (typeof v === 'string' ? v || undefined : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined);
  if (!Array.isArray(value)) {
    const v = one(value);
    return v === undefined ? [] : [v];
  }
  return value.map(one).filter((v): v is string => v !== undefined);
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

/** The filters of a claim source; a plain string source has none. */
interface Filters {
  prefix?: string;
  match?: string;
  strip?: string;
}

// Expressions come from the policy, so there are few; compiled once each.
const compiled = new Map<string, RegExp>();
function regex(src: string): RegExp {
  let re = compiled.get(src);
  if (!re) {
    re = new RegExp(src, 'u');
    compiled.set(src, re);
  }
  return re;
}

/** One value through prefix, match and strip; undefined when a filter drops it. */
function filterValue(value: string, f: Filters): string | undefined {
  let v = value;
  if (f.prefix !== undefined) {
    if (!v.startsWith(f.prefix)) return undefined;
    v = v.slice(f.prefix.length);
  }
  if (f.match !== undefined) {
    const m = regex(f.match).exec(v);
    if (!m) return undefined;
    if (m.length > 1) v = m[1] ?? '';
  }
  if (f.strip !== undefined && v.startsWith(f.strip)) v = v.slice(f.strip.length);
  return v;
}

/** Values pooled from one or several claim paths, filtered, then read as group paths. */
function valuesFrom(payload: Record<string, unknown>, paths: string | string[], f: Filters, groupPath?: ClaimsConfig['groupPath']): string[] {
  const raw = (Array.isArray(paths) ? paths : [paths]).flatMap((path) => stringList(readClaim(payload, path)));
  const kept = applyFilters(raw, f);
  return unique(groupPath ? kept.map((v) => groupName(v, groupPath)) : kept);
}

function applyFilters(values: string[], f: Filters): string[] {
  return values.map((v) => filterValue(v, f)).filter((v): v is string => v !== undefined && v !== '');
}

/**
 * The values a claim source names: a string is a bare claim path, an object adds filters. With
 * `groupPath`, values still starting with `/` are read as Keycloak group paths.
 */
export function claimValues(payload: Record<string, unknown>, source: ClaimSource, groupPath?: ClaimsConfig['groupPath']): string[] {
  return typeof source === 'string' ? valuesFrom(payload, source, {}, groupPath) : valuesFrom(payload, source.claim, source, groupPath);
}

function rolesOf(payload: Record<string, unknown>, mapping: ClaimsConfig['roles']): string[] {
  if (typeof mapping === 'string') return unique(stringList(readClaim(payload, mapping)));
  const roles: string[] = [];
  if (mapping.claim) for (const path of Array.isArray(mapping.claim) ? mapping.claim : [mapping.claim]) roles.push(...stringList(readClaim(payload, path)));
  if (mapping.realm) roles.push(...stringList((payload.realm_access as { roles?: unknown } | undefined)?.roles));
  const access = payload.resource_access;
  if (access && typeof access === 'object') {
    for (const client of mapping.clients) {
      if (Object.hasOwn(access, client)) roles.push(...stringList((access as Record<string, { roles?: unknown } | undefined>)[client]?.roles));
    }
  }
  return unique(applyFilters(roles, mapping));
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

/** Control characters (C0, DEL, C1) and the bidirectional embeddings, overrides and isolates: what no name (a token's user, an issued key's names) may hold. */
export const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/** Maps verified claims to a Principal. Throws AUTH_INVALID when the user claim is missing. */
export function principalFromClaims(payload: JWTPayload, mapping: ClaimsConfig, issuer: string, userPrefix = ''): Principal {
  const claims = payload as Record<string, unknown>;
  const named = readClaim(claims, mapping.user);
  if (typeof named !== 'string' || named === '') {
    throw new GatewayError('AUTH_INVALID', `The token has no ${mapping.user} claim to identify the user.`);
  }
  // A user's name is printed in events, reports and the console: no control characters, and no
  // bidirectional overrides, which reorder what follows them on screen (as for issued keys' names).
  if (UNPRINTABLE.test(named)) {
    throw new GatewayError('AUTH_INVALID', `The token's ${mapping.user} claim holds a control or bidirectional-override character; it cannot name a user.`);
  }
  const user = userPrefix + named;
  const costCenter = mapping.costCenter ? claimValues(claims, mapping.costCenter)[0] : undefined;
  const actors = actorChain(payload).map((a) => a.id);
  const principal: Principal = {
    user,
    teams: claimValues(claims, mapping.teams, mapping.groupPath),
    groups: claimValues(claims, mapping.groups, mapping.groupPath),
    roles: rolesOf(claims, mapping.roles),
    authMethod: 'jwt',
    credentialId: issuer,
  };
  if (costCenter !== undefined) principal.costCenter = costCenter;
  if (actors.length > 0) principal.actors = actors;
  return principal;
}
