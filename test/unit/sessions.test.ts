import { afterEach, describe, expect, it } from 'vitest';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { SessionTable } from '../../src/http/sessions.js';

const SECRET = 'a-shared-session-secret-of-32-chars!';

describe('SessionTable', () => {
  const tables: SessionTable[] = [];
  const table = (opts: Partial<ConstructorParameters<typeof SessionTable>[0]> = {}) => {
    const t = new SessionTable({ maxSessions: 100, idleMs: 60_000, ...opts });
    tables.push(t);
    return t;
  };
  afterEach(() => {
    for (const t of tables.splice(0)) t.closeAll();
  });

  it('finds a session for its owner only', () => {
    const t = table();
    const s = t.open('key:alice')!;
    expect(t.lookup(s.id, 'key:alice')).toEqual({ session: s });
    expect(t.lookup(s.id, 'key:bob')).toEqual({ error: 'forbidden' });
    expect(t.lookup('nope', 'key:alice')).toEqual({ error: 'not_found' });
  });

  it('does not accept another process\'s session without a shared secret', () => {
    const a = table();
    const b = table();
    const s = a.open('key:alice')!;
    expect(b.lookup(s.id, 'key:alice')).toEqual({ error: 'not_found' });
  });

  it('accepts a session opened by a process sharing its secret, for the same owner only', () => {
    const a = table({ secret: SECRET });
    const b = table({ secret: SECRET });
    const other = table({ secret: `${SECRET}-other` });
    const s = a.open('key:alice')!;
    expect(b.lookup(s.id, 'key:bob')).toEqual({ error: 'not_found' });
    expect(other.lookup(s.id, 'key:alice')).toEqual({ error: 'not_found' });
    const adopted = b.lookup(s.id, 'key:alice');
    expect(adopted).toMatchObject({ session: { id: s.id, owner: 'key:alice' } });
    expect(b.size).toBe(1);
    // A forged signature, or one cut short, is refused.
    const [nonce, mac] = s.id.split('.');
    const forged = `${nonce}.${mac!.startsWith('A') ? 'B' : 'A'}${mac!.slice(1)}`;
    expect(b.lookup(forged, 'key:alice')).toEqual({ error: 'not_found' });
    expect(b.lookup(`${nonce}.${mac!.slice(1)}`, 'key:alice')).toEqual({ error: 'not_found' });
  });

  it('refuses an ended session even where the secret would verify it', () => {
    const a = table({ secret: SECRET });
    const s = a.open('key:alice')!;
    a.close(s.id);
    expect(a.lookup(s.id, 'key:alice')).toEqual({ error: 'not_found' });
    expect(a.size).toBe(0);
  });

  it('ends idle sessions, but not one with a request in flight', () => {
    let now = 1_000_000;
    const t = table({ idleMs: 1000, now: () => now });
    const idle = t.open('key:alice')!;
    const busy = t.open('key:alice')!;
    const done = t.track(busy, 7, () => undefined);
    now += 5000;
    t.sweep();
    expect(t.lookup(idle.id, 'key:alice')).toEqual({ error: 'not_found' });
    expect(t.lookup(busy.id, 'key:alice')).toMatchObject({ session: { id: busy.id } });
    done();
    now += 5000;
    t.sweep();
    expect(t.size).toBe(0);
  });

  it('is capped, making room by ending idle sessions first', () => {
    let now = 0;
    const t = table({ maxSessions: 2, idleMs: 1000, now: () => now });
    expect(t.open('a')).toBeDefined();
    expect(t.open('b')).toBeDefined();
    expect(t.open('c')).toBeUndefined();
    now += 2000;
    expect(t.open('c')).toBeDefined();
    expect(t.size).toBe(1);
  });

  it('ends a caller\'s least recently used idle session when they open one over their cap, and no one else\'s', () => {
    let now = 0;
    const t = table({ maxPerCaller: 2, now: () => now });
    const a1 = t.open('key:alice')!;
    now += 10;
    const a2 = t.open('key:alice')!;
    const b1 = t.open('key:bob')!;
    now += 10;
    t.lookup(a1.id, 'key:alice'); // a1 is now more recent than a2
    const a3 = t.open('key:alice')!;
    expect(t.lookup(a2.id, 'key:alice')).toEqual({ error: 'not_found' });
    expect(t.lookup(a1.id, 'key:alice')).toMatchObject({ session: { id: a1.id } });
    expect(t.lookup(a3.id, 'key:alice')).toMatchObject({ session: { id: a3.id } });
    expect(t.lookup(b1.id, 'key:bob')).toMatchObject({ session: { id: b1.id } });
    // With every one of their sessions busy, the caller gets no new one; others still do.
    t.track(a1, 1, () => undefined);
    t.track(a3, 1, () => undefined);
    expect(t.open('key:alice')).toBeUndefined();
    expect(t.open('key:bob')).toBeDefined();
  });

  it('routes a cancellation to the request it names, and cancels in-flight requests when the session ends', () => {
    const t = table();
    const s = t.open('key:alice')!;
    const got: JSONRPCMessage[] = [];
    t.track(s, 1, (m) => got.push(m));
    const done2 = t.track(s, 2, (m) => got.push(m));
    t.cancel(s, 1, 'user pressed stop');
    t.cancel(s, 99);
    expect(got).toEqual([{ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1, reason: 'user pressed stop' } }]);
    done2();
    t.close(s.id);
    expect(got.map((m) => (m as unknown as { params: { requestId: number } }).params.requestId)).toEqual([1, 1]);
  });
});
