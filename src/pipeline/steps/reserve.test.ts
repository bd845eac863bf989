/**
 * The reserve step alone, over a real ledger (MemoryQuotaStore; Redis where nothing listens for an
 * unreachable store). Each context is first filled in by the real decide step, as in the pipeline.
 * Reads: decision, lines, budgets, estimatedInputTokens, request, the policy's limits, and what the
 * store accepts. Writes: the reservation in the store (with who and what it is for), reservation
 * (with the store holding it), outputClamp, decision (a step down, a clamp, or the deny when nothing
 * fits), and charged once the steps below finish, whether they succeeded or threw. Calls next once
 * the reservation holds. It leaves the reservation held: the meter step commits the charge (or the
 * release) with the decision event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicPolicy, KEYS } from '../../../test/fixtures/policies.js';
import { callContext, clock, NOW, recordingNext, refusal, testLedger, testPolicy, unreachableStore, userBudgetWith, withLimits } from '../../../test/helpers/callContext.js';
import { keyPrincipal } from '../../../test/helpers/principal.js';
import type { CompletionInput } from '../../call/request.js';
import { GatewayError } from '../../errors.js';
import type { Principal } from '../../identity/principal.js';
import { limitLine } from '../../policy/limits.js';
import { compileLimit, type Policy } from '../../policy/load.js';
import type { RateLimitConfig } from '../../policy/schema.js';
import { MemoryQuotaStore } from '../../quota/memory.js';
import type { RedisQuotaStore } from '../../quota/redis.js';
import type { QuotaStore } from '../../quota/store.js';
import type { CallContext } from '../context.js';
import type { Ledger } from '../ledger.js';
import { enforcePolicy, readAndDecide } from './decide.js';
import { rateLimitedError, reserveAndSettle } from './reserve.js';

const policy = testPolicy(basicPolicy());
const alice = keyPrincipal({ policy }, KEYS.alice);
const medium = policy.models.get('demo/medium')!;
const small = policy.models.get('demo/small')!;

/** A bound of 61 input tokens (see decide.test.ts) and 200 output tokens: 261 tokens reserved on a tokens budget. */
const ask = (over: Partial<CompletionInput> = {}): CompletionInput => ({
  system: 'Be brief.',
  messages: [{ role: 'user', content: 'Summarise the report' }],
  maxTokens: 200,
  ...over,
});

/** A context as the decide step leaves it for `who` asking `request` under `p`. */
/**
 * A call through the decide step: decided without reading its budgets where the policy allows it
 * (`budgetsAssumed`), or, with `read`, on the budgets read as a dry run or a policy with rules on
 * budgets would be.
 */
async function decided(ledger: Ledger, p: Policy = policy, request: CompletionInput = ask(), who: Principal = alice, opts: { read?: boolean } = {}): Promise<CallContext> {
  const ctx = callContext(p, { principal: who, request });
  await enforcePolicy({ ledger, now: clock })(ctx, async () => {});
  if (opts.read) await readAndDecide(ctx, ledger, clock);
  return ctx;
}

/** Used and reserved on each of `who`'s budget lines under `p`, in policy order. */
const held = (ledger: Ledger, store: QuotaStore, p: Policy = policy, who: Principal = alice) => store.read(ledger.linesFor(p, who).map((l) => l.line));

/** Settles `amount` on `who`'s line of `budgetId` under `p`, as an earlier call would have. */
async function spent(ledger: Ledger, store: QuotaStore, amount: number, budgetId = 'user-weekly', p: Policy = policy, who: Principal = alice): Promise<void> {
  const line = ledger.linesFor(p, who).find((l) => l.budget.config.id === budgetId)!;
  await store.settle(`earlier-${budgetId}`, [{ ...line.line, amount }]);
}

describe('reserve step', () => {
  it('reserves the worst case of the decided tier (input estimate + max_tokens) in the store, then calls next with the reservation written', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const ctx = await decided(ledger);
    const decision = ctx.decision;
    const seen: unknown[] = [];
    await reserveAndSettle({ ledger, providerFor: () => undefined })(
      ctx,
      recordingNext(undefined, async () => {
        seen.push({ reservation: ctx.reservation, outputClamp: ctx.outputClamp, held: await held(ledger, store) });
      }),
    );

    expect(seen).toEqual([{ reservation: { model: medium, tier: 'standard', amounts: [261], store }, outputClamp: undefined, held: [{ used: 0, reserved: 261 }] }]);
    expect(ctx.decision).toBe(decision);
  });

  it('keeps who and what the reservation is for with it in the store, marked dispatched (the dispatch step follows at once), for a recovery to name', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const ctx = await decided(ledger);
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, recordingNext());

    const open: unknown[] = [];
    store.recover((id, r) => {
      open.push({ id, meta: r.meta, dispatched: r.dispatched, amounts: r.lines.map((l) => l.amount) });
      return {};
    });
    expect(open).toMatchObject([
      {
        id: 'call-1',
        meta: { transport: 'http', user: 'alice', teams: ['platform'], costCenter: 'cc-1', tier: 'standard', model: 'demo/medium', policyVersion: policy.version },
        dispatched: true,
        amounts: [261],
      },
    ]);
  });

  it('works out the charge of what the steps below consumed once they finish, and leaves the reservation for the meter to settle', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const ctx = await decided(ledger);
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, recordingNext(undefined, () => void (ctx.usage = { inputTokens: 6, outputTokens: 40 })));

    expect(ctx.charged).toEqual([46]);
    expect(await held(ledger, store)).toEqual([{ used: 0, reserved: 261 }]);
  });

  /** A call on a token line and a team dollar line whose steps below consumed 6 + 40 tokens on demo/small, priced `cost` when given. */
  async function chargedWith(cost?: number): Promise<number[] | undefined> {
    const ledger = testLedger(new MemoryQuotaStore(clock));
    const ctx = await decided(ledger, testPolicy(basicPolicy({ extraBudgets: teamUsd(0.01) })));
    await reserveAndSettle({ ledger, providerFor: () => undefined })(
      ctx,
      recordingNext(undefined, () => {
        ctx.usage = { inputTokens: 6, outputTokens: 40 };
        ctx.served = { model: small, responseModel: 'small', text: 'done', stopReason: 'end_turn' };
        if (cost !== undefined) ctx.costMicroUsd = cost;
      }),
    );
    return ctx.charged;
  }

  it('charges each line in its own unit: tokens, and micro-dollars at the served model\'s price', async () => {
    // demo/small: 6 x $1 + 40 x $5 per million tokens = 206 micro-dollars.
    expect(await chargedWith()).toEqual([46, 206]);
  });

  it('charges a dollar line the cost the dispatch step priced, each attempt at its own model (a failover)', async () => {
    // What dispatch works out when a failed attempt on a cheaper model read some of these tokens.
    expect(await chargedWith(201)).toEqual([46, 201]);
  });

  it('charges nothing when the steps below consumed nothing (the meter then releases the reservation)', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const ctx = await decided(ledger);
    const next = recordingNext();
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next);

    expect(next.calls).toHaveLength(1);
    expect(ctx.charged).toBeUndefined();
  });

  it('still works out the charge of what was consumed when the steps below throw, and rethrows their error', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const ctx = await decided(ledger);
    const failed = new GatewayError('PROVIDER_UNAVAILABLE', 'Every provider for tier standard failed; see attempts.');
    const thrown = await reserveAndSettle({ ledger, providerFor: () => undefined })(
      ctx,
      recordingNext(undefined, () => {
        ctx.usage = { inputTokens: 6, outputTokens: 3 };
        throw failed;
      }),
    ).catch((e: unknown) => e);

    expect(thrown).toBe(failed);
    expect(ctx.charged).toEqual([9]);
  });

  it("holds the reservation for the policy's reservationTtlSeconds", async () => {
    let now = NOW;
    const store = new MemoryQuotaStore(() => now);
    const ledger = testLedger(store);
    const p = testPolicy(withLimits(basicPolicy(), { reservationTtlSeconds: 30 }));
    const ctx = await decided(ledger, p);
    const seen: unknown[] = [];
    await reserveAndSettle({ ledger, providerFor: () => undefined })(
      ctx,
      recordingNext(undefined, async () => {
        // The memory store sweeps expired reservations at most once a second, so the two reads are a second apart.
        now = NOW + 29_000;
        seen.push(await held(ledger, store, p));
        now = NOW + 30_000;
        seen.push(await held(ledger, store, p));
      }),
    );
    expect(seen).toEqual([[{ used: 0, reserved: 261 }], [{ used: 0, reserved: 0 }]]);
  });

  it('steps down a tier when a budget line refuses the decided tier, and rewrites the decision to say which budget', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    // $0.01 (10,000 micro-dollars) a month for the team, 7,500 spent: a standard call's worst case
    // (61 x $3 + 200 x $15 per million tokens = 3,183) does not fit the 2,500 left; an economy one (61 x $1 + 200 x $5 = 1,061) does.
    const p = testPolicy(basicPolicy({ extraBudgets: teamUsd(0.01) }));
    await spent(ledger, store, 7_500, 'team-usd', p);
    const ctx = await decided(ledger, p);
    expect(ctx.decision).toMatchObject({ effect: 'allow', tier: 'standard' });
    const next = recordingNext(() => ({ reservation: ctx.reservation, decision: ctx.decision }));
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next);

    expect(next.calls).toEqual([
      {
        reservation: { model: small, tier: 'economy', amounts: [261, 1061], store },
        decision: {
          effect: 'tier_down',
          tier: 'economy',
          requestedTier: 'standard',
          requestedModel: undefined,
          candidates: [small],
          fallbackTiers: [],
          ruleId: undefined,
          budgetId: 'team-usd',
          reason: 'Budget team-usd cannot cover a standard call; served by tier economy.',
        },
      },
    ]);
  });

  it('falls back to a tier a budget does not cover, reserving and charging only the lines that cover it', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    // user-weekly covers premium and standard only (no threshold); economy has its own 1,000 tokens.
    const p = testPolicy(
      basicPolicy({
        tierDownBelow: 0,
        extraBudgets: `    tiers: [premium, standard]
  - id: economy-weekly
    scope: user
    tiers: [economy]
    window: { calendar: week, timezone: Europe/Paris }
    limit: { tokens: 1000 }`,
      }),
    );
    await spent(ledger, store, 9_900, 'user-weekly', p);
    const ctx = await decided(ledger, p);
    expect(ctx.decision).toMatchObject({ effect: 'allow', tier: 'standard' });
    const next = recordingNext(
      async () => ({ reservation: ctx.reservation, decision: ctx.decision, held: await held(ledger, store, p) }),
      () => void (ctx.usage = { inputTokens: 6, outputTokens: 40 }),
    );
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next);

    expect(await Promise.all(next.calls)).toEqual([
      {
        reservation: { model: small, tier: 'economy', amounts: [0, 261], store },
        decision: expect.objectContaining({ effect: 'tier_down', tier: 'economy', budgetId: 'user-weekly', reason: 'Budget user-weekly cannot cover a standard call; served by tier economy.' }),
        held: [
          { used: 9_900, reserved: 0 },
          { used: 0, reserved: 261 },
        ],
      },
    ]);
    const reserved: string[][] = [];
    store.recover((_id, r) => {
      reserved.push(r.lines.map((l) => l.budgetId));
      return {};
    });
    expect(reserved).toEqual([['economy-weekly']]);
    expect(ctx.charged).toEqual([0, 46]);
  });

  it('lowers max_tokens to what the budget can still pay for when no tier fits whole, and says so in the decision', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    await spent(ledger, store, 9_900);
    const ctx = await decided(ledger);
    const next = recordingNext(() => ({ reservation: ctx.reservation, outputClamp: ctx.outputClamp, decision: ctx.decision }));
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next);

    // 100 tokens left, 61 of them for the input: 39 output tokens, 100 reserved.
    expect(next.calls).toEqual([
      {
        reservation: { model: small, tier: 'economy', amounts: [100], store },
        outputClamp: { tokens: 39, budgetId: 'user-weekly' },
        decision: {
          effect: 'tier_down',
          tier: 'economy',
          requestedTier: 'standard',
          requestedModel: undefined,
          candidates: [small],
          fallbackTiers: [],
          ruleId: undefined,
          budgetId: 'user-weekly',
          reason: 'Budget user-weekly has 1.0% left (under 20%), so the call is served one tier down.; max_tokens lowered to 39, all that budget user-weekly can pay for',
        },
      },
    ]);
  });

  it('refuses with BUDGET_EXHAUSTED when nothing fits, turns the decision into that deny, holds nothing and does not call next', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    await spent(ledger, store, 9_990);
    const ctx = await decided(ledger);
    const next = recordingNext();

    // 10 tokens left: not the 261 asked for, and fewer than limits.minOutputTokens (16) once the input is paid.
    expect(await refusal(reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next))).toEqual({
      code: 'BUDGET_EXHAUSTED',
      message: 'Budget user-weekly (user alice) cannot cover this call: 10 tokens left, 261 needed. It resets at 2025-01-19T23:00:00.000Z.',
      details: { budgetId: 'user-weekly', subject: 'alice', remaining: 10, requested: 261, resetsAt: '2025-01-19T23:00:00.000Z' },
    });
    expect(next.calls).toEqual([]);
    expect(ctx.decision).toEqual({
      effect: 'deny',
      code: 'BUDGET_EXHAUSTED',
      requestedTier: 'standard',
      requestedModel: undefined,
      budgetId: 'user-weekly',
      resetsAt: Date.parse('2025-01-19T23:00:00Z'),
      reason: 'Budget user-weekly (user alice) cannot cover this call: 10 tokens left, 261 needed. It resets at 2025-01-19T23:00:00.000Z.',
    });
    expect(ctx.reservation).toBeUndefined();
    expect(await held(ledger, store)).toEqual([{ used: 9_990, reserved: 0 }]);
  });

  it("goes by what the store accepts now, not the decision's snapshot: a reservation made since then counts", async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const ctx = await decided(ledger, policy, ask(), alice, { read: true });
    const [line] = ledger.linesFor(policy, alice);
    await store.reserve('another-call', [{ ...line!.line, amount: 9_900 }], 600_000);

    // The candidates (and any clamp) are planned from the decision's snapshot, which showed the whole
    // budget free, so no clamped candidate is tried: the store's refusal of the whole call is final.

    expect(await refusal(reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, recordingNext()))).toMatchObject({
      code: 'BUDGET_EXHAUSTED',
      message: 'Budget user-weekly (user alice) cannot cover this call: 100 tokens left, 261 needed. It resets at 2025-01-19T23:00:00.000Z.',
      details: { remaining: 100, requested: 261 },
    });
  });

  it('decided without a read, reads and decides again when the store refuses the bound: as a call decided on a read now', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const unread = await decided(ledger);
    expect(unread.budgetsAssumed).toBe(true);
    const [line] = ledger.linesFor(policy, alice);
    await store.reserve('another-call', [{ ...line!.line, amount: 9_900 }], 600_000);

    const step = reserveAndSettle({ ledger, providerFor: () => undefined });
    const made = (ctx: CallContext) => ({ decision: ctx.decision, clamp: ctx.outputClamp, reservation: { ...ctx.reservation, store: undefined }, budgets: ctx.budgets });
    await step(unread, recordingNext());
    expect(unread.budgetsAssumed).toBe(false);
    // Decided again on what was read: 1 % left, under the threshold, one tier down, with max tokens
    // lowered to the 100 tokens left (the snapshot a call decided on a read before the other
    // reservation would plan from has no clamp: the test above).
    expect(made(unread)).toMatchObject({ decision: { effect: 'tier_down', tier: 'economy' }, clamp: { tokens: 39 }, budgets: [{ used: 0, reserved: 9_900 }] });
    await store.release(unread.id);
    const fresh = await decided(ledger, policy, ask(), alice, { read: true });
    await step(fresh, recordingNext());
    expect(made(unread)).toEqual(made(fresh));
  });

  it('reserves nothing and charges nothing for a caller no budget applies to, and names the first model of the tier', async () => {
    const store = new MemoryQuotaStore(clock);
    const ledger = testLedger(store);
    const p = testPolicy(userBudgetWith(basicPolicy(), `when: "principal.user != 'carol'"`));
    const carol = keyPrincipal({ policy: p }, KEYS.carol);
    const ctx = await decided(ledger, p, ask(), carol);
    const next = recordingNext(
      () => ctx.reservation,
      () => void (ctx.usage = { inputTokens: 6, outputTokens: 40 }),
    );
    await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next);

    expect(next.calls).toEqual([{ model: medium, tier: 'standard', amounts: [] }]);
    expect(ctx.reservation?.store).toBeUndefined();
    expect(ctx.charged).toBeUndefined();
  });

  it('fails as a bug (a plain Error) when it runs without an allow decision', async () => {
    const ctx = callContext(policy, { principal: alice, request: ask() });
    const err = await reserveAndSettle({ ledger: testLedger(new MemoryQuotaStore(clock)), providerFor: () => undefined })(ctx, recordingNext()).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(GatewayError);
    expect((err as Error).message).toBe('reserve step ran without an allow decision');
  });

  describe('when the quota store is unreachable', () => {
    let down: RedisQuotaStore;
    beforeAll(async () => {
      down = await unreachableStore();
    });
    afterAll(() => down.close());

    it('reserves on the local ledger when every budget fails open, names it as the holder, and notes storeError fail_open', async () => {
      const p = testPolicy(userBudgetWith(basicPolicy(), 'failMode: open'));
      const ledger = testLedger(down);
      const ctx = await decided(ledger, p);
      // Decided without a read: the store is first met by the reservation.
      expect(ctx.budgetsAssumed).toBe(true);
      expect(ctx.storeError).toBeUndefined();
      const next = recordingNext(() => ctx.reservation?.store);
      await reserveAndSettle({ ledger, providerFor: () => undefined })(ctx, next);

      expect(next.calls).toHaveLength(1);
      expect(next.calls[0]).toBe(ledger.fallbackStore);
      expect(await held(ledger, ledger.fallbackStore, p)).toEqual([{ used: 0, reserved: 261 }]);
      expect(ctx.storeError).toBe('fail_open');
    });

    it('refuses with QUOTA_STORE_UNAVAILABLE and notes storeError unavailable when a budget fails closed', async () => {
      // Decided while the store answered; unreachable by the time the reservation is made.
      const ledger = testLedger(new MemoryQuotaStore(clock));
      const ctx = await decided(ledger);
      const next = recordingNext();
      expect(await refusal(reserveAndSettle({ ledger: testLedger(down), providerFor: () => undefined })(ctx, next))).toEqual({
        code: 'QUOTA_STORE_UNAVAILABLE',
        message: 'The quota store is unreachable and budget user-weekly fails closed; try again shortly.',
        details: { budgetId: 'user-weekly' },
      });
      expect(next.calls).toEqual([]);
      expect(ctx.storeError).toBe('unavailable');
      expect(ctx.reservation).toBeUndefined();
    });
  });
});

describe('the refusal of a rate limit', () => {
  it('gives a cap its whole pause, however long trying the other candidates took after it refused', () => {
    const config = { id: 'one-in-flight', scope: 'user', concurrent: 1, retryAfterMs: 900, failMode: 'closed' } as RateLimitConfig;
    const cap = limitLine(compileLimit(config), 'alice', NOW, 'tg:');
    // Refused at NOW (retry at NOW + 900); the refusal is built 40 ms later.
    expect(rateLimitedError(cap, NOW + 900, 0, NOW + 40).details).toMatchObject({ kind: 'concurrent', retryAfterMs: 900, retryAt: new Date(NOW + 940).toISOString() });
  });

  it("gives a window's retry time as the moment it names", () => {
    const config = { id: 'rpm', scope: 'user', requestsPerMinute: 10, retryAfterMs: 1000, failMode: 'closed' } as RateLimitConfig;
    const rpm = limitLine(compileLimit(config), 'alice', NOW, 'tg:');
    expect(rateLimitedError(rpm, NOW + 5000, 0, NOW + 40).details).toMatchObject({ kind: 'requests', retryAfterMs: 4960, retryAt: new Date(NOW + 5000).toISOString() });
  });
});

/** A monthly dollar budget per team, listed after the fixture's user-weekly budget. */
function teamUsd(usd: number): string {
  return `  - id: team-usd
    scope: team
    window: { calendar: month, timezone: UTC }
    limit: { usd: ${usd} }
`;
}
