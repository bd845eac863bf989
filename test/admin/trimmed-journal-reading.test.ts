/**
 * A journal whose first entries are gone (ended segments archived, a Redis stream trimmed by its
 * retention) holds nothing of what came before its first entry: `usage export`, `report` and
 * `refusals` over a range that starts before it are refused (INVALID_REQUEST, exit 2), naming
 * where it starts, instead of answering with what is left as if it were the whole range. From its
 * first entry on, or with --trimmed, they read it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageCommand } from '../../src/admin/cli.js';
import { GatewayError } from '../../src/errors.js';
import { lineKeys } from '../../src/policy/budgets.js';
import { FileJournal, segmentFiles } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';

const POLICY = `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
budgets:
  - { id: weekly, scope: user, window: { calendar: week }, limit: { tokens: 1000000 } }
`;
const DAY1 = Date.parse('2026-11-23T10:00:00Z');
const DAY2 = DAY1 + 86_400_000;

let work: string;
let dir: string;
let policy: string;

function line(at: number) {
  const week = Date.parse('2026-11-23T00:00:00Z');
  return { budgetId: 'weekly', subject: 'alice', ...lineKeys('tollgate:', 'weekly', 'alice', [week], week), limit: 1_000_000, amount: 10, expiresAt: at + 30 * 86_400_000 };
}

function event(id: string, at: number) {
  return { event: 'tollgate.decision', 'request.id': id, time: new Date(at).toISOString(), outcome: 'success', 'user.id': 'alice', 'tollgate.model.served': 'demo/medium', 'tollgate.tier.served': 'standard', 'gen_ai.usage.input_tokens': 4, 'gen_ai.usage.output_tokens': 6, 'tollgate.cost_usd': 0.0001, 'tollgate.latency_ms': 0 };
}

/** `calls` calls a day on two days, into the journal (a segment a day on the embedded store). */
async function twoDays(store: (now: () => number) => { store: MemoryQuotaStore | RedisQuotaStore; close: () => Promise<void> }, calls = 1): Promise<void> {
  for (const at of [DAY1, DAY2]) {
    const s = store(() => at);
    for (let i = 0; i < calls; i++) {
      const id = `r${at}-${i}`;
      await s.store.reserve(id, [line(at)], 60_000);
      await s.store.settle(id, [line(at)], event(id, at));
    }
    await s.close();
  }
}

async function refused(run: Promise<unknown>): Promise<string> {
  const err = await run.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('INVALID_REQUEST');
  return (err as GatewayError).message;
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'tollgate-trimmed-'));
  policy = join(work, 'policy.yaml');
  writeFileSync(policy, POLICY);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('reading a journal whose first entries are gone', () => {
  it('refuses export, report and refusals from before an embedded journal\'s first segment kept, and reads from it on or with --trimmed', async () => {
    dir = join(work, 'data');
    await twoDays((now) => {
      const { journal, replay } = FileJournal.open({ dir, now });
      const store = new MemoryQuotaStore(now, journal);
      store.restore(replay);
      journal.snapshotSource = () => store.snapshot();
      return { store, close: () => journal.close() };
    });
    const ended = segmentFiles(dir).filter((f) => !f.endsWith('journal.jsonl'));
    expect(ended).toHaveLength(1);
    const args = { 'data-dir': dir, policy };
    const from = '2026-11-23';
    const to = '2026-11-25';
    // Both days are there: the export reads them.
    expect((await usageCommand('export', { ...args, from, to }, [], {})).trim().split('\n')).toHaveLength(3);
    rmSync(ended[0]!);
    for (const verb of ['export', 'report', 'refusals']) {
      const message = await refused(usageCommand(verb, { ...args, from, to }, [], {}));
      expect(message.replace(dir, '<dir>')).toMatch(
        new RegExp(`^The journal in <dir> starts at entry 3, written 2026-11-24T10:00:00\\.000Z: the entries before it were trimmed by retention or archived, so it does not hold what came between 2026-11-23T00:00:00\\.000Z and then\\. Read from`),
      );
    }
    expect((await usageCommand('export', { ...args, from: '2026-11-24T10:00:00Z', to }, [], {})).trim().split('\n')).toHaveLength(2);
    expect((await usageCommand('export', { ...args, from, to, trimmed: true }, [], {})).trim().split('\n')).toHaveLength(2);
  });

  it('refuses an export from before a Redis stream trimmed by retention starts', async () => {
    const redis: PrivateRedis = await startPrivateRedis();
    const prefix = uniquePrefix('trimmed');
    try {
      await twoDays((now) => {
        const store = new RedisQuotaStore({ url: redis.url, prefix, now, journal: { maxLen: 10 } });
        return { store, close: () => store.close() };
        // Redis trims whole nodes of 100 entries: 300 entries a day leave the first day's trimmed away.
      }, 150);
      const env = { TOLLGATE_KEY_PREFIX: prefix };
      const args = { redis: redis.url, policy, from: '2026-11-23', to: '2026-11-25' };
      expect(await refused(usageCommand('export', args, [], env))).toMatch(/^The Redis journal stream .* starts at entry \d+, written 2026-11-24T10:00:00\.000Z: the entries before it were trimmed/);
      expect((await usageCommand('export', { ...args, trimmed: true }, [], env)).trim().split('\n')).toHaveLength(2);
    } finally {
      await redis.stop();
    }
  });
});
