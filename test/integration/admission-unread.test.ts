/**
 * A call decided without reading its budgets (src/pipeline/steps/decide.ts) against the same call
 * decided on a read (a store that does not check `atMost`, so the pipeline reads first): the same
 * answers, refusals, budgets and decision events at every step from a fresh budget, over its
 * tier-down threshold, to exhaustion, with fewer reads where the budgets were not read. On the
 * embedded store and on Redis, whose reserve script checks the bounds.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { principalFromApiKey, hashApiKey } from '../../src/identity/apiKey.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { applicableLines } from '../../src/policy/budgets.js';
import { parsePolicy, type Policy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { LedgerLine, LineState } from '../../src/quota/store.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { deleteKeys, startRedis, uniquePrefix, type TestRedis } from '../helpers/redis.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');

/** The embedded store, counting its reads; `guarded: false` makes the pipeline read before it decides. */
class CountingStore extends MemoryQuotaStore {
  reads = 0;
  override readonly guarded: boolean;
  constructor(guarded: boolean) {
    super(() => NOW);
    this.guarded = guarded;
  }
  override read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    this.reads += 1;
    return super.read(lines);
  }
}

/** The Redis store, likewise: its bounds are checked by the reserve script. */
class CountingRedisStore extends RedisQuotaStore {
  reads = 0;
  override readonly guarded: boolean;
  constructor(url: string, prefix: string, guarded: boolean) {
    super({ url, prefix, now: () => NOW, sweepIntervalMs: 0 });
    this.guarded = guarded;
  }
  override read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    this.reads += 1;
    return super.read(lines);
  }
}

type Counting = CountingStore | CountingRedisStore;

const runtimes: Runtime[] = [];
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
});

let redis: TestRedis | undefined;
const root = uniquePrefix('unread');
let runs = 0;
afterAll(async () => {
  if (!redis) return;
  await deleteKeys(redis.url, root);
  await redis.stop();
});

/** A store of `kind` over a ledger of its own (on Redis: a key prefix no other run uses). */
async function storeOf(kind: 'memory' | 'redis', guarded: boolean): Promise<{ store: Counting; keyPrefix: string }> {
  if (kind === 'memory') return { store: new CountingStore(guarded), keyPrefix: 'tollgate:' };
  redis ??= await startRedis();
  const keyPrefix = `${root}${++runs}:`;
  return { store: new CountingRedisStore(redis.url, keyPrefix, guarded), keyPrefix };
}

async function start(policyText: string, kind: 'memory' | 'redis', guarded: boolean) {
  const { store, keyPrefix } = await storeOf(kind, guarded);
  const sink = memorySink();
  const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_KEY_PREFIX: keyPrefix });
  const runtime = await buildRuntime(settings, { policy: parsePolicy(policyText, 'unread.yaml'), sink, store, now: () => NOW });
  runtimes.push(runtime);
  return { runtime, store, keyPrefix, events: sink.events };
}

const who = (policy: Policy, key: string): Principal => principalFromApiKey(policy.apiKeys.get(hashApiKey(key))!);

type Step = { key: string; precharge?: number; tier?: string; estimate?: boolean };

/** Runs `steps` on a fresh gateway and says what each answered, with the decision events and the reads made. */
async function run(policyText: string, steps: Step[], kind: 'memory' | 'redis', guarded: boolean) {
  const { runtime, store, keyPrefix, events } = await start(policyText, kind, guarded);
  const g = runtime.gateway;
  const answers: unknown[] = [];
  const readsPerStep: number[] = [];
  for (const [i, step] of steps.entries()) {
    const principal = who(g.policy, step.key);
    if (step.precharge) {
      const lines = applicableLines(g.policy.budgets, principal, NOW, keyPrefix);
      await store.settle(`seed-${i}`, lines.map((l) => ({ ...l.line, amount: step.precharge! })));
    }
    const before = store.reads;
    const call = { principal, transport: 'cli' as const, requestId: `call-${i}`, request: { messages: [{ role: 'user' as const, content: 'Hello there' }], maxTokens: 50, ...(step.tier ? { tier: step.tier } : {}) } };
    let heads: unknown;
    try {
      if (step.estimate) answers.push(await g.estimate(call));
      else {
        const r = await g.complete({ ...call, onHead: (b) => (heads = b) });
        answers.push({ decision: r.decision, tier: r.tier, model: r.model, usage: r.usage, budgets: r.budgets, heads });
      }
    } catch (err) {
      const e = err as { code?: string; message: string; details?: unknown };
      answers.push({ code: e.code, message: e.message, details: e.details });
    }
    await g.idle();
    readsPerStep.push(store.reads - before);
  }
  const decisions = events.map((e) => ({ ...e, 'tollgate.latency_ms': undefined }));
  return { answers, decisions, readsPerStep };
}

describe.each(['memory', 'redis'] as const)('admission without the budget read, %s store', (kind) => {
  const steps: Step[] = [
    { key: KEYS.alice },
    { key: KEYS.alice, precharge: 700 },
    { key: KEYS.alice, tier: 'premium' },
    { key: KEYS.bob, tier: 'premium' },
    { key: KEYS.alice, precharge: 150 },
    { key: KEYS.alice, estimate: true },
    { key: KEYS.alice, precharge: 130 },
    { key: KEYS.carol },
  ];

  it('answers, refuses, reports budgets and journals exactly as a call decided on a read, reading only where a decision changes', async () => {
    const policy = basicPolicy({ userTokens: 1000, tierDownBelow: 20 });
    const unread = await run(policy, steps, kind, true);
    const read = await run(policy, steps, kind, false);
    expect(unread.answers).toEqual(read.answers);
    expect(unread.decisions).toEqual(read.decisions);
    // What the steps met: served whole, over the threshold stepped down, exhausted, and the rule's refusal.
    expect(read.answers).toMatchObject([
      { decision: { effect: 'allow', tier: 'standard' } },
      { decision: { effect: 'allow', tier: 'standard' } },
      { decision: { effect: 'allow', tier: 'premium' } },
      { code: 'POLICY_DENIED' },
      { decision: { effect: 'tier_down', tier: 'economy', budgetId: 'user-weekly' } },
      { decision: { effect: 'tier_down' } },
      { code: 'BUDGET_EXHAUSTED' },
      { decision: { effect: 'allow', tier: 'standard' } },
    ]);
    // A streamed head carries the budgets the reservation found, this call not counted; the answer
    // adds what this call was charged.
    type Served = { usage: { inputTokens: number; outputTokens: number }; budgets: { used: number; reserved: number }[]; heads: { used: number; reserved: number }[] };
    const [first, second] = unread.answers as [Served, Served];
    const tokens = (s: Served) => s.usage.inputTokens + s.usage.outputTokens;
    expect(second.heads).toMatchObject([{ id: 'user-weekly', used: 700 + tokens(first), reserved: 0 }]);
    expect(second.budgets).toMatchObject([{ id: 'user-weekly', used: 700 + tokens(first) + tokens(second), reserved: 0 }]);
    expect(read.readsPerStep).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    // No read where the call fits above the threshold; one where the rule refuses, where the bound
    // refused (the step down and the exhaustion) and for the estimate, which always reads.
    expect(unread.readsPerStep).toEqual([0, 0, 0, 1, 1, 1, 1, 0]);
  });

  it('reads before deciding when a rule reads budgets', async () => {
    const policy = basicPolicy({ userTokens: 1000, tierDownBelow: 20, rules: `  - id: low-budget\n    when: "budgets['user-weekly'].remainingPct < 50.0"\n    effect: deny\n    message: Half spent.` });
    const few: Step[] = [{ key: KEYS.alice }, { key: KEYS.alice, precharge: 600 }];
    const unread = await run(policy, few, kind, true);
    const read = await run(policy, few, kind, false);
    expect(unread.answers).toEqual(read.answers);
    expect(unread.answers).toMatchObject([{ decision: { effect: 'allow' } }, { code: 'POLICY_DENIED', message: 'Half spent.' }]);
    expect(unread.readsPerStep).toEqual([1, 1]);
  });
});
