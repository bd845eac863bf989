/**
 * FileApiKeys on real files: what a lookup sees of keys.jsonl, and when. One instance plays the
 * gateway (on a clock the test moves), others the `tollgate keys` command.
 */
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hashApiKey } from '../../src/identity/apiKey.js';
import { FileApiKeys, parseKeyLines } from '../../src/identity/fileKeys.js';

describe('FileApiKeys', () => {
  let dir: string;
  let clock: number;
  const now = () => clock;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-filekeys-'));
    clock = Date.parse('2026-03-02T09:00:00Z');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('finds nothing, and writes nothing, when there is no file or no directory', async () => {
    const gone = join(dir, 'not-yet');
    const keys = new FileApiKeys({ dir: gone, now });
    expect(await keys.resolve(hashApiKey('tg_x'))).toBeUndefined();
    expect(await keys.list()).toEqual([]);
    expect(() => statSync(gone)).toThrow();
  });

  it('creates the directory and a file only the owner can read, holding hashes only', async () => {
    const cli = new FileApiKeys({ dir: join(dir, 'data') });
    const { key, record } = await cli.issue({ user: 'dana', teams: ['research'] });
    const file = join(dir, 'data', 'keys.jsonl');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain(key);
    expect(JSON.parse(text)).toEqual({ op: 'issue', ...record });
    expect(record).toMatchObject({ id: `key-${hashApiKey(key).slice(0, 12)}`, sha256: hashApiKey(key), user: 'dana', teams: ['research'], groups: [], roles: [], disabled: false });
  });

  it('sees a new key at once and a revocation after cacheMs, by the injected clock', async () => {
    const gateway = new FileApiKeys({ dir, now, cacheMs: 5000 });
    const cli = new FileApiKeys({ dir });
    expect(await gateway.resolve(hashApiKey('tg_unknown'))).toBeUndefined();
    const { key } = await cli.issue({ user: 'dana', id: 'dana-1' });
    // Unknown keys make the gateway look at the file even within cacheMs.
    expect(await gateway.resolve(hashApiKey(key))).toMatchObject({ id: 'dana-1', user: 'dana' });
    await cli.revoke('dana-1');
    expect(await gateway.resolve(hashApiKey(key))).toMatchObject({ id: 'dana-1' });
    clock += 4999;
    expect(await gateway.resolve(hashApiKey(key))).toMatchObject({ id: 'dana-1' });
    clock += 1;
    expect(await gateway.resolve(hashApiKey(key))).toBeUndefined();
  });

  it('with cacheMs 0, sees a revocation on the next lookup', async () => {
    const gateway = new FileApiKeys({ dir, now, cacheMs: 0 });
    const cli = new FileApiKeys({ dir });
    const { key } = await cli.issue({ user: 'dana', id: 'dana-1' });
    expect(await gateway.resolve(hashApiKey(key))).toBeDefined();
    await cli.revoke('dana-1');
    expect(await gateway.resolve(hashApiKey(key))).toBeUndefined();
  });

  it('skips a torn line, ends it before the next append, and keeps the first issue of an id', async () => {
    const cli = new FileApiKeys({ dir });
    const a = await cli.issue({ user: 'ann', id: 'a' });
    const file = join(dir, 'keys.jsonl');
    // A writer that died mid-line.
    appendFileSync(file, '{"op":"issue","id":"torn","sha256":"ab');
    expect(await new FileApiKeys({ dir }).list()).toHaveLength(1);
    const b = await new FileApiKeys({ dir }).issue({ user: 'bob', id: 'b' });
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[1]).toBe('{"op":"issue","id":"torn","sha256":"ab');
    // An id issued twice (two CLIs racing): the first record stands.
    appendFileSync(file, `${JSON.stringify({ op: 'issue', ...b.record, id: 'a', user: 'mallory' })}\n`);
    const gateway = new FileApiKeys({ dir, now });
    expect(await gateway.resolve(a.record.sha256)).toMatchObject({ id: 'a', user: 'ann' });
    expect(await gateway.resolve(b.record.sha256)).toMatchObject({ id: 'b', user: 'bob' });
    expect((await gateway.list()).map((k) => [k.id, k.user])).toEqual([
      ['a', 'ann'],
      ['b', 'bob'],
    ]);
  });

  it('applies a revocation only to the hash it names, and revokes once', async () => {
    const cli = new FileApiKeys({ dir, now });
    const { record } = await cli.issue({ user: 'ann', id: 'a' });
    const text = readFileSync(join(dir, 'keys.jsonl'), 'utf8');
    const wrong = `${JSON.stringify({ op: 'revoke', id: 'a', sha256: '0'.repeat(64), revokedAt: 'x' })}\n`;
    expect(parseKeyLines(text + wrong).get('a')?.revokedAt).toBeUndefined();
    const first = await cli.revoke('a');
    clock += 1000;
    const again = await cli.revoke('a');
    expect(again.revokedAt).toBe(first.revokedAt);
    expect(readFileSync(join(dir, 'keys.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2);
    expect(parseKeyLines(readFileSync(join(dir, 'keys.jsonl'), 'utf8')).get('a')).toEqual({ ...record, revokedAt: first.revokedAt });
  });
});
