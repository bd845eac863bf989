import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

/** The demo provider waits this long before answering, so a call can be abandoned midway. */
const SLOW = basicPolicy().replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 10000 }');

async function until(check: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('a client that disconnects from a compatible endpoint', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  const budget = async () => {
    const g = gw!.runtime.gateway;
    const [b] = await g.myBudget(keyPrincipal(g, KEYS.alice));
    return b!;
  };

  /** Starts a call, waits until its reservation is held, disconnects, and checks it was released. */
  async function abandon(call: (signal: AbortSignal) => Promise<unknown>): Promise<void> {
    gw = await startTestGateway(SLOW);
    const ac = new AbortController();
    const pending = call(ac.signal).catch((e: unknown) => e);
    await until(async () => (await budget()).reserved > 0);
    ac.abort();
    expect(await pending).toBeInstanceOf(Error);
    await until(() => gw!.events.length === 1);
    expect(gw!.events[0]).toMatchObject({ outcome: 'failed', 'error.code': 'CANCELLED' });
    expect(await budget()).toMatchObject({ used: 0, reserved: 0, remaining: 10000 });
  }

  it('cancels a plain OpenAI-compatible call and releases its reservation', async () => {
    await abandon((signal) =>
      new OpenAI({ baseURL: `${gw!.url}/v1`, apiKey: KEYS.alice, maxRetries: 0 }).chat.completions.create({ model: 'standard', messages: [{ role: 'user', content: 'Hello' }] }, { signal }),
    );
  });

  it('cancels a streamed Anthropic-compatible call and releases its reservation', async () => {
    await abandon(async (signal) => {
      const stream = new Anthropic({ baseURL: gw!.url, apiKey: KEYS.alice, maxRetries: 0 }).messages.stream(
        { model: 'standard', max_tokens: 20, messages: [{ role: 'user', content: 'Hello' }] },
        { signal },
      );
      return stream.finalMessage();
    });
  });
});
