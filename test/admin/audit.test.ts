/**
 * `tollgate audit verify` on a real journal, written by the embedded store (MemoryQuotaStore on a
 * FileJournal) over two days and a restart: the untouched journal verifies; an entry edited,
 * deleted, moved or cut from the end, a snapshot that does not state what the entries before it add
 * up to, a charge whose event is missing or says otherwise, and a release whose event claims a
 * charge each fail at the entry they touch, naming it.
 */
import { appendFileSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatAudit, runAuditCommand, verifyJournalDir } from '../../src/admin/audit.js';
import { StoreMismatchError } from '../../src/admin/mismatch.js';
import { FileJournal, readHead, segmentFiles } from '../../src/quota/fileJournal.js';
import { chained, type EntryBody, type JournalEntry } from '../../src/quota/journal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { DecisionRecord, LedgerLine } from '../../src/quota/store.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const DAY = 86_400_000;
const WEEK_END = Date.parse('2026-11-30T00:00:00Z');

function line(budget: 'user-weekly' | 'team-daily', subject: string, amount: number, day = 0): LedgerLine {
  // Keys as the gateway names them: the hash tag, then the window's start (epoch ms).
  const tag = `tollgate:{${budget}|${subject}}`;
  const start = budget === 'user-weekly' ? Date.parse('2026-11-23T00:00:00Z') : Date.parse(day === 0 ? '2026-11-25T00:00:00Z' : '2026-11-26T00:00:00Z');
  const expiresAt = budget === 'user-weekly' ? WEEK_END : start + DAY;
  return { budgetId: budget, subject, usageKey: `${tag}:u:${start}`, readKeys: [`${tag}:u:${start}`], reservedKey: `${tag}:r`, limit: 1_000_000, amount, expiresAt };
}

/** The decision event of a call, with the fields the audit reads. */
function event(id: string, user: string, outcome: 'success' | 'refused' | 'failed', charged?: LedgerLine[], code?: string): DecisionRecord {
  return {
    event: 'tollgate.decision',
    'request.id': id,
    time: new Date(clock).toISOString(),
    outcome,
    'error.code': code,
    'user.id': user,
    'user.teams': ['platform'],
    'tollgate.charged': charged?.map((l) => ({ budget: l.budgetId, subject: l.subject, amount: l.amount, unit: 'tokens' })),
    'tollgate.settled_by': charged ? 'call' : undefined,
    // What the call used: every token line of a call is charged its tokens in and out.
    'gen_ai.usage.input_tokens': charged ? charged[0]!.amount - 2 : 0,
    'gen_ai.usage.output_tokens': charged ? 2 : 0,
    'tollgate.cost_usd': 0,
  };
}

/** A policy declaring the journal's budgets: the audit checks the journal was written under it. */
function journalPolicy(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'tollgate-audit-policy-')), 'policy.yaml');
  writeFileSync(
    file,
    ['version: 1', 'providers: { demo: { kind: demo } }', 'tiers: { standard: [demo/medium] }', 'budgets:']
      .concat(['user-weekly: user, week', 'team-daily: team, day'].map((b) => {
        const [id, rest] = b.split(': ');
        const [scope, calendar] = rest!.split(', ');
        return `  - { id: ${id}, scope: ${scope}, window: { calendar: ${calendar} }, limit: { tokens: 1000000 } }`;
      }))
      .join('\n') + '\n',
  );
  return file;
}
const POLICY = ['--policy', journalPolicy()];

let dir: string;
let clock = NOW;
const now = () => clock;

function open() {
  const { journal, replay } = FileJournal.open({ dir, now });
  const store = new MemoryQuotaStore(now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  return { store, journal };
}

/**
 * Day 1: alice is charged twice, bob's call fails and is released, carol is refused; alice's third
 * call is still open when the day ends. Day 2 (a new segment, opening with a snapshot): that call
 * settles, bob is charged; then the process dies with carol's call at the provider, and the next
 * start's recovery charges it at its reservation.
 */
async function writeJournal(): Promise<void> {
  const first = open();
  const s = first.store;
  const a1 = [line('user-weekly', 'alice', 30), line('team-daily', 'platform', 30)];
  await s.reserve('a1', a1.map((l) => ({ ...l, amount: 100 })), 60_000, { user: 'alice' });
  await s.dispatch('a1');
  await s.settle('a1', a1, event('a1', 'alice', 'success', a1));
  const a2 = [line('user-weekly', 'alice', 12), line('team-daily', 'platform', 12)];
  await s.reserve('a2', a2, 60_000, { user: 'alice' });
  await s.dispatch('a2');
  await s.settle('a2', a2, event('a2', 'alice', 'success', a2));
  await s.reserve('b1', [line('user-weekly', 'bob', 50)], 60_000, { user: 'bob' });
  await s.release('b1', event('b1', 'bob', 'failed', undefined, 'PROVIDER_ERROR'));
  await s.record(event('c1', 'carol', 'refused', undefined, 'POLICY_DENIED'));
  await s.reserve('a3', [line('user-weekly', 'alice', 40)], 60_000, { user: 'alice' });
  await s.dispatch('a3');
  clock = NOW + DAY;
  const a3 = [line('user-weekly', 'alice', 25)];
  await s.settle('a3', a3, event('a3', 'alice', 'success', a3));
  const b2 = [line('user-weekly', 'bob', 8), line('team-daily', 'platform', 8, 1)];
  await s.reserve('b2', b2, 60_000, { user: 'bob' });
  await s.dispatch('b2');
  await s.settle('b2', b2, event('b2', 'bob', 'success', b2));
  await s.reserve('c2', [line('user-weekly', 'carol', 60)], 60_000, { user: 'carol' });
  await s.dispatch('c2');
  await first.journal.close();
  // The next start: recovery charges carol's call at its reservation.
  const second = open();
  second.store.recover((id, r) => ({
    'request.id': id,
    outcome: 'success',
    'user.id': 'carol',
    'tollgate.charged': r.lines.map((l) => ({ budget: l.budgetId, subject: l.subject, amount: l.amount, unit: 'tokens' })),
    'tollgate.settled_by': 'recovery',
  }));
  await second.journal.close();
}

/** Every segment's entries, by file name. */
function segments(): { name: string; entries: JournalEntry[] }[] {
  return segmentFiles(dir).map((f) => ({
    name: f.slice(dir.length + 1),
    entries: readFileSync(f, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as JournalEntry),
  }));
}

function writeSegment(name: string, entries: JournalEntry[]): void {
  writeFileSync(join(dir, name), entries.map((e) => `${JSON.stringify(e)}\n`).join(''));
}

/** Edits the entries as the whole stream and chains them again, segments and head included: only the audit's ledger and event checks can see it. */
function reseal(edit: (bodies: { segment: string; body: EntryBody }[]) => { segment: string; body: EntryBody }[]): void {
  const all = segments().flatMap((s) => s.entries.map((e) => ({ segment: s.name, body: e.body })));
  const edited = edit(all);
  const out = new Map<string, JournalEntry[]>(segments().map((s) => [s.name, []]));
  let prev: string | undefined;
  edited.forEach((x, i) => {
    const e = chained(i + 1, prev ?? '0'.repeat(40), x.body);
    prev = e.link;
    out.get(x.segment)!.push(e);
  });
  for (const [name, entries] of out) writeSegment(name, entries);
  const last = [...out.values()].flat().at(-1)!;
  writeFileSync(join(dir, 'head.json'), JSON.stringify({ seq: last.seq, link: last.link }));
}

const fault = () => verifyJournalDir(dir).fault;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-'));
  clock = NOW;
  await writeJournal();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('audit verify: the untouched journal', () => {
  it('is the journal the test means to write', () => {
    expect(segments().map((s) => [s.name, s.entries.map((e) => `${e.seq} ${e.body.kind} ${e.body.id}`)])).toEqual([
      ['journal-000000000001.jsonl', ['1 reserve a1', '2 dispatch a1', '3 settle a1', '4 reserve a2', '5 dispatch a2', '6 settle a2', '7 reserve b1', '8 release b1', '9 refuse c1', '10 reserve a3', '11 dispatch a3']],
      ['journal.jsonl', ['12 snapshot snapshot-12', '13 settle a3', '14 reserve b2', '15 dispatch b2', '16 settle b2', '17 reserve c2', '18 dispatch c2', '19 recover c2']],
    ]);
    expect(readHead(dir)).toEqual({ seq: 19, link: segments()[1]!.entries[7]!.link });
  });

  it('verifies, with the charges summed per usage counter', async () => {
    const report = verifyJournalDir(dir);
    expect(report).toMatchObject({ ok: true, entries: 19, firstSeq: 1, lastSeq: 19, snapshots: 1, charges: 5, otherEvents: 2, notes: [] });
    expect(report.counters).toEqual([
      { usageKey: 'tollgate:{team-daily|platform}:u:1795564800000', budgetId: 'team-daily', subject: 'platform', charges: 2, total: 42, expiresAt: Date.parse('2026-11-26T00:00:00Z') },
      { usageKey: 'tollgate:{team-daily|platform}:u:1795651200000', budgetId: 'team-daily', subject: 'platform', charges: 1, total: 8, expiresAt: Date.parse('2026-11-27T00:00:00Z') },
      { usageKey: 'tollgate:{user-weekly|alice}:u:1795392000000', budgetId: 'user-weekly', subject: 'alice', charges: 3, total: 67, expiresAt: WEEK_END },
      { usageKey: 'tollgate:{user-weekly|bob}:u:1795392000000', budgetId: 'user-weekly', subject: 'bob', charges: 1, total: 8, expiresAt: WEEK_END },
      { usageKey: 'tollgate:{user-weekly|carol}:u:1795392000000', budgetId: 'user-weekly', subject: 'carol', charges: 1, total: 60, expiresAt: WEEK_END },
    ]);
    const { out, code } = await runAuditCommand(['verify', '--data-dir', dir, ...POLICY], {});
    expect(code).toBe(0);
    expect(out.replace(dir, 'DIR')).toBe(
      [
        'journal DIR: verified',
        '  entries  1 to 19 in 2 segments; head.json names entry 19',
        '  chain    unbroken from the first entry to the last',
        '  ledger   1 snapshot equal to the replay of the entries before it; 5 charges on 5 usage counters',
        '  events   every charge carries its decision event with the same amounts; 2 other decision events (releases, refusals) charge nothing',
        '',
        'usage counter                                   charges  total',
        'tollgate:{team-daily|platform}:u:1795564800000        2     42',
        'tollgate:{team-daily|platform}:u:1795651200000        1      8',
        'tollgate:{user-weekly|alice}:u:1795392000000          3     67',
        'tollgate:{user-weekly|bob}:u:1795392000000            1      8',
        'tollgate:{user-weekly|carol}:u:1795392000000          1     60',
        '',
      ].join('\n'),
    );
  });

  it('accepts entries after the head (not fsync\'d yet) and a partial last line being written', () => {
    const [, current] = segments();
    writeFileSync(join(dir, 'head.json'), JSON.stringify({ seq: 17, link: current!.entries[5]!.link }));
    appendFileSync(join(dir, 'journal.jsonl'), '{"seq":20,"h":"ab');
    const report = verifyJournalDir(dir);
    expect(report.ok).toBe(true);
    expect(report.notes).toEqual([
      'journal.jsonl line 9 is a partial entry after the last whole one (being written, or cut by a crash; the gateway drops it at its next start)',
      "head.json names entry 17; the 2 after it are not fsync'd yet (at most the fsync interval behind)",
    ]);
  });
});

describe('audit verify: the chain', () => {
  it('fails at an entry whose body was edited', async () => {
    const [ended] = segments();
    (ended!.entries[5]!.body.lines![0]!).amount = 2;
    writeSegment(ended!.name, ended!.entries);
    expect(fault()).toEqual({ seq: 6, check: 'chain', reason: 'entry 6 was altered: its body does not hash to its h', file: 'journal-000000000001.jsonl', line: 6 });
    const { out, code } = await runAuditCommand(['verify', '--data-dir', dir, ...POLICY], {});
    expect(code).toBe(1);
    expect(out.replace(dir, 'DIR')).toBe(
      ['journal DIR: FAILED at entry 6 (journal-000000000001.jsonl line 6)', '  chain: entry 6 was altered: its body does not hash to its h', '  entries 1 to 5 passed every check before it', ''].join('\n'),
    );
  });

  it('fails at a line whose text was changed where parsing it back does not show (a duplicate key, a space)', () => {
    const file = join(dir, 'journal-000000000001.jsonl');
    const lines = readFileSync(file, 'utf8').split('\n');
    const at = lines.findIndex((l) => l.includes('"kind":"settle"') && l.includes('"user.id":"alice"'));
    expect(at).toBeGreaterThan(0);
    const untouched = lines.join('\n');
    // A second user.id before the real one: JSON.parse keeps the last, so the parsed body is unchanged.
    lines[at] = lines[at]!.replace('"user.id":"alice"', '"user.id":"mallory","user.id":"alice"');
    writeFileSync(file, lines.join('\n'));
    expect(fault()).toMatchObject({ seq: at + 1, check: 'chain', reason: `entry ${at + 1} was altered: its body does not hash to its h` });
    writeFileSync(file, untouched.replace('"kind":"settle"', '"kind": "settle"'));
    expect(fault()).toMatchObject({ check: 'chain', reason: expect.stringContaining('was altered') });
  });

  it('fails where an entry was deleted', () => {
    const [ended] = segments();
    writeSegment(ended!.name, ended!.entries.filter((e) => e.seq !== 8));
    expect(fault()).toEqual({ seq: 8, check: 'chain', reason: 'entry 8 is missing or out of order (found 9)', file: 'journal-000000000001.jsonl', line: 8 });
  });

  it('fails where two entries were swapped', () => {
    const [ended] = segments();
    const e = ended!.entries;
    [e[3], e[4]] = [e[4]!, e[3]!];
    writeSegment(ended!.name, e);
    expect(fault()).toEqual({ seq: 4, check: 'chain', reason: 'entry 4 is missing or out of order (found 5)', file: 'journal-000000000001.jsonl', line: 4 });
  });

  it('fails where entries were removed from the end, against the head', () => {
    const [, current] = segments();
    writeSegment('journal.jsonl', current!.entries.slice(0, 6));
    expect(fault()).toEqual({ seq: 18, check: 'chain', reason: 'the journal ends at entry 17 but head.json says entry 19 was written: entries were removed from the end' });
  });

  it('fails when the entry at the head is not the one the head names', () => {
    writeFileSync(join(dir, 'head.json'), JSON.stringify({ seq: 19, link: 'f'.repeat(40) }));
    expect(fault()).toEqual({ seq: 19, check: 'chain', reason: 'entry 19 is not the entry the head names', file: 'journal.jsonl', line: 8 });
  });

  it('fails at entry 1 when the first segment is gone, unless told earlier segments were archived', async () => {
    unlinkSync(join(dir, 'journal-000000000001.jsonl'));
    expect(fault()).toEqual({
      seq: 1,
      check: 'chain',
      reason: 'the journal starts at entry 12: entries 1 to 11 are missing (if earlier segments were archived, pass --trimmed)',
      file: 'journal.jsonl',
      line: 1,
    });
    const trimmed = verifyJournalDir(dir, { trimmed: true });
    expect(trimmed).toMatchObject({ ok: true, entries: 8, firstSeq: 12, lastSeq: 19, snapshots: 0, charges: 3 });
    expect(trimmed.notes).toEqual(['the journal starts at entry 12 (earlier segments archived): its snapshot is taken as the starting state, and the totals cover the entries from there']);
    expect(trimmed.counters.map((c) => [c.usageKey, c.total])).toEqual([
      ['tollgate:{team-daily|platform}:u:1795651200000', 8],
      ['tollgate:{user-weekly|alice}:u:1795392000000', 25],
      ['tollgate:{user-weekly|bob}:u:1795392000000', 8],
      ['tollgate:{user-weekly|carol}:u:1795392000000', 60],
    ]);
    expect((await runAuditCommand(['verify', '--data-dir', dir, '--trimmed', ...POLICY], {})).code).toBe(0);
  });

  it('with --trimmed, still fails when the first entry left does not open a segment', () => {
    const [ended] = segments();
    writeSegment(ended!.name, ended!.entries.slice(3));
    expect(verifyJournalDir(dir, { trimmed: true }).fault).toMatchObject({ seq: 4, check: 'chain', reason: 'the journal starts at entry 4, which does not open a segment (a snapshot): entries before it are missing' });
  });

  it('fails at a line that is not an entry, before the last', () => {
    const text = readFileSync(join(dir, 'journal-000000000001.jsonl'), 'utf8').split('\n');
    text[2] = text[2]!.slice(0, 40);
    writeFileSync(join(dir, 'journal-000000000001.jsonl'), text.join('\n'));
    expect(fault()).toEqual({ seq: 3, check: 'chain', reason: 'entry 3 cannot be read: the line is not JSON', file: 'journal-000000000001.jsonl', line: 3 });
  });

  it('fails at a partial line the head says was written', () => {
    const [, current] = segments();
    writeFileSync(join(dir, 'journal.jsonl'), current!.entries.map((e) => JSON.stringify(e)).join('\n').slice(0, -10));
    expect(fault()).toEqual({ seq: 19, check: 'chain', reason: 'entry 19 cannot be read: its last line (644 bytes) is not a whole entry', file: 'journal.jsonl', line: 8 });
  });
});

describe('audit verify: the ledger (a journal chained again after the edit)', () => {
  it('fails at a snapshot that states a counter the entries before it do not add up to', () => {
    reseal((all) =>
      all.map((x) => {
        if (x.body.kind !== 'snapshot') return x;
        const state = structuredClone(x.body.state!) as { counters: Record<string, { value: number }> };
        state.counters['tollgate:{user-weekly|alice}:u:1795392000000']!.value = 2;
        return { ...x, body: { ...x.body, state } };
      }),
    );
    expect(fault()).toEqual({
      seq: 12,
      check: 'ledger',
      reason: 'entry 12 (snapshot): the snapshot says usage counter tollgate:{user-weekly|alice}:u:1795392000000 is 2, the entries before it add up to 42',
      file: 'journal.jsonl',
      line: 1,
    });
  });

  it('fails at the next snapshot when a charge is missing from the record (the day-1 team counter has expired by then)', () => {
    reseal((all) => all.filter((x) => !(x.body.kind === 'settle' && x.body.id === 'a2')));
    expect(fault()).toMatchObject({
      seq: 11,
      check: 'ledger',
      reason: 'entry 11 (snapshot): the snapshot says usage counter tollgate:{user-weekly|alice}:u:1795392000000 is 42, the entries before it add up to 30',
    });
  });

  it('fails at a snapshot holding a reservation no entry left open', () => {
    reseal((all) => all.filter((x) => !(x.body.kind === 'reserve' && x.body.id === 'a3') && !(x.body.kind === 'dispatch' && x.body.id === 'a3')));
    expect(fault()).toMatchObject({ seq: 10, check: 'ledger', reason: 'entry 10 (snapshot): the snapshot holds a reservation for request a3, which no entry before it left open' });
  });
});

describe('audit verify: an event for every charge (a journal chained again after the edit)', () => {
  it('fails at a charge whose event says it charged another amount', () => {
    reseal((all) =>
      all.map((x) => {
        if (!(x.body.kind === 'settle' && x.body.id === 'b2')) return x;
        const ev = structuredClone(x.body.event!) as { 'tollgate.charged': { amount: number }[] };
        ev['tollgate.charged'][0]!.amount = 7;
        return { ...x, body: { ...x.body, event: ev } };
      }),
    );
    expect(fault()).toEqual({
      seq: 16,
      check: 'events',
      reason: 'entry 16 (settle) charges user-weekly/bob 8, team-daily/platform 8 but its event says it charged user-weekly/bob 7, team-daily/platform 8',
      file: 'journal.jsonl',
      line: 5,
    });
    expect(formatAudit(verifyJournalDir(dir)).replace(dir, 'DIR')).toBe(
      [
        'journal DIR: FAILED at entry 16 (journal.jsonl line 5)',
        '  events: entry 16 (settle) charges user-weekly/bob 8, team-daily/platform 8 but its event says it charged user-weekly/bob 7, team-daily/platform 8',
        '  entries 1 to 15 passed every check before it',
        '',
      ].join('\n'),
    );
  });

  // Found by a probe: a journal chained again after its events were edited (another user, a
  // million output tokens, $1,000) verified, and the usage report and exports showed the forgery.
  const editEvent = (id: string, edit: (ev: Record<string, unknown>) => void) =>
    reseal((all) =>
      all.map((x) => {
        if (!(x.body.kind === 'settle' && x.body.id === id)) return x;
        const ev = structuredClone(x.body.event!) as Record<string, unknown>;
        edit(ev);
        return { ...x, body: { ...x.body, event: ev } };
      }),
    );

  it('fails at a charge whose event names another caller than the lines it charges', () => {
    editEvent('b2', (ev) => (ev['user.id'] = 'mallory'));
    expect(fault()).toMatchObject({ seq: 16, check: 'events', reason: 'entry 16 (settle) charges user-weekly/bob, a subject its event\'s caller is not (user mallory, teams platform)' });
  });

  it('fails at a charge whose event says the call used other tokens than its token lines were charged', () => {
    editEvent('b2', (ev) => (ev['gen_ai.usage.output_tokens'] = 1_000_000));
    expect(fault()).toMatchObject({ seq: 16, check: 'events', reason: 'entry 16 (settle) charges user-weekly/bob 8 tokens but its event says the call used 1000006 tokens' });
  });

  it('fails at a charge whose event states another cost than its dollar lines were charged', () => {
    editEvent('b2', (ev) => {
      (ev['tollgate.charged'] as { unit: string }[])[0]!.unit = 'micro_usd';
      ev['tollgate.cost_usd'] = 1000;
    });
    expect(fault()).toMatchObject({ seq: 16, check: 'events', reason: 'entry 16 (settle) charges user-weekly/bob 8 micro-dollars but its event says the call cost 1000000000 micro-dollars' });
  });

  // Found by a re-probe of the check above: the caller was one set of names, so a team named like
  // the charged user passed; figures that are not numbers, and a charge moved to another subject
  // with its event, were not checked at all.
  const SCOPES = { scopes: new Map([['user-weekly', 'user'], ['team-daily', 'team']]) };

  it('fails at a user line whose event names another user, even with a team of that name', () => {
    editEvent('b2', (ev) => {
      ev['user.id'] = 'mallory';
      ev['user.teams'] = ['platform', 'bob'];
    });
    expect(verifyJournalDir(dir, SCOPES).fault).toMatchObject({ seq: 16, check: 'events', reason: "entry 16 (settle) charges user-weekly/bob, a user budget, but its event's user is mallory" });
  });

  it('fails at an event whose user or figures are not what they must be', () => {
    editEvent('b2', (ev) => (ev['user.id'] = 31337));
    expect(fault()).toMatchObject({ seq: 16, check: 'events', reason: 'entry 16 (settle) has an event whose user.id is not a string' });
  });

  it('fails at an event whose figures are not numbers', () => {
    editEvent('b2', (ev) => (ev['gen_ai.usage.output_tokens'] = '1000000'));
    expect(fault()).toMatchObject({ seq: 16, check: 'events', reason: 'entry 16 (settle) has an event whose gen_ai.usage.output_tokens is not a number' });
  });

  it('fails at a charge moved with its event to a subject its reservation did not hold', () => {
    reseal((all) =>
      all.map((x) => {
        if (!(x.body.kind === 'settle' && x.body.id === 'a2')) return x;
        const body = structuredClone(x.body);
        body.lines = body.lines!.map((l) => (l.budgetId === 'user-weekly' ? { ...l, subject: 'bob', usageKey: l.usageKey.replace('alice', 'bob'), reservedKey: l.reservedKey.replace('alice', 'bob') } : l));
        const ev = body.event as Record<string, unknown>;
        ev['user.id'] = 'bob';
        (ev['tollgate.charged'] as { subject: string }[])[0]!.subject = 'bob';
        return { ...x, body };
      }),
    );
    expect(fault()).toMatchObject({ seq: 6, check: 'events', reason: 'entry 6 (settle) charges user-weekly/bob, which its reservation (entry 4) does not hold' });
  });

  it('fails at a charge without its event', () => {
    reseal((all) => all.map((x) => (x.body.kind === 'recover' ? { ...x, body: { ...x.body, event: undefined } } : x)));
    expect(fault()).toMatchObject({ seq: 19, check: 'events', reason: 'entry 19 (recover) charges request c2 without its decision event' });
  });

  it('fails at a charge carrying another request\'s event', () => {
    reseal((all) => {
      const a1 = all.find((x) => x.body.kind === 'settle' && x.body.id === 'a1')!.body.event;
      return all.map((x) => (x.body.kind === 'settle' && x.body.id === 'a2' ? { ...x, body: { ...x.body, event: a1 } } : x));
    });
    expect(fault()).toMatchObject({ seq: 6, check: 'events', reason: 'entry 6 (settle) charges request a2 but carries the event of request a1' });
  });

  it('fails at a release whose event claims a charge', () => {
    reseal((all) =>
      all.map((x) =>
        x.body.kind === 'release' ? { ...x, body: { ...x.body, event: { ...x.body.event, 'tollgate.charged': [{ budget: 'user-weekly', subject: 'bob', amount: 50, unit: 'tokens' }] } } } : x,
      ),
    );
    expect(fault()).toMatchObject({ seq: 8, check: 'events', reason: 'entry 8 (release) charges nothing but its event says it charged user-weekly/bob 50' });
  });

  it('fails at a request charged a second time', () => {
    reseal((all) => {
      const i = all.findIndex((x) => x.body.kind === 'settle' && x.body.id === 'a2');
      return [...all.slice(0, i + 1), all[i]!, ...all.slice(i + 1)];
    });
    expect(fault()).toMatchObject({ seq: 7, check: 'events', reason: 'entry 7 charges request a2 a second time (entry 6 charged it)' });
  });
});

describe('audit verify: the command', () => {
  it('reads TOLLGATE_DATA_DIR when no --data-dir is given, and prints JSON with --json', async () => {
    const { out, code } = await runAuditCommand(['verify', '--json', ...POLICY], { TOLLGATE_DATA_DIR: dir });
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ ok: true, entries: 19, lastSeq: 19 });
  });

  it('refuses a journal written under another policy, naming the budgets it holds that the policy does not declare', async () => {
    // Without --policy the audit reads the shipped default policy, whose budgets are others.
    const refused = runAuditCommand(['verify', '--data-dir', dir], {});
    await expect(refused).rejects.toThrow(StoreMismatchError);
    await expect(refused).rejects.toThrow(/^The journal in .* holds usage for budgets the policy .*policy\/default\.yaml does not declare: team-daily, user-weekly \(it declares employee-weekly,/);
    expect((await runAuditCommand(['verify', '--data-dir', dir, '--allow-other-budgets'], {})).code).toBe(0);
  });

  it('names a directory without a journal', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'tollgate-audit-empty-'));
    try {
      await expect(runAuditCommand(['verify', '--data-dir', empty], {})).rejects.toThrow(`no journal in ${empty}`);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('formats a report the same way it returns it', () => {
    expect(formatAudit(verifyJournalDir(dir)).split('\n')[0]).toBe(`journal ${dir}: verified`);
  });
});
