/**
 * Recovery profiles on the Redis ledger: the parts of a call's recovery event that every call of
 * the same caller, model, tier, policy and lines shares are kept once per line in R:p, a call
 * sending only its amounts and the profile's digest. Recovery must build the same entries, events
 * and rollups as when each reservation carried the parts whole (the format still read for
 * reservations open at an upgrade), and a profile Redis lost must be sent again.
 */
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { lineKeys } from '../../src/policy/budgets.js';
import { canonicalJson, recoveryEvent, type EntryLine } from '../../src/quota/journal.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { AMOUNT_SLOT, dayOf, lineText, recoveryInfo } from '../../src/quota/redisJournal.js';
import { rollupFields } from '../../src/quota/rollups.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';
import { redisSuite } from '../helpers/redisSuite.js';
import { journalOf } from './journal-helpers.js';

const HOUR = 3600_000;
const silent = pino({ level: 'silent' });
const META: DecisionRecord = {
  user: 'ada',
  teams: ['ml', 'data'],
  costCenter: 'cc-42',
  model: 'openai/gpt-5-mini',
  tier: 'standard',
  transport: 'http',
  policyVersion: 'v7',
  units: { beta: 'micro_usd' },
};

/**
 * The R:i value of a call's event line as the store wrote it before profiles: the line's JSON, the
 * request id's JSON and the event's ten parts, one a line (kept here as a fixture of that format).
 */
function oldFormat(requestId: string, lines: EntryLine[], meta: DecisionRecord): string {
  // The parts were the profile's, each amount written where the profile now holds AMOUNT_SLOT.
  let n = 0;
  const parts = recoveryInfo(lines, meta).profile.text.replaceAll(AMOUNT_SLOT, () => String(lines[n++]!.amount));
  return `${lineText(lines[0]!)}\n${JSON.stringify(requestId)}\n${parts}`;
}

describe('RedisQuotaStore recovery profiles', () => {
  const suite = redisSuite<RedisQuotaStore>('profiles');
  let clock: number;
  const open = () => {
    const store = new RedisQuotaStore({ url: suite.redis.url, prefix: suite.prefix, now: () => clock, logger: silent, sweepIntervalMs: 0 });
    suite.stores.push(store);
    return store;
  };
  const line = (budgetId: string, amount: number, subject = 'ada'): LedgerLine => {
    const start = Math.floor(clock / HOUR) * HOUR;
    return { budgetId, subject, limit: 10_000, amount, expiresAt: start + 2 * HOUR, ...lineKeys(suite.prefix, budgetId, subject, [start], start) };
  };
  const entryLine = (l: LedgerLine): EntryLine => ({ budgetId: l.budgetId, subject: l.subject, usageKey: l.usageKey, reservedKey: l.reservedKey, amount: l.amount, expiresAt: l.expiresAt });
  const sorted = (ls: LedgerLine[]) => ls.map(entryLine).sort((a, b) => (a.reservedKey < b.reservedKey ? -1 : 1));
  const entries = async () => (await journalOf({ url: suite.redis.url }, suite.prefix)).map((e) => e.entry);
  /** The R:p key of a call's event line (its first in reservedKey order). */
  const profileKey = (ls: LedgerLine[]) => `${sorted(ls)[0]!.reservedKey}:p`;

  /** Lets `id`'s reservation expire (dispatched or not), recovers it, and checks the entry, event and rollups against recoveryEvent(). */
  const expectRecovered = async (store: RedisQuotaStore, heard: DecisionRecord[], id: string, ls: LedgerLine[], meta: DecisionRecord, dispatched: boolean) => {
    clock += 1001;
    const before = heard.length;
    const rollBefore = await suite.raw.hGetAll(`${suite.prefix}{journal}:roll:${dayOf(clock)}`);
    await store.read(ls);
    const expected = recoveryEvent(id, { lines: sorted(ls), meta, dispatched }, clock);
    expect(heard.slice(before)).toHaveLength(1);
    expect(canonicalJson(heard[before])).toBe(canonicalJson(expected));
    const closing = (await entries()).filter((e) => e.body.id === id);
    // One entry per line, the event on the first line's.
    expect(closing.map((e) => e.body.kind)).toEqual(ls.map(() => (dispatched ? 'recover' : 'release')));
    expect(closing.map((e) => e.body.lines![0]!).sort((a, b) => (a.reservedKey < b.reservedKey ? -1 : 1))).toEqual(sorted(ls));
    expect(closing.filter((e) => e.body.event).map((e) => [e.body.lines, e.body.event])).toEqual([[[sorted(ls)[0]], heard[before]]]);
    const roll = await suite.raw.hGetAll(`${suite.prefix}{journal}:roll:${dayOf(clock)}`);
    const want = rollupFields(expected);
    for (let i = 0; i < want.length; i += 2) expect(Number(roll[want[i] as string] ?? 0) - Number(rollBefore[want[i] as string] ?? 0)).toBe(want[i + 1]);
    if (dispatched) for (const l of ls) expect(Number(await suite.raw.get(l.usageKey))).toBeGreaterThanOrEqual(l.amount);
  };

  beforeEach(() => {
    clock = Date.parse('2026-11-25T10:00:00Z') + suite.n * 1000;
  });

  it('recovers a dispatched call whose reservation named a profile written by an earlier call exactly as recoveryEvent() describes', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    const ls = [line('alpha', 197), line('beta', 133), line('gamma', 197, 'bob')];
    await store.reserve('c1', ls, 1000, META);
    await store.dispatch('c1');
    await expectRecovered(store, heard, 'c1', ls, META, true);
    // The second call sends only its amounts: the profile is the first call's.
    const ls2 = [line('alpha', 5), line('beta', 0), line('gamma', 12, 'bob')];
    await store.reserve('c2', ls2, 1000, META);
    await store.dispatch('c2');
    await expectRecovered(store, heard, 'c2', ls2, META, true);
    await store.reserve('c3', ls2, 1000, META);
    await expectRecovered(store, heard, 'c3', ls2, META, false);
    expect(await suite.raw.hLen(profileKey(ls))).toBe(1);
    expect((await store.verify()).ok).toBe(true);
  });

  it('reserves after Redis lost the profiles (R:p deleted) by sending the profile again, and recovers that call whole', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    const ls = [line('alpha', 40), line('beta', 50)];
    await store.reserve('c1', ls, 60_000, META);
    await store.settle('c1', ls, { event: 'tollgate.decision', 'request.id': 'c1', outcome: 'success', 'user.id': 'ada' });
    expect(store.profilesRemembered()).toHaveLength(1);
    await suite.raw.del(profileKey(ls));

    expect(await store.reserve('c2', ls, 1000, META)).toEqual({ ok: true });
    expect(await store.read(ls)).toEqual([
      { used: 40, reserved: 40 },
      { used: 50, reserved: 50 },
    ]);
    expect(await suite.raw.hLen(profileKey(ls))).toBe(1);
    await store.dispatch('c2');
    await expectRecovered(store, heard, 'c2', ls, META, true);
    expect((await store.verify()).ok).toBe(true);
  });

  it('recovers a reservation whose R:i holds the parts whole (written before profiles) as before', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    for (const dispatched of [true, false]) {
      const id = dispatched ? 'old1' : 'old2';
      const ls = [line('alpha', 70), line('beta', 30, 'bob')];
      await store.reserve(id, ls, 1000, META);
      if (dispatched) await store.dispatch(id);
      const first = sorted(ls)[0]!;
      await suite.raw.hSet(`${first.reservedKey}:i`, id, oldFormat(id, sorted(ls), META));
      await suite.raw.del(`${first.reservedKey}:p`);
      await expectRecovered(store, heard, id, ls, META, dispatched);
    }
    expect((await store.verify()).ok).toBe(true);
  });

  it('sends a profile\'s text once: a second call of the same caller names it by its digest and does not write it again', async () => {
    const a = open();
    const ls = [line('alpha', 40), line('beta', 50)];
    await a.reserve('c1', ls, 60_000, META);
    const key = profileKey(ls);
    const [digest] = Object.keys(await suite.raw.hGetAll(key));
    expect(a.profilesRemembered()).toEqual([`${key} ${digest}`]);
    // Overwritten here, the profile stays overwritten unless a reservation sends its text again.
    await suite.raw.hSet(key, digest!, 'sentinel');
    await a.reserve('c2', [line('alpha', 1), line('beta', 2)], 60_000, META);
    expect(await suite.raw.hGet(key, digest!)).toBe('sentinel');
    // Another caller on the same lines is another profile, sent whole.
    await a.reserve('c3', ls, 60_000, { ...META, user: 'bob' });
    expect(await suite.raw.hLen(key)).toBe(2);
    // A replica that did not write it sends it.
    await open().reserve('c4', ls, 60_000, META);
    expect(await suite.raw.hGet(key, digest!)).not.toBe('sentinel');
  });

  it('still charges and journals a dispatched call whose profile is gone at recovery, with an event that names no caller, model or charge', async () => {
    const store = open();
    const heard: DecisionRecord[] = [];
    store.onEvent((e) => heard.push(e));
    const ls = [line('alpha', 40), line('beta', 50)];
    await store.reserve('c1', ls, 1000, META);
    await store.dispatch('c1');
    await suite.raw.del(profileKey(ls));
    clock += 1001;
    expect(await store.read(ls)).toEqual([
      { used: 40, reserved: 0 },
      { used: 50, reserved: 0 },
    ]);
    expect(heard).toHaveLength(1);
    expect(canonicalJson(heard[0])).toBe(canonicalJson(recoveryEvent('c1', { lines: sorted(ls), meta: {}, dispatched: true }, clock)).replace(',"tollgate.charged":[{"amount":40,"budget":"alpha","subject":"ada","unit":"tokens"},{"amount":50,"budget":"beta","subject":"ada","unit":"tokens"}]', ''));
    expect(heard[0]).toMatchObject({ outcome: 'success', 'tollgate.settled_by': 'recovery', transport: 'unknown', 'policy.version': 'unknown' });
    expect(heard[0]!['user.id']).toBeUndefined();
    expect(heard[0]!['tollgate.charged']).toBeUndefined();
    expect((await entries()).filter((e) => e.body.kind === 'recover')).toHaveLength(2);
    expect((await store.verify()).ok).toBe(true);
  });
});
