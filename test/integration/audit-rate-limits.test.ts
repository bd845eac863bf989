/**
 * The embedded journal of a policy with rate limits verifies. A settlement charges a call's rate
 * limit lines with its budgets (a request, its tokens, a cap's slot given back), so its decision
 * event says what it charged each limit (`tollgate.limits_charged`) beside its budgets
 * (`tollgate.charged`), and `audit verify` holds the entry to both. It failed every journal of such
 * a policy at its first settlement, naming the limit's line as missing from the event.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import type { DecisionEvent } from '../../src/metering/events.js';
import { parsePolicy } from '../../src/policy/load.js';
import { KEYS, STANDARD_HEAD, sha } from '../fixtures/policies.js';
import { keyPrincipal } from '../helpers/principal.js';

const POLICY = `${STANDARD_HEAD}apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice, teams: [platform], costCenter: cc-1 }
budgets:
  - { id: user-daily, scope: user, window: { calendar: day }, limit: { tokens: 100000 } }
  - { id: team-daily-usd, scope: team, window: { calendar: day }, limit: { usd: 10 } }
rateLimits:
  - { id: user-tpm, scope: user, tokensPerMinute: 100000 }
  - { id: user-rpm, scope: user, requestsPerMinute: 100 }
  - { id: user-in-flight, scope: user, concurrent: 4 }
`;

let dir: string | undefined;
let rt: Runtime | undefined;
afterEach(async () => {
  await rt?.close();
  rt = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('audit verify on a journal with rate limits', () => {
  it('verifies calls charged to budgets and to every kind of limit, and their events name the limits charged', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-limits-'));
    const events: DecisionEvent[] = [];
    const settings = settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_DATA_DIR: dir });
    rt = await buildRuntime(settings, { policy: parsePolicy(POLICY, 'limits.yaml'), sink: { emit: (e: DecisionEvent) => void events.push(e) } });
    const principal = keyPrincipal(rt.gateway, KEYS.alice);
    for (let i = 0; i < 3; i++) {
      await rt.gateway.complete({ transport: 'http', principal, request: { messages: [{ role: 'user', content: `call ${i} ${'x'.repeat(40)}` }], tier: 'standard', maxTokens: 20 } });
    }
    // A refused call (a tier the policy does not have) reserves and charges nothing.
    await rt.gateway.complete({ transport: 'http', principal, request: { messages: [{ role: 'user', content: 'hi' }], tier: 'premium', maxTokens: 20 } }).catch(() => undefined);
    await rt.gateway.idle();
    await rt.close();
    rt = undefined;

    const report = verifyJournalDir(dir);
    expect(report.ok, JSON.stringify(report)).toBe(true);
    const served = events.filter((e) => e.outcome === 'success');
    expect(served).toHaveLength(3);
    for (const e of served) {
      const tokens = e['gen_ai.usage.input_tokens']! + e['gen_ai.usage.output_tokens']!;
      expect(e['tollgate.charged']?.map((c) => c.budget)).toEqual(['user-daily', 'team-daily-usd']);
      expect(e['tollgate.limits_charged']).toEqual([
        { limit: 'user-tpm', subject: 'alice', amount: tokens, unit: 'tokens' },
        { limit: 'user-rpm', subject: 'alice', amount: 1, unit: 'requests' },
        { limit: 'user-in-flight', subject: 'alice', amount: 0, unit: 'calls_in_flight' },
      ]);
    }
    expect(events.find((e) => e.outcome !== 'success')?.['tollgate.limits_charged']).toBeUndefined();
  });
});
