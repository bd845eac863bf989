/**
 * API keys issued and revoked with `tollgate keys` when there is no Redis: JSON lines in
 * `keys.jsonl` in the data directory (TOLLGATE_DATA_DIR, `--data-dir`), beside the embedded store's
 * journal. The gateway holds the journal while it runs, so the CLI never writes there; it appends to
 * this file, and the gateway reads it.
 *
 * A line is an issue (the key's SHA-256 and its principal, never the key) or a revocation (id and
 * hash). The CLI appends each line with one write on a file opened for appending, then fsyncs it,
 * and only then prints the key: a short line is written whole, so a line is either there or, if the
 * CLI died during the write, torn. A line that does not parse is skipped: it was never confirmed.
 * The first issue of an id wins; a revocation names the hash it revokes.
 *
 * The gateway keeps what it read and looks at the file again (its size, mtime and inode) at most
 * every `cacheMs` (default 5 s, as for keys in Redis), and at once for a key it does not know: a
 * new key works at once, a revocation takes effect within cacheMs.
 */
import { closeSync, fstatSync, fsyncSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GatewayError } from '../errors.js';
import type { ApiKeyConfig } from './config.js';
import type { ApiKeyResolver } from './apiKey.js';
import { idTaken, mintKey, type IssueRequest, type KeyRegistry, type StoredKey } from './storedKeys.js';

/** The file's name in the data directory. */
export const KEYS_FILE = 'keys.jsonl';

type KeyLine = ({ op: 'issue' } & StoredKey) | { op: 'revoke'; id: string; sha256: string; revokedAt: string };

const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

/** The keys a file's text holds, by id, in the order issued; unreadable lines and a torn last line are skipped. */
export function parseKeyLines(text: string): Map<string, StoredKey> {
  const byId = new Map<string, StoredKey>();
  const lines = text.split('\n');
  // The text after the last newline is a line still being written, or torn.
  lines.pop();
  for (const raw of lines) {
    let line: Partial<KeyLine> & Record<string, unknown>;
    try {
      line = JSON.parse(raw) as typeof line;
    } catch {
      continue;
    }
    if (typeof line !== 'object' || line === null || typeof line.id !== 'string' || typeof line.sha256 !== 'string') continue;
    if (line.op === 'issue') {
      if (byId.has(line.id) || !/^[0-9a-f]{64}$/.test(line.sha256) || typeof line.user !== 'string') continue;
      if (!isStrings(line.teams) || !isStrings(line.groups) || !isStrings(line.roles)) continue;
      const { op: _op, ...record } = line as { op: 'issue' } & StoredKey;
      byId.set(line.id, record);
    } else if (line.op === 'revoke') {
      const entry = byId.get(line.id);
      if (entry && entry.sha256 === line.sha256 && !entry.revokedAt) byId.set(line.id, { ...entry, revokedAt: String(line.revokedAt) });
    }
  }
  return byId;
}

export interface FileApiKeysOptions {
  /** The data directory; created by the first issue. */
  dir: string;
  /** Most time a revocation may go unseen, in ms of `now`. Default 5000; 0 looks at the file on every lookup. */
  cacheMs?: number;
  now?: () => number;
}

export class FileApiKeys implements ApiKeyResolver, KeyRegistry {
  readonly file: string;
  private readonly cacheMs: number;
  private readonly now: () => number;
  private byId = new Map<string, StoredKey>();
  private byHash = new Map<string, StoredKey>();
  /** Inode, size and mtime of the file as last read; '' for no file; undefined before the first look. */
  private version: string | undefined;
  private checkedAt = -Infinity;
  private looking: Promise<void> | undefined;

  constructor(private readonly opts: FileApiKeysOptions) {
    this.file = join(opts.dir, KEYS_FILE);
    this.cacheMs = opts.cacheMs ?? 5000;
    this.now = opts.now ?? Date.now;
  }

  async resolve(sha256Hex: string): Promise<ApiKeyConfig | undefined> {
    let looked = false;
    if (this.now() - this.checkedAt >= this.cacheMs) {
      await this.look();
      looked = true;
    }
    let entry = this.byHash.get(sha256Hex);
    // A key issued since the last look works at once: an unknown key costs a stat of the file.
    if (!entry && !looked) {
      await this.look();
      entry = this.byHash.get(sha256Hex);
    }
    return entry && !entry.revokedAt ? entry : undefined;
  }

  /** Creates a key for `req` and appends its record; returns the key (shown once) and its record. */
  async issue(req: IssueRequest): Promise<{ key: string; record: StoredKey }> {
    const { key, record } = mintKey(req, this.now());
    await this.look();
    if (this.byId.has(record.id)) throw idTaken(record.id);
    this.append({ op: 'issue', ...record });
    // Another issue of the id may have been appended since the look: the first line wins, so the
    // key is ours only if the file, read again, gives the id our hash.
    this.version = undefined;
    await this.look();
    if (this.byId.get(record.id)?.sha256 !== record.sha256) throw idTaken(record.id);
    return { key, record };
  }

  /** Appends a revocation of the key with `id`; the gateway refuses the key within cacheMs. */
  async revoke(id: string): Promise<StoredKey> {
    await this.look();
    const record = this.byId.get(id);
    if (!record) throw new GatewayError('INVALID_REQUEST', `No issued key with id "${id}".`);
    if (record.revokedAt) return record;
    const revoked: StoredKey = { ...record, revokedAt: new Date(this.now()).toISOString() };
    this.append({ op: 'revoke', id, sha256: record.sha256, revokedAt: revoked.revokedAt! });
    this.remember(revoked);
    return revoked;
  }

  /** Every issued key record (hashes only), revoked ones included. */
  async list(): Promise<StoredKey[]> {
    await this.look();
    return [...this.byId.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  async close(): Promise<void> {}

  /** Reads the file again if it changed since the last read; concurrent lookups share one look. */
  private look(): Promise<void> {
    this.looking ??= this.read().finally(() => (this.looking = undefined));
    return this.looking;
  }

  private async read(): Promise<void> {
    const at = this.now();
    let version = '';
    let text = '';
    try {
      const st = await stat(this.file);
      version = `${st.ino}:${st.size}:${st.mtimeMs}`;
      if (version !== this.version) text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new GatewayError('INTERNAL', `The issued API keys (${KEYS_FILE} in the data directory) cannot be read.`, {}, { cause: err });
      }
      version = '';
    }
    if (version !== this.version) {
      this.byId = parseKeyLines(text);
      this.byHash = new Map([...this.byId.values()].map((k) => [k.sha256, k]));
      this.version = version;
    }
    this.checkedAt = at;
  }

  private remember(record: StoredKey): void {
    this.byId.set(record.id, record);
    this.byHash.set(record.sha256, record);
  }

  /** One line, one write on an O_APPEND descriptor, fsync'd before returning. */
  private append(line: KeyLine): void {
    mkdirSync(this.opts.dir, { recursive: true });
    const fd = openSync(this.file, 'a+', 0o600);
    try {
      // A line torn by an earlier writer that died is ended first, so it cannot swallow this one.
      const size = fstatSync(fd).size;
      const last = Buffer.alloc(1);
      const ended = size === 0 || (readSync(fd, last, 0, 1, size - 1) === 1 && last[0] === 0x0a);
      const bytes = Buffer.from(`${ended ? '' : '\n'}${JSON.stringify(line)}\n`, 'utf8');
      const written = writeSync(fd, bytes);
      if (written !== bytes.length) throw new Error(`short write to ${KEYS_FILE}: ${written} of ${bytes.length} bytes`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
