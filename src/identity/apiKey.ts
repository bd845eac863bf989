/**
 * API keys: the caller presents the key, the gateway keeps only its SHA-256. Where the hashes live
 * is behind ApiKeyResolver: today the policy file's `apiKeys` list; a resolver over the shared
 * store (keys issued and revoked by the admin CLI, seen by every replica) plugs in here.
 */
import { hash } from 'node:crypto';
import type { ApiKeyConfig } from './config.js';
import type { Principal } from './principal.js';

/** Looks a key up by the hex SHA-256 of its value. */
export interface ApiKeyResolver {
  resolve(sha256Hex: string): ApiKeyConfig | undefined | Promise<ApiKeyConfig | undefined>;
}

/** Hex SHA-256 of a presented key, as stored under `apiKeys[].sha256`. */
export function hashApiKey(key: string): string {
  // The one-shot hash: no Hash object for each call's key.
  return hash('sha256', key, 'hex');
}

/** What `tollgate keys` issues (mintKey): `tg_` and 24 random bytes in base64url, so never a `.` as in a JWT. */
const ISSUED_KEY = /^tg_[A-Za-z0-9_-]{32}$/;

/**
 * True when `credential` has the shape of a key `tollgate keys` issues. Anything else cannot be an
 * issued key, so the key store is not asked about it: a token or a mistyped key is answered
 * without waiting on a store that may not be answering.
 */
export function couldBeIssuedKey(credential: string): boolean {
  return ISSUED_KEY.test(credential);
}

/** The keys listed in the policy file, by hash (`Policy.apiKeys`). */
export function policyApiKeys(keys: ReadonlyMap<string, ApiKeyConfig>): ApiKeyResolver {
  return { resolve: (hash) => keys.get(hash) };
}

/** The principal an API key stands for. */
export function principalFromApiKey(entry: ApiKeyConfig): Principal {
  const p: Principal = {
    user: entry.user,
    teams: [...entry.teams],
    groups: [...entry.groups],
    roles: [...entry.roles],
    authMethod: 'api_key',
    credentialId: entry.id,
  };
  if (entry.costCenter !== undefined) p.costCenter = entry.costCenter;
  if (entry.app !== undefined) p.app = entry.app;
  return p;
}
