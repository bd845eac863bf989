/**
 * limits.settleBeforeReply: by default a call answers once the provider has answered and its charge
 * is known, and the ledger write and decision event follow; the gateway still waits for them
 * before it closes. With the setting on, the answer waits for the write.
 *
 * The store is the real in-memory ledger behind a gate that holds settle() and release() until the
 * test opens it, standing in for a slow shared store.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import type { DecisionRecord, EventListener, LedgerLine, QuotaStore } from '../../src/quota/store.js';

class GatedStore implements QuotaStore {
  readonly kind = 'memory';
  readonly inner = new MemoryQuotaStore();
  held = 0;
  private opened!: () => void;
  private gate = new Promise<void>((resolve) => (this.opened = resolve));

  open(): void {
    this.opened();
  }
  reserve(requestId: string, lines: LedgerLine[], ttlMs: number) {
    return this.inner.reserve(requestId, lines, ttlMs);
  }
  dispatch(requestId: string) {
    return this.inner.dispatch(requestId);
  }
  async settle(requestId: string, lines: LedgerLine[], event?: DecisionRecord) {
    this.held += 1;
    await this.gate;
    return this.inner.settle(requestId, lines, event);
  }
  async release(requestId: string, event?: DecisionRecord) {
    this.held += 1;
    await this.gate;
    return this.inner.release(requestId, event);
  }
  /** A refusal before any reservation changes no counter: not held. */
  record(event: DecisionRecord) {
    return this.inner.record(event);
  }
  onEvent(listener: EventListener) {
    this.inner.onEvent(listener);
  }
  read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]) {
    return this.inner.read(lines);
  }
  close() {
    return this.inner.close();
  }
}

const policyText = (settleBeforeReply?: boolean) => `version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
${settleBeforeReply === undefined ? '' : `limits: { settleBeforeReply: ${settleBeforeReply} }\n`}`;

const alice: Principal = { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key' };
const ask = { messages: [{ role: 'user' as const, content: 'Hello there' }], maxTokens: 20 };

let runtime: Runtime | undefined;
afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
});

async function start(settleBeforeReply?: boolean, provider?: string) {
  const store = new GatedStore();
  const sink = memorySink();
  const text = provider ? policyText(settleBeforeReply).replace('demo: { kind: demo }', provider) : policyText(settleBeforeReply);
  runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), { policy: parsePolicy(text, 'p.yaml'), store, sink });
  return { store, events: sink.events, gateway: runtime.gateway };
}

/** Resolves to 'done' if `p` settles within a few event-loop turns, else 'pending'. */
async function within(p: Promise<unknown>): Promise<'done' | 'pending'> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return done ? 'done' : 'pending';
}

describe('ledger write after the answer (limits.settleBeforeReply)', () => {
  it('answers before the store has the charge, then charges once and emits the event', async () => {
    const { store, events, gateway } = await start();
    const result = await gateway.complete({ principal: alice, transport: 'cli', request: ask });
    const spent = result.usage.inputTokens + result.usage.outputTokens;
    // The answer already carries the charge and the budget after it.
    expect(result.budgets[0]).toMatchObject({ id: 'user-weekly', used: spent });
    expect(store.held).toBe(1);
    expect(gateway.finishingCalls).toBe(1);
    expect(events).toHaveLength(0);
    // Meanwhile the reservation still covers the call: nothing is overshot while the write is on its way.
    const [during] = await gateway.myBudget(alice);
    expect(during!.used + during!.reserved).toBeGreaterThanOrEqual(spent);

    store.open();
    await gateway.idle();
    expect(gateway.finishingCalls).toBe(0);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ effect: 'allow', 'tollgate.charged': [{ budget: 'user-weekly', subject: 'alice', amount: spent }] });
    expect(await gateway.myBudget(alice)).toMatchObject([{ used: spent, reserved: 0 }]);
  });

  it('waits for the ledger write before answering when settleBeforeReply is true', async () => {
    const { store, events, gateway } = await start(true);
    const call = gateway.complete({ principal: alice, transport: 'cli', request: ask });
    expect(await within(call)).toBe('pending');
    expect(store.held).toBe(1);
    store.open();
    const result = await call;
    expect(events).toHaveLength(1);
    expect(gateway.finishingCalls).toBe(0);
    expect(await gateway.myBudget(alice)).toMatchObject([{ used: result.usage.inputTokens + result.usage.outputTokens, reserved: 0 }]);
  });

  it('finishes a failed call\'s ledger write after its error reaches the caller, and reports the failure in the event', async () => {
    const { store, events, gateway } = await start(undefined, 'demo: { kind: demo, latencyMs: 5000 }');
    await expect(gateway.complete({ principal: alice, transport: 'cli', request: { ...ask, model: 'demo/nope' } })).rejects.toMatchObject({ code: 'UNKNOWN_MODEL' });
    // Refused before reserving: nothing to release, and the event is out at once.
    expect(store.held).toBe(0);
    expect(events).toHaveLength(1);

    // Cancelled before it reached the store: refused at once too, nothing reserved.
    const early = new AbortController();
    early.abort();
    await expect(gateway.complete({ principal: alice, transport: 'cli', request: ask, signal: early.signal })).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(store.held).toBe(0);
    expect(events).toHaveLength(2);

    // Cancelled while the provider holds it: the error comes first, the ledger write and its event after.
    const controller = new AbortController();
    const call = gateway.complete({ principal: alice, transport: 'cli', request: ask, signal: controller.signal });
    while ((await gateway.myBudget(alice))[0]!.reserved === 0) await new Promise((r) => setImmediate(r));
    controller.abort();
    await expect(call).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(store.held).toBe(1);
    expect(events).toHaveLength(2);
    store.open();
    await gateway.idle();
    expect(events).toHaveLength(3);
    expect(events[2]).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED' });
    const charged = ((events[2]!['tollgate.charged'] as { amount: number }[] | undefined) ?? []).reduce((n, c) => n + c.amount, 0);
    expect(await gateway.myBudget(alice)).toMatchObject([{ used: charged, reserved: 0 }]);
  });

  it('does not close until every answered call is charged', async () => {
    const { store, events, gateway } = await start();
    await gateway.complete({ principal: alice, transport: 'cli', request: ask });
    const closing = runtime!.close();
    runtime = undefined;
    expect(await within(closing)).toBe('pending');
    store.open();
    await closing;
    expect(events).toHaveLength(1);
  });
});
