/**
 * A cap of one call in flight, given back on every way a call can end: a provider error and a
 * caller who leaves mid-stream. The next call then fits, and never two at the provider at once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { send } from '../../tools/bench/clients.js';
import { GatewayError } from '../../src/errors.js';
import { parsePolicy } from '../../src/policy/load.js';
import type { CompletionRequest, Provider } from '../../src/providers/provider.js';
import { sha } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const KEY = 'key-audit-cap';
const POLICY = `
version: 1
providers:
  demo: { kind: demo }
models:
  demo/echo: { price: { inputPerMTok: 1, outputPerMTok: 1 } }
tiers:
  echo: [demo/echo]
apiKeys:
  - { id: k-cap, sha256: ${sha(KEY)}, user: jon, teams: [research] }
rateLimits:
  - id: one-at-a-time
    scope: user
    concurrent: 1
`;

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A provider whose calls do what the test says: fail, or stream one piece and wait until the caller leaves. */
function scripted(mode: { now: 'fail' | 'stream-and-wait' | 'answer' }) {
  let inFlight = 0;
  let most = 0;
  const run = async (req: CompletionRequest, onText?: (d: string) => void) => {
    inFlight += 1;
    most = Math.max(most, inFlight);
    try {
      if (mode.now === 'fail') throw new GatewayError('PROVIDER_UNAVAILABLE', 'down', { status: 500 });
      if (mode.now === 'stream-and-wait') {
        onText?.('first ');
        await new Promise<void>((_, reject) => req.signal?.addEventListener('abort', () => reject(new GatewayError('CANCELLED', 'left', { answered: true }))));
      }
      return { text: 'ok', model: req.model, usage: { inputTokens: 3, outputTokens: 1 }, stopReason: 'end_turn' as const };
    } finally {
      inFlight -= 1;
    }
  };
  const provider: Provider = { name: 'demo', kind: 'demo', complete: (req) => run(req), stream: (req, onText) => run(req, onText) };
  return { provider, get inFlight() { return inFlight; }, get most() { return most; } };
}

describe('a cap of one call in flight', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  it('gives the slot back when the provider fails, and when the caller leaves mid-stream', async () => {
    gw = await startTestGateway(POLICY);
    const mode: { now: 'fail' | 'stream-and-wait' | 'answer' } = { now: 'fail' };
    const p = scripted(mode);
    gw.runtime.gateway.replacePolicy(parsePolicy(POLICY, 'cap.yaml'), new Map([['demo', p.provider]]));
    const call = () => send('openai', { base: gw!.url, token: KEY, tier: 'echo', prompt: 'hi', maxTokens: 10 });

    expect((await call()).status).toBe(502);
    mode.now = 'answer';
    expect((await call()).status).toBe(200);

    mode.now = 'stream-and-wait';
    const leaving = new AbortController();
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'stream' }], max_tokens: 10, stream: true }),
      signal: leaving.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    // Held while it streams.
    mode.now = 'answer';
    expect((await call()).status).toBe(429);
    leaving.abort();
    // The left call's event is committed with its release: the fail, the answer, the refusal, then it.
    await until(() => gw!.events.length === 4);
    expect((await call()).status).toBe(200);
    expect(p.most).toBe(1);
  });
});
