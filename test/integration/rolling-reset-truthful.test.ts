/**
 * A spent rolling budget's reset time is a time at which it is no longer spent: what it holds now
 * has left the window by then. It was the end of the current bucket, when only the oldest bucket
 * leaves (often empty): a probe spent a 1-hour budget in its two newest 5-minute buckets, was told
 * "resets at 13:25", and was refused again at 13:25 saying 13:30, until 14:20.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { principalFromApiKey, hashApiKey } from '../../src/identity/apiKey.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { applicableLines } from '../../src/policy/budgets.js';
import { parsePolicy } from '../../src/policy/load.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { KEYS, STANDARD_HEAD, sha } from '../fixtures/policies.js';

const POLICY = `${STANDARD_HEAD}apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice }
budgets:
  - { id: hourly, scope: user, window: { rolling: { hours: 1 }, buckets: 12 }, limit: { tokens: 2000 } }
`;

const runtimes: Runtime[] = [];
afterEach(async () => {
  for (const r of runtimes.splice(0)) await r.close();
});

describe('the reset time of a spent rolling budget', () => {
  it('is when what it holds has left the window, and a call made then is served', async () => {
    let clock = Date.parse('2026-12-03T13:16:00Z');
    const now = () => clock;
    const store = new MemoryQuotaStore(now);
    const runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), { policy: parsePolicy(POLICY, 'rolling.yaml'), sink: memorySink(), store, now });
    runtimes.push(runtime);
    const g = runtime.gateway;
    const principal = principalFromApiKey(g.policy.apiKeys.get(hashApiKey(KEYS.alice))!);
    const spend = async (amount: number, id: string) => {
      const lines = applicableLines(g.policy.budgets, principal, clock, 'tollgate:');
      await store.settle(id, lines.map((l) => ({ ...l.line, amount })));
    };
    // 1,200 tokens in the 13:15 bucket, 1,300 in the 13:20 one: 2,500 of 2,000.
    await spend(1200, 'a');
    clock = Date.parse('2026-12-03T13:21:00Z');
    await spend(1300, 'b');
    const call = (id: string) => g.complete({ principal, transport: 'cli', requestId: id, request: { messages: [{ role: 'user', content: 'hi' }], maxTokens: 20 } });

    const refused = (await call('c1').catch((e: unknown) => e)) as { code: string; details: { resetsAt: string } };
    expect(refused.code).toBe('BUDGET_EXHAUSTED');
    // The 13:20 bucket, the newest holding anything, leaves the window at 14:20.
    expect(refused.details.resetsAt).toBe('2026-12-03T14:20:00.000Z');
    clock = Date.parse(refused.details.resetsAt);
    await expect(call('c2')).resolves.toMatchObject({ decision: { effect: 'allow' } });
  });
});
