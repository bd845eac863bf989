/**
 * What the identity tests (openai-wire-sdk.test.ts, anthropic-wire-sdk.test.ts) share: the requests
 * a fake received for the same calls made through an adapter on each client.
 *
 * The SDK's fetch (fetchSdk.ts) sends on undici's global dispatcher, the direct clients on an Agent
 * of their own: counting the global dispatcher's requests tells which client a run really used, so
 * a direct client that fell back to the SDK cannot pass on identical requests.
 */
import { Agent, getGlobalDispatcher, setGlobalDispatcher, type Dispatcher } from 'undici';
import { afterAll, beforeAll, expect } from 'vitest';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';

export interface Seen {
  method: string;
  path: string;
  headers: Record<string, unknown>;
  /** The body's text: the fake parses it, and JSON.parse keeps the keys in the order they were sent. */
  text: string;
}

/**
 * Starts the fake for the calling file and counts the requests that go through the global
 * dispatcher (the SDK's fetch); `bothWays` runs the same calls on each client.
 */
export function wireIdentity(start: () => Promise<FakeProviderServer>): {
  fake(): FakeProviderServer;
  bothWays(run: (client: 'sdk' | 'direct') => Promise<unknown>): Promise<{ sdk: Seen[]; direct: Seen[] }>;
} {
  let fake: FakeProviderServer | undefined;
  let sdkFetches = 0;
  let before: Dispatcher;
  beforeAll(async () => {
    fake = await start();
    before = getGlobalDispatcher();
    setGlobalDispatcher(
      new Agent().compose((dispatch) => (opts, handler) => {
        sdkFetches += 1;
        return dispatch(opts, handler);
      }),
    );
  });
  afterAll(async () => {
    setGlobalDispatcher(before);
    await fake?.close();
  });
  const seen = (): Seen[] => fake!.requests.map((r) => ({ method: r.method, path: r.path, headers: r.headers, text: JSON.stringify(r.body) }));
  return {
    fake: () => fake!,
    /** What the fake received for `run` on each client, in order; the SDK's run went through its fetch, the direct one did not. */
    async bothWays(run) {
      fake!.reset();
      sdkFetches = 0;
      await run('sdk');
      const sdk = seen();
      expect(sdkFetches).toBe(sdk.length);
      fake!.reset();
      sdkFetches = 0;
      await run('direct');
      expect(sdkFetches).toBe(0);
      return { sdk, direct: seen() };
    },
  };
}
