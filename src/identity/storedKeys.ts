/**
 * API keys issued and revoked at run time (`tollgate keys`), kept in the shared store so every
 * replica sees them. Only the SHA-256 of a key is stored; the key itself is printed once, at issue.
 *
 * Lookups are cached per replica for `cacheMs` (default 5 s), so a revocation takes effect on every
 * replica within that time. Records live in Keyv under `<prefix>apikeys`.
 */
import { randomBytes } from 'node:crypto';
import KeyvRedis from '@keyv/redis';
import Keyv from 'keyv';
import { GatewayError } from '../errors.js';
import { TtlCache } from '../ttlCache.js';
import type { ApiKeyConfig } from './config.js';
import { hashApiKey, type ApiKeyResolver } from './apiKey.js';
import { UNPRINTABLE } from './claims.js';

export interface StoredKey extends ApiKeyConfig {
  createdAt: string;
  revokedAt?: string;
}

export interface IssueRequest {
  id?: string;
  user: string;
  teams?: string[];
  costCenter?: string;
  groups?: string[];
  roles?: string[];
  /** The application the key belongs to; `user` is then its owner. */
  app?: string;
}

/** Where issued keys are kept and managed: the shared store (StoredApiKeys) or the data directory (FileApiKeys). */
export interface KeyRegistry {
  issue(req: IssueRequest): Promise<{ key: string; record: StoredKey }>;
  revoke(id: string): Promise<StoredKey>;
  list(): Promise<StoredKey[]>;
}

const UNPRINTABLE_ALL = new RegExp(UNPRINTABLE.source, 'g');

/** A name with its control and bidirectional-override characters shown as `\xNN` / `\uNNNN`, for listings, reports and messages. */
export const printable = (s: string): string =>
  s.replace(UNPRINTABLE_ALL, (c) => {
    const n = c.charCodeAt(0);
    return n > 0xff ? `\\u${n.toString(16).padStart(4, '0')}` : `\\x${n.toString(16).padStart(2, '0')}`;
  });


/**
 * The checks every way of issuing a key makes (`tollgate keys issue`, the console's form) before
 * the registry's: no name holds a control character (a key's names are printed in listings,
 * reports and logs, and carried by every decision event of its calls), and the id is not one of the
 * policy's own keys (it would name two keys in listings, the console, events and revoke). `label`
 * names a field as the caller wrote it (`--teams`, `teams`).
 */
export function checkIssue(req: IssueRequest, policyKeyIds: Iterable<string>, label: (field: keyof IssueRequest) => string): void {
  const fields: [keyof IssueRequest, readonly (string | undefined)[] | undefined][] = [
    ['user', [req.user]],
    ['app', [req.app]],
    ['id', [req.id]],
    ['teams', req.teams],
    ['costCenter', [req.costCenter]],
    ['groups', req.groups],
    ['roles', req.roles],
  ];
  for (const [field, names] of fields) {
    for (const name of names ?? []) {
      const c = name?.match(UNPRINTABLE)?.[0];
      if (c !== undefined) throw new GatewayError('INVALID_REQUEST', `${label(field)} "${printable(name!)}" holds a control character (${printable(c)}): names are printed in listings, reports and logs`);
      if (name !== undefined && name.trim() === '') throw new GatewayError('INVALID_REQUEST', `${label(field)} is blank: a name must hold more than spaces`);
    }
  }
  if (req.id !== undefined && [...policyKeyIds].includes(req.id)) {
    throw new GatewayError('INVALID_REQUEST', `The policy declares an API key with id ${JSON.stringify(req.id)}; choose another id.`);
  }
}

/** The refusal of an issue under an id already issued (revoked or not: an id stays taken). */
export function idTaken(id: string): GatewayError {
  return new GatewayError('INVALID_REQUEST', `A key with id "${id}" already exists; choose another id.`);
}

function storeError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('QUOTA_STORE_UNAVAILABLE', 'The shared store holding issued API keys is unreachable.', {}, { cause: err });
}

export class StoredApiKeys implements ApiKeyResolver, KeyRegistry {
  private readonly keyv: Keyv<StoredKey | string>;
  private readonly adapter: KeyvRedis<StoredKey | string>;
  private readonly claimPrefix: string;
  /** Answers of this replica, "no such key" included; none when cacheMs is 0. */
  private readonly cache?: TtlCache<{ entry: StoredKey | undefined }>;
  private readonly now: () => number;
  private readonly timeoutMs: number;

  /**
   * `commandTimeoutMs` (default 1000) bounds every lookup and change: a store that accepts the
   * connection and never answers (a hung host) fails the call with QUOTA_STORE_UNAVAILABLE instead
   * of holding it forever.
   */
  constructor(opts: { url: string; prefix: string; cacheMs?: number; now?: () => number; commandTimeoutMs?: number }) {
    this.timeoutMs = opts.commandTimeoutMs ?? 1000;
    const adapter = new KeyvRedis<StoredKey | string>(opts.url, { throwOnErrors: true, throwOnConnectError: true, connectionTimeout: 2000 });
    this.adapter = adapter;
    this.claimPrefix = `${opts.prefix}apikeys-id:`;
    this.keyv = new Keyv<StoredKey | string>({ store: adapter, namespace: `${opts.prefix}apikeys`, throwOnErrors: true });
    this.keyv.on('error', () => {
      // Surfaced as thrown errors on the call that needed the store.
    });
    const cacheMs = opts.cacheMs ?? 5000;
    this.now = opts.now ?? Date.now;
    if (cacheMs > 0) this.cache = new TtlCache({ max: 50_000, ttlMs: cacheMs, now: () => this.now() });
  }

  async resolve(sha256Hex: string): Promise<ApiKeyConfig | undefined> {
    const hit = this.cache?.get(sha256Hex);
    if (hit) return hit.entry && !hit.entry.revokedAt ? hit.entry : undefined;
    let entry: StoredKey | undefined;
    try {
      const v = await this.timed(this.keyv.get(`key:${sha256Hex}`));
      entry = typeof v === 'object' && v !== null ? v : undefined;
    } catch (err) {
      throw storeError(err);
    }
    this.cache?.set(sha256Hex, { entry });
    return entry && !entry.revokedAt ? entry : undefined;
  }

  /** Creates a key for `req`; returns the key (shown once) and its record. */
  async issue(req: IssueRequest): Promise<{ key: string; record: StoredKey }> {
    const { key, record } = mintKey(req, this.now());
    const { id, sha256 } = record;
    try {
      if (await this.timed(this.keyv.get(`id:${id}`))) throw idTaken(id);
      // Claimed at once (SET NX), so that of two issues of one id at the same moment one fails
      // rather than both writing: the id's entry would then name the second key and the first,
      // already printed, would work and could not be revoked.
      const client = await this.timed(this.adapter.getClient());
      if ((await this.timed(client.set(`${this.claimPrefix}${id}`, sha256, { NX: true }))) !== 'OK') throw idTaken(id);
      await this.timed(this.keyv.set(`key:${sha256}`, record));
      await this.timed(this.keyv.set(`id:${id}`, sha256));
    } catch (err) {
      throw storeError(err);
    }
    return { key, record };
  }

  /** Marks the key with `id` revoked; every replica refuses it once its cache entry expires. */
  async revoke(id: string): Promise<StoredKey> {
    try {
      const sha = await this.timed(this.keyv.get(`id:${id}`));
      const record = typeof sha === 'string' ? await this.timed(this.keyv.get(`key:${sha}`)) : undefined;
      if (typeof record !== 'object' || record === null) throw new GatewayError('INVALID_REQUEST', `No issued key with id "${id}".`);
      const revoked: StoredKey = { ...record, revokedAt: record.revokedAt ?? new Date(this.now()).toISOString() };
      await this.timed(this.keyv.set(`key:${record.sha256}`, revoked));
      this.cache?.delete(record.sha256);
      return revoked;
    } catch (err) {
      throw storeError(err);
    }
  }

  /** Every issued key record (hashes only), revoked ones included. */
  async list(): Promise<StoredKey[]> {
    const out: StoredKey[] = [];
    try {
      const iterator = this.keyv.iterator!(undefined)[Symbol.asyncIterator]();
      // Each page of the scan is bounded, not the whole listing.
      for (let next = await this.timed(iterator.next()); !next.done; next = await this.timed(iterator.next())) {
        const [k, v] = next.value as [unknown, unknown];
        // The adapter returns keys with (part of) the namespace in front; match the record suffix.
        if (/(?:^|:)key:[0-9a-f]{64}$/.test(String(k)) && typeof v === 'object' && v !== null) out.push(v as StoredKey);
      }
    } catch (err) {
      throw storeError(err);
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  async close(): Promise<void> {
    await this.timed(this.keyv.disconnect()).catch(() => {});
  }

  /** `command`, or QUOTA_STORE_UNAVAILABLE once it has gone unanswered for the timeout. */
  private async timed<T>(command: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new GatewayError('QUOTA_STORE_UNAVAILABLE', `The shared store holding issued API keys did not answer within ${this.timeoutMs} ms.`)),
        this.timeoutMs,
      );
    });
    try {
      return await Promise.race([command, expired]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A new random key for `req` and its record (the key's SHA-256, never the key), created at `nowMs`. */
export function mintKey(req: IssueRequest, nowMs: number): { key: string; record: StoredKey } {
  // The shape couldBeIssuedKey (apiKey.ts) tests for: a key of another shape is never looked up.
  const key = `tg_${randomBytes(24).toString('base64url')}`;
  const sha256 = hashApiKey(key);
  const id = req.id ?? `key-${sha256.slice(0, 12)}`;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(id)) throw new GatewayError('INVALID_REQUEST', `Key id "${id}" must use letters, digits and _ . : -`);
  if (req.app !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(req.app)) throw new GatewayError('INVALID_REQUEST', `Application name "${req.app}" must use letters, digits and _ . : -`);
  const record: StoredKey = {
    id,
    sha256,
    user: req.user,
    teams: req.teams ?? [],
    groups: req.groups ?? [],
    roles: req.roles ?? [],
    disabled: false,
    createdAt: new Date(nowMs).toISOString(),
    ...(req.costCenter ? { costCenter: req.costCenter } : {}),
    ...(req.app ? { app: req.app } : {}),
  };
  return { key, record };
}
