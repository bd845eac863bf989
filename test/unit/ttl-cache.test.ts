import { describe, expect, it } from 'vitest';
import { TtlCache } from '../../src/ttlCache.js';

describe('TtlCache', () => {
  it('serves an entry while it is younger than ttlMs, by the clock it is given', () => {
    let t = 1_000_000;
    const cache = new TtlCache<{ v: number }>({ max: 10, ttlMs: 5000, now: () => t });
    cache.set('a', { v: 1 });
    t += 4999;
    expect(cache.get('a')).toEqual({ v: 1 });
    t += 1;
    expect(cache.get('a')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('expires entries set while a fake clock reads 0', () => {
    let t = 0;
    const cache = new TtlCache<string>({ max: 10, ttlMs: 10, now: () => t });
    cache.set('a', 'x');
    t = 10;
    expect(cache.get('a')).toBeUndefined();
  });

  it('keeps at most max entries, dropping the least recently used', () => {
    const cache = new TtlCache<string>({ max: 2, ttlMs: 60_000 });
    cache.set('a', '1');
    cache.set('b', '2');
    cache.get('a');
    cache.set('c', '3');
    expect([cache.get('a'), cache.get('b'), cache.get('c')]).toEqual(['1', undefined, '3']);
  });

  it('refuses a ttl lru-cache would read as "never expires"', () => {
    expect(() => new TtlCache({ max: 1, ttlMs: 0 })).toThrow(RangeError);
  });
});
