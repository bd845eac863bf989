/**
 * A tokens-per-minute limit when the provider reports more tokens than the call reserved (more
 * than its max_tokens): the limit is charged in full, the next call sees it, and the overrun is
 * reported as it is for a budget.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { send } from '../../tools/bench/clients.js';
import { parsePolicy } from '../../src/policy/load.js';
import type { Provider } from '../../src/providers/provider.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-audit-tpm';
const POLICY = `
version: 1
providers:
  demo: { kind: demo }
models:
  demo/liar: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  liar: [demo/liar]
apiKeys:
  - { id: k-tpm, sha256: ${sha(KEY)}, user: ines, teams: [research] }
rateLimits:
  - id: user-tpm
    scope: user
    tokensPerMinute: 1000
`;

/** A provider that reports 900 output tokens whatever max_tokens says. */
const liar: Provider = {
  name: 'demo',
  kind: 'demo',
  complete: async (req) => ({ text: 'ok', model: req.model, usage: { inputTokens: 5, outputTokens: 900 }, stopReason: 'end_turn' }),
  stream: async (req, onText) => {
    onText('ok');
    return { text: 'ok', model: req.model, usage: { inputTokens: 5, outputTokens: 900 }, stopReason: 'end_turn' };
  },
};

describe('a tokens-per-minute limit overrun by the provider', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  // Fails today: reserve.ts works the overrun out on the budget lines only (overrunOf over
  // ctx.reservation.amounts), so a limit line's excess is charged but never reported. Flip to `it`
  // once the limit lines are compared with what they held.
  it('charges the limit what was used, refuses the next call, and reports the overrun in the event', async () => {
    let clock = Date.parse('2026-11-25T10:00:01Z');
    gw = await startTestGateway(POLICY, { now: () => clock });
    gw.runtime.gateway.replacePolicy(parsePolicy(POLICY, 'liar.yaml'), new Map([['demo', liar]]));
    const first = await send('openai', { base: gw.url, token: KEY, tier: 'liar', prompt: 'hi', maxTokens: 10 });
    expect(first.status).toBe(200);
    clock += 1000;
    // 905 of the 1,000 used: 95 left, so a call that may use 26 + 100 is refused.
    const next = await send('openai', { base: gw.url, token: KEY, tier: 'liar', prompt: 'hi', maxTokens: 100 });
    expect(next.status).toBe(429);
    expect(next.headers.get('x-ratelimit-remaining-tokens')).toBe('95');
    await gw.idle();
    const e = gw.events.find((ev) => ev.outcome === 'success')!;
    // Reserved: the input bound (26) plus max_tokens (10); used 905.
    expect(e['tollgate.reserved_tokens']).toEqual({ input: 26, output: 10 });
    expect(e['tollgate.overrun']).toEqual([{ budget: 'user-tpm', subject: 'ines', amount: 905 - 36, unit: 'tokens' }]);
  });
});
