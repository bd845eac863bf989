/**
 * Network plumbing shared by the adapters whose SDKs take a `fetch` (Anthropic, OpenAI): how a
 * request leaves, and a guard for streams that go quiet.
 */
import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { guardedFetch } from './egress.js';
import type { ProviderBuildOptions } from './registry.js';

/**
 * How the SDK reaches the network: through the proxy's dispatcher when one is set (with undici's own
 * fetch, which that dispatcher belongs to), refusing hosts off the egress allowlist, and never
 * following a redirect, which would otherwise leave without the allowlist seeing where it goes.
 * The result is spread into the SDK's client options.
 */
export function sdkTransport(name: string, opts: ProviderBuildOptions): { fetch: typeof fetch; fetchOptions: RequestInit } {
  const dispatcher = opts.proxy ? new ProxyAgent(opts.proxy) : undefined;
  const base = dispatcher ? (undiciFetch as unknown as typeof fetch) : fetch;
  return {
    fetch: opts.egressAllow ? guardedFetch(name, opts.egressAllow, base) : base,
    fetchOptions: { redirect: 'manual', ...(dispatcher ? { dispatcher } : {}) } as RequestInit,
  };
}

/**
 * Aborts a stream that goes quiet for `ms`. The SDK's own timeout stops counting once the response
 * headers arrive, so without this a stream stalled midway would hold its budget reservation forever.
 */
export function idleGuard(ms: number, outer: AbortSignal | undefined) {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  return {
    signal: outer ? AbortSignal.any([outer, controller.signal]) : controller.signal,
    get fired(): boolean {
      return controller.signal.aborted;
    },
    touch(): void {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), ms);
    },
    stop(): void {
      clearTimeout(timer);
    },
  };
}
