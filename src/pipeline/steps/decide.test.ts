/**
 * The decide step alone, over a real ledger (MemoryQuotaStore, or Redis where nothing listens for
 * an unreachable store). Reads: principal, request, policy, and the budget lines' state in the
 * store, where the decision may turn on it: the embedded store here is one that does not check a
 * reservation's bounds (`ReadFirstStore`), and the unreachable one is met under a rule that reads
 * budgets; a call decided without the read is at the end. Writes: estimatedInputTokens, lines, budgets, decision, and storeError when the store is
 * unreachable. Calls next on allow or tier_down; throws POLICY_DENIED, BUDGET_EXHAUSTED,
 * UNKNOWN_MODEL or QUOTA_STORE_UNAVAILABLE without calling it. Reserves nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicPolicy, KEYS } from '../../../test/fixtures/policies.js';
import { callContext, clock, recordingNext, refusal, testLedger, testPolicy, unreachableStore, userBudgetWith } from '../../../test/helpers/callContext.js';
import { keyPrincipal } from '../../../test/helpers/principal.js';
import type { CompletionInput } from '../../call/request.js';
import type { Principal } from '../../identity/principal.js';
import type { Policy } from '../../policy/load.js';
import { MemoryQuotaStore } from '../../quota/memory.js';
import type { QuotaStore } from '../../quota/store.js';
import type { RedisQuotaStore } from '../../quota/redis.js';
import type { CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { enforcePolicy } from './decide.js';

/** The embedded store, not offering to check a reservation's bounds: the step reads before it decides. */
class ReadFirstStore extends MemoryQuotaStore {
  override readonly guarded = false;
}

/** A rule that names budgets and never matches: a policy with it is decided on a read. */
const READS_BUDGETS = `  - id: reads-budgets
    when: "'no-such-budget' in budgets"
    effect: deny`;

/** Monday 13 January 2025 00:00 and Monday 20 January 00:00, Europe/Paris: the fixture's weekly window around the test clock. */
const WEEK_START = Date.parse('2025-01-12T23:00:00Z');
const WEEK_END = Date.parse('2025-01-19T23:00:00Z');

const policy = testPolicy(basicPolicy());
const alice = keyPrincipal({ policy }, KEYS.alice);
const bob = keyPrincipal({ policy }, KEYS.bob);
const medium = policy.models.get('demo/medium')!;
const small = policy.models.get('demo/small')!;

/** 9 bytes of system prompt and 20 of message: the bound (src/providers/estimate.ts) is 9 + 20 bytes + 2 x 8 per message + 16 = 61 input tokens. */
const ask = (over: Partial<CompletionInput> = {}): CompletionInput => ({
  system: 'Be brief.',
  messages: [{ role: 'user', content: 'Summarise the report' }],
  maxTokens: 200,
  ...over,
});

/** Puts `used` settled tokens (and optionally `reserved` held by another call) on the user-weekly line of `who`. */
async function spend(ledger: Ledger, store: QuotaStore, who: Principal, used: number, reserved = 0, p: Policy = policy): Promise<void> {
  const [line] = ledger.linesFor(p, who);
  await store.settle(`earlier-${who.user}`, [{ ...line!.line, amount: used }]);
  if (reserved) await store.reserve(`in-flight-${who.user}`, [{ ...line!.line, amount: reserved }], 600_000);
}

/** What the context held when next ran. */
const seen = (ctx: CallContext) => () => ({
  estimatedInputTokens: ctx.estimatedInputTokens,
  lines: ctx.lines.map((l) => ({ budget: l.budget.config.id, subject: l.subject, resetsAt: l.resetsAt, line: l.line })),
  budgets: ctx.budgets.map((b) => ({ budget: b.budget.config.id, subject: b.subject, used: b.used, reserved: b.reserved, resetsAt: b.resetsAt })),
  decision: ctx.decision,
  storeError: ctx.storeError,
});

describe('decide step', () => {
  it('writes the input estimate, the budget lines, their state in the store and an allow decision, then calls next', async () => {
    const store = new ReadFirstStore(clock);
    const ledger = testLedger(store);
    await spend(ledger, store, alice, 1200, 300);
    const ctx = callContext(policy, { principal: alice, request: ask() });
    const next = recordingNext(seen(ctx));

    await enforcePolicy({ ledger, now: clock })(ctx, next);

    expect(next.calls).toEqual([
      {
        estimatedInputTokens: 61,
        lines: [
          {
            budget: 'user-weekly',
            subject: 'alice',
            resetsAt: WEEK_END,
            line: {
              budgetId: 'user-weekly',
              subject: 'alice',
              limit: 10000,
              // Counters outlive their window by two hours, so a late settle still lands in it.
              expiresAt: WEEK_END + 2 * 3_600_000,
              usageKey: `tollgate:{user-weekly|alice}:u:${WEEK_START}`,
              readKeys: [`tollgate:{user-weekly|alice}:u:${WEEK_START}`],
              reservedKey: 'tollgate:{user-weekly|alice}:r',
              // The line's journal JSON up to its amount, made with the line.
              head: `{"budgetId":"user-weekly","subject":"alice","usageKey":"tollgate:{user-weekly|alice}:u:${WEEK_START}","reservedKey":"tollgate:{user-weekly|alice}:r","amount":`,
            },
          },
        ],
        budgets: [{ budget: 'user-weekly', subject: 'alice', used: 1200, reserved: 300, resetsAt: WEEK_END }],
        decision: {
          effect: 'allow',
          tier: 'standard',
          requestedTier: 'standard',
          requestedModel: undefined,
          candidates: [medium],
          fallbackTiers: ['economy'],
          ruleId: undefined,
          budgetId: undefined,
          reason: 'within policy and budget',
        },
        storeError: undefined,
      },
    ]);
  });

  it('reserves nothing: the store holds what it held before', async () => {
    const store = new ReadFirstStore(clock);
    const ledger = testLedger(store);
    await spend(ledger, store, alice, 1200, 300);
    await enforcePolicy({ ledger, now: clock })(callContext(policy, { principal: alice, request: ask() }), recordingNext());
    expect(await store.read(ledger.linesFor(policy, alice).map((l) => l.line))).toEqual([{ used: 1200, reserved: 300 }]);
  });

  it('decides one tier down when a budget is under its tierDown share, naming the budget', async () => {
    const store = new ReadFirstStore(clock);
    const ledger = testLedger(store);
    await spend(ledger, store, alice, 8500);
    const ctx = callContext(policy, { principal: alice, request: ask() });
    const next = recordingNext(() => ctx.decision);
    await enforcePolicy({ ledger, now: clock })(ctx, next);
    expect(next.calls).toEqual([
      {
        effect: 'tier_down',
        tier: 'economy',
        requestedTier: 'standard',
        requestedModel: undefined,
        candidates: [small],
        fallbackTiers: [],
        ruleId: undefined,
        budgetId: 'user-weekly',
        reason: 'Budget user-weekly has 15.0% left (under 20%), so the call is served one tier down.',
      },
    ]);
  });

  it('puts a requested model first among its tier\'s candidates', async () => {
    const ledger = testLedger(new ReadFirstStore(clock));
    const ctx = callContext(policy, { principal: alice, request: ask({ model: 'demo/small' }) });
    await enforcePolicy({ ledger, now: clock })(ctx, recordingNext());
    expect(ctx.decision).toMatchObject({ effect: 'allow', tier: 'economy', requestedTier: 'economy', requestedModel: 'demo/small', candidates: [small] });
  });

  it('refuses with POLICY_DENIED and the rule when a deny rule matches, records the deny, and does not call next', async () => {
    const ledger = testLedger(new ReadFirstStore(clock));
    const ctx = callContext(policy, { principal: bob, request: ask({ tier: 'premium' }) });
    const next = recordingNext();

    expect(await refusal(enforcePolicy({ ledger, now: clock })(ctx, next))).toEqual({
      code: 'POLICY_DENIED',
      message: 'Contractors may use standard and economy models only.',
      details: { ruleId: 'contractors-no-premium', budgetId: undefined, resetsAt: undefined },
    });
    expect(next.calls).toEqual([]);
    expect(ctx.decision).toEqual({
      effect: 'deny',
      code: 'POLICY_DENIED',
      requestedTier: 'premium',
      requestedModel: undefined,
      ruleId: 'contractors-no-premium',
      reason: 'Contractors may use standard and economy models only.',
    });
    expect(seen(ctx)().budgets).toEqual([{ budget: 'user-weekly', subject: 'bob', used: 0, reserved: 0, resetsAt: WEEK_END }]);
  });

  it('refuses with BUDGET_EXHAUSTED, the budget and its reset time when nothing is left', async () => {
    const store = new ReadFirstStore(clock);
    const ledger = testLedger(store);
    await spend(ledger, store, alice, 9_700, 300);
    const ctx = callContext(policy, { principal: alice, request: ask() });
    const next = recordingNext();

    expect(await refusal(enforcePolicy({ ledger, now: clock })(ctx, next))).toEqual({
      code: 'BUDGET_EXHAUSTED',
      message: 'Budget user-weekly (user alice) is exhausted; it resets at 2025-01-19T23:00:00.000Z.',
      details: { ruleId: undefined, budgetId: 'user-weekly', resetsAt: '2025-01-19T23:00:00.000Z' },
    });
    expect(next.calls).toEqual([]);
    expect(ctx.decision).toEqual({
      effect: 'deny',
      code: 'BUDGET_EXHAUSTED',
      requestedTier: 'standard',
      requestedModel: undefined,
      budgetId: 'user-weekly',
      resetsAt: WEEK_END,
      reason: 'Budget user-weekly (user alice) is exhausted; it resets at 2025-01-19T23:00:00.000Z.',
    });
  });

  it('refuses a model the policy does not configure with UNKNOWN_MODEL, leaving no decision', async () => {
    const ledger = testLedger(new ReadFirstStore(clock));
    const ctx = callContext(policy, { principal: alice, request: ask({ model: 'demo/huge' }) });
    const next = recordingNext();
    expect(await refusal(enforcePolicy({ ledger, now: clock })(ctx, next))).toEqual({
      code: 'UNKNOWN_MODEL',
      message: 'Model "demo/huge" is not configured. Use list_models to see the models you may use.',
      details: { model: 'demo/huge' },
    });
    expect(next.calls).toEqual([]);
    expect(ctx.decision).toBeUndefined();
    expect(ctx.estimatedInputTokens).toBe(61);
  });

  it("decides under the call's own policy snapshot: a ctx policy with a smaller budget tiers down where the other would not", async () => {
    const store = new ReadFirstStore(clock);
    const ledger = testLedger(store);
    const small5k = testPolicy(basicPolicy({ userTokens: 5000 }));
    await spend(ledger, store, alice, 4200, 0, small5k);
    const step = enforcePolicy({ ledger, now: clock });
    const under10k = callContext(policy, { principal: alice, request: ask() });
    const under5k = callContext(small5k, { principal: alice, request: ask() });
    await step(under10k, recordingNext());
    await step(under5k, recordingNext());
    expect([under10k.decision?.effect, under5k.decision?.effect]).toEqual(['allow', 'tier_down']);
    expect(under5k.budgets.map((b) => [b.budget.limit, b.used])).toEqual([[5000, 4200]]);
  });

  describe('when the quota store is unreachable', () => {
    let down: RedisQuotaStore;
    beforeAll(async () => {
      down = await unreachableStore();
    });
    afterAll(() => down.close());

    it('refuses with QUOTA_STORE_UNAVAILABLE naming the budget that fails closed, and notes storeError unavailable', async () => {
      const ctx = callContext(testPolicy(basicPolicy({ rules: READS_BUDGETS })), { principal: alice, request: ask() });
      const next = recordingNext();
      expect(await refusal(enforcePolicy({ ledger: testLedger(down), now: clock })(ctx, next))).toEqual({
        code: 'QUOTA_STORE_UNAVAILABLE',
        message: 'The quota store is unreachable and budget user-weekly fails closed; try again shortly.',
        details: { budgetId: 'user-weekly' },
      });
      expect(next.calls).toEqual([]);
      expect(ctx.storeError).toBe('unavailable');
      expect(ctx.lines.map((l) => l.budget.config.id)).toEqual(['user-weekly']);
      expect(ctx.budgets).toEqual([]);
      expect(ctx.decision).toBeUndefined();
    });

    it('decides on the local ledger when every budget fails open, and notes storeError fail_open', async () => {
      const open = testPolicy(userBudgetWith(basicPolicy({ rules: READS_BUDGETS }), 'failMode: open'));
      const ledger = testLedger(down);
      await spend(ledger, ledger.fallbackStore, alice, 700, 0, open);
      const ctx = callContext(open, { principal: alice, request: ask() });
      const next = recordingNext(seen(ctx));
      await enforcePolicy({ ledger, now: clock })(ctx, next);
      expect(next.calls).toMatchObject([
        { budgets: [{ budget: 'user-weekly', subject: 'alice', used: 700, reserved: 0, resetsAt: WEEK_END }], decision: { effect: 'allow', tier: 'standard' }, storeError: 'fail_open' },
      ]);
    });

    it('never touches the store for a caller no budget applies to', async () => {
      const carolFree = testPolicy(userBudgetWith(basicPolicy(), `when: "principal.user != 'carol'"`));
      const carol = keyPrincipal({ policy: carolFree }, KEYS.carol);
      const ctx = callContext(carolFree, { principal: carol, request: ask() });
      const next = recordingNext(seen(ctx));
      await enforcePolicy({ ledger: testLedger(down), now: clock })(ctx, next);
      expect(next.calls).toMatchObject([{ lines: [], budgets: [], decision: { effect: 'allow', tier: 'standard' }, storeError: undefined }]);
    });
  });
  describe('without the read', () => {
    it('decides on budgets assumed untouched when the store checks bounds and no rule reads budgets, reading nothing', async () => {
      const store = new MemoryQuotaStore(clock);
      const ledger = testLedger(store);
      await spend(ledger, store, alice, 8500, 300);
      let reads = 0;
      const read = store.read.bind(store);
      store.read = (lines) => ((reads += 1), read(lines));
      const ctx = callContext(policy, { principal: alice, request: ask() });
      const next = recordingNext(seen(ctx));
      await enforcePolicy({ ledger, now: clock })(ctx, next);
      // 15 % left would step the call down: the reserve step's bounds find that out (reserve.test.ts).
      expect(next.calls).toMatchObject([{ budgets: [{ budget: 'user-weekly', used: 0, reserved: 0 }], decision: { effect: 'allow', tier: 'standard' }, storeError: undefined }]);
      expect(ctx.budgetsAssumed).toBe(true);
      expect(reads).toBe(0);
    });

    it('reads and decides again before refusing: a deny is decided on what the budgets hold', async () => {
      const store = new MemoryQuotaStore(clock);
      const ledger = testLedger(store);
      await spend(ledger, store, bob, 500);
      const ctx = callContext(policy, { principal: bob, request: ask({ tier: 'premium' }) });
      expect(await refusal(enforcePolicy({ ledger, now: clock })(ctx, recordingNext()))).toMatchObject({ code: 'POLICY_DENIED' });
      expect(ctx.budgetsAssumed).toBe(false);
      expect(ctx.budgets).toMatchObject([{ used: 500, reserved: 0 }]);
    });

    it('reads for a dry run', async () => {
      const store = new MemoryQuotaStore(clock);
      const ledger = testLedger(store);
      await spend(ledger, store, alice, 8500);
      const ctx = callContext(policy, { principal: alice, request: ask(), purpose: 'estimate' });
      await enforcePolicy({ ledger, now: clock })(ctx, recordingNext());
      expect(ctx.budgetsAssumed).toBe(false);
      expect(ctx.decision).toMatchObject({ effect: 'tier_down', tier: 'economy' });
    });
  });
});
