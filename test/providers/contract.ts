/**
 * The provider contract: every adapter, driven through its real SDK against its wire-faithful fake,
 * must behave the same way. Each adapter's test file calls `providerContract` once.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import type { CompletionRequest, Provider } from '../../src/providers/provider.js';
import { promptTokens, replyWords, type FakeProviderServer } from '../../tools/fake-providers/types.js';

export interface ContractSetup {
  kind: FakeProviderServer['kind'];
  /** The provider's own id of the model the tests ask for. */
  model: string;
  startFake: () => Promise<FakeProviderServer>;
  /** Builds the adapter pointed at the fake, with SDK retries off. */
  makeProvider: (fake: FakeProviderServer, opts: { timeoutMs: number }) => Provider;
}

async function rejection(p: Promise<unknown>): Promise<GatewayError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return err as GatewayError;
  }
  throw new Error('expected the call to fail');
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function providerContract(setup: ContractSetup): void {
  describe(`${setup.kind} adapter against its fake (provider contract)`, () => {
    let fake: FakeProviderServer;
    let provider: Provider;

    const request = (over: Partial<CompletionRequest> = {}): CompletionRequest => ({
      model: setup.model,
      system: 'You are terse.',
      messages: [
        { role: 'user', content: 'Hello there' },
        { role: 'assistant', content: 'Hi.' },
        { role: 'user', content: 'Summarise the quarterly report please' },
      ],
      maxTokens: 100,
      temperature: 0.2,
      ...over,
    });
    const expectedInput = promptTokens('You are terse.', request().messages);
    const expectedWords = replyWords(setup.kind, 'Summarise the quarterly report please', 100);

    beforeAll(async () => {
      fake = await setup.startFake();
      provider = setup.makeProvider(fake, { timeoutMs: 1500 });
    });
    afterAll(async () => {
      await fake.close();
    });
    beforeEach(() => fake.reset());

    it('answers a plain call with the text and the exact usage the provider reported', async () => {
      const result = await provider.complete(request());
      expect(result.text).toBe(expectedWords.join(''));
      expect(result.usage.inputTokens).toBe(expectedInput);
      expect(result.usage.outputTokens).toBe(expectedWords.length);
      expect(result.model).toBe(setup.model);
      expect(fake.requests).toHaveLength(1);
    });

    it('streams text deltas and takes usage from the stream itself', async () => {
      const deltas: string[] = [];
      const result = await provider.stream(request(), (d) => deltas.push(d));
      expect(deltas.length).toBeGreaterThan(1);
      expect(deltas.join('')).toBe(expectedWords.join(''));
      expect(result.text).toBe(expectedWords.join(''));
      expect(result.usage.inputTokens).toBe(expectedInput);
      expect(result.usage.outputTokens).toBe(expectedWords.length);
    });

    it('sends max tokens upstream and reports the provider stopping at it', async () => {
      const result = await provider.complete(request({ maxTokens: 3 }));
      expect(result.usage.outputTokens).toBe(3);
      expect(result.text).toBe(replyWords(setup.kind, 'x', 3).join(''));
      expect(result.stopReason).toBe('max_tokens');
    });

    it('maps 429 to PROVIDER_UNAVAILABLE with the status, so the pipeline fails over', async () => {
      fake.failNext({ kind: 'status', status: 429 });
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details.status).toBe(429);
      expect(err.message).toContain(provider.name);
    });

    it('maps a 5xx to PROVIDER_UNAVAILABLE', async () => {
      fake.failNext({ kind: 'status', status: 500 });
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details.status).toBe(500);
    });

    it('maps a 400 to PROVIDER_ERROR, which is not retried', async () => {
      fake.failNext({ kind: 'status', status: 400 });
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_ERROR');
      expect(err.details.status).toBe(400);
      expect(fake.requests).toHaveLength(1);
    });

    it('times out a hung upstream as PROVIDER_UNAVAILABLE and aborts the request', async () => {
      fake.failNext({ kind: 'hang' });
      const t0 = Date.now();
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(Date.now() - t0).toBeLessThan(10_000);
      await until(() => fake.requests[0]?.aborted === true);
    });

    it('charges what was streamed when the stream is cut midway', async () => {
      fake.failNext({ kind: 'cut', afterWords: 3 });
      const deltas: string[] = [];
      const err = await rejection(provider.stream(request(), (d) => deltas.push(d)));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(deltas.join('')).toBe(expectedWords.slice(0, 3).join(''));
      const usage = err.details.usage as { inputTokens: number; outputTokens: number } | undefined;
      expect(usage).toBeDefined();
      expect(usage!.outputTokens).toBeGreaterThanOrEqual(3);
      expect(usage!.inputTokens).toBeGreaterThan(0);
    });

    it('reports a malformed body as a clear provider error', async () => {
      fake.failNext({ kind: 'malformed' });
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.message).toContain(provider.name);
    });

    it.each([
      ['cut after its head', (f: FakeProviderServer) => f.failNext({ kind: 'cut', afterWords: 0 })],
      ['not valid JSON', (f: FakeProviderServer) => f.failNext({ kind: 'malformed' })],
      ['well-formed JSON that is not an answer', (f: FakeProviderServer) => f.failNext({ kind: 'misshapen' })],
    ])('says a plain answer whose 200 head arrived was answered when its body is %s, so the pipeline charges it', async (_what, fault) => {
      fault(fake);
      const err = await rejection(provider.complete(request()));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
      expect(err.details.answered).toBe(true);
    });

    it('says nothing was answered when the upstream refused before its head', async () => {
      fake.failNext({ kind: 'status', status: 503 });
      const err = await rejection(provider.complete(request()));
      expect(err.details.answered).toBeUndefined();
      expect(err.details.usage).toBeUndefined();
    });

    it('reports a malformed stream event as a clear provider error', async () => {
      fake.failNext({ kind: 'malformed' });
      const err = await rejection(provider.stream(request(), () => {}));
      expect(err.code).toBe('PROVIDER_UNAVAILABLE');
    });

    it('aborts the upstream request when the caller cancels, and says CANCELLED', async () => {
      fake.setLatency(5000);
      const controller = new AbortController();
      const pending = provider.stream(request({ signal: controller.signal }), () => {});
      await until(() => fake.requests.length === 1);
      controller.abort();
      const err = await rejection(pending);
      expect(err.code).toBe('CANCELLED');
      await until(() => fake.requests[0]!.aborted);
    });

    it('says CANCELLED without calling upstream when the signal is already aborted', async () => {
      const controller = new AbortController();
      controller.abort();
      const err = await rejection(provider.complete(request({ signal: controller.signal })));
      expect(err.code).toBe('CANCELLED');
      expect(fake.requests).toHaveLength(0);
    });

    it('aborts a plain call whose answer has not begun when the caller leaves, and says CANCELLED, not answered', async () => {
      fake.setLatency(5000);
      const controller = new AbortController();
      const pending = provider.complete(request({ signal: controller.signal }));
      await until(() => fake.requests.length === 1);
      controller.abort();
      const err = await rejection(pending);
      expect(err.code).toBe('CANCELLED');
      expect(err.details.answered).toBeUndefined();
      expect(err.details.usage).toBeUndefined();
      await until(() => fake.requests[0]!.aborted);
    });

    it('reads a plain answer whose head has arrived to its end when the caller leaves, and returns it with its usage', async () => {
      fake.setEndDelay(300);
      const controller = new AbortController();
      const pending = provider.complete(request({ signal: controller.signal }));
      await until(() => fake.requests.length === 1);
      await new Promise((r) => setTimeout(r, 50));
      controller.abort();
      const result = await pending;
      expect(result.text).toBe(expectedWords.join(''));
      expect(result.usage).toMatchObject({ inputTokens: expectedInput, outputTokens: expectedWords.length });
      expect(fake.requests[0]).toMatchObject({ completed: true, aborted: false });
    });

    it('serves a stream the provider had finished when the caller left before its end, with the usage it reported', async () => {
      fake.setEndDelay(300);
      const controller = new AbortController();
      const deltas: string[] = [];
      const pending = provider.stream(request({ signal: controller.signal }), (d) => {
        deltas.push(d);
        // The last word is out; the provider's last events follow at once, its end 300 ms later.
        if (deltas.length === expectedWords.length) setTimeout(() => controller.abort(), 50);
      });
      const result = await pending;
      expect(deltas.join('')).toBe(expectedWords.join(''));
      expect(result.usage).toMatchObject({ inputTokens: expectedInput, outputTokens: expectedWords.length });
    });
  });
}
