/**
 * The egress allowlist: model traffic may leave only for hosts the policy names. Checked when a
 * policy loads (a provider whose endpoint is not allowed fails start-up) and again on every
 * outbound request by the network adapters, so a redirect or a mistyped base URL cannot leak.
 *
 * Patterns are host names, optionally with a port (`host:8443`); `*` stands for exactly one DNS
 * label (`bedrock-runtime.*.amazonaws.com`), never an empty one nor an IPv6 address. An IPv6 address
 * is written in brackets as in a URL (`[::1]`, `[::1]:11434`) and matches however either side writes
 * it. Matching is case-insensitive. A pattern without a port allows any port.
 */
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from './config.js';

/** Where each kind sends traffic when the policy gives no baseUrl. */
export function defaultEndpoint(config: ProviderConfig): string | undefined {
  switch (config.kind) {
    case 'demo':
      return undefined;
    case 'anthropic':
      return 'https://api.anthropic.com';
    case 'openai':
      return 'https://api.openai.com/v1';
    case 'bedrock':
      return `https://bedrock-runtime.${config.region}.amazonaws.com`;
  }
}

/** The endpoint a provider really calls: its baseUrl, else the kind's public endpoint. */
export function providerEndpoint(config: ProviderConfig): string | undefined {
  return config.kind === 'demo' ? undefined : (config.baseUrl ?? defaultEndpoint(config));
}

function labelsMatch(pattern: string, host: string): boolean {
  const p = pattern.split('.');
  const h = host.split('.');
  if (p.length !== h.length) return false;
  return p.every((label, i) => (label === '*' ? h[i] !== '' && !h[i]!.includes(':') : label === h[i]));
}

/** An IPv6 address (no brackets) in the form a URL gives its host: `0:0::1` is `::1`. */
function canonicalIpv6(address: string): string {
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address;
  }
}

/** A pattern's host (an IPv6 address without its brackets) and the port it names, if any. */
function parsePattern(raw: string): { host: string; port?: string } {
  const pattern = raw.trim().toLowerCase();
  const bracketed = /^\[([^\]]*)\](?::(\d+))?$/.exec(pattern);
  if (bracketed) return { host: canonicalIpv6(bracketed[1]!), port: bracketed[2] };
  // Two colons or more without brackets: an IPv6 address, which names no port.
  if (pattern.indexOf(':') !== pattern.lastIndexOf(':')) return { host: canonicalIpv6(pattern) };
  const [, host = '', port] = /^(.*?)(?::(\d+))?$/.exec(pattern)!;
  return { host, port };
}

/**
 * Answers per allowlist and URL string: the SDKs call the same few URLs over and over, and parsing
 * each one cost more than the rest of the check. A new policy brings a new list, hence a new cache.
 */
const verdicts = new WeakMap<readonly string[], Map<string, boolean>>();
const MAX_VERDICTS = 1000;

/** True when `url`'s host (and port, if the pattern has one) matches a pattern of `allow`. */
export function isEgressAllowed(url: string | URL, allow: readonly string[]): boolean {
  if (typeof url !== 'string') return egressAllowed(url, allow);
  let cache = verdicts.get(allow);
  if (!cache) verdicts.set(allow, (cache = new Map()));
  let verdict = cache.get(url);
  if (verdict === undefined) {
    verdict = egressAllowed(new URL(url), allow);
    if (cache.size >= MAX_VERDICTS) cache.clear();
    cache.set(url, verdict);
  }
  return verdict;
}

function egressAllowed(u: URL, allow: readonly string[]): boolean {
  const host = u.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const port = u.port || (u.protocol === 'https:' ? '443' : u.protocol === 'http:' ? '80' : '');
  return allow.some((raw) => {
    const pattern = parsePattern(raw);
    if (pattern.port && pattern.port !== port) return false;
    return labelsMatch(pattern.host, host);
  });
}

/** Throws EGRESS_DENIED unless `url` is allowed; the adapters call it before each request leaves. */
export function assertEgress(provider: string, url: string | URL, allow: readonly string[]): void {
  if (!isEgressAllowed(url, allow)) {
    const host = (typeof url === 'string' ? new URL(url) : url).host;
    throw new GatewayError('EGRESS_DENIED', `Provider ${provider} tried to reach ${host}, which is not on the policy's egress.allow list.`, {
      provider,
      host,
    });
  }
}

/**
 * A fetch that refuses hosts off the allowlist before any byte leaves. The Anthropic and OpenAI
 * SDKs accept a `fetch` option, so their every request (retries and redirects included) passes here.
 */
export function guardedFetch(provider: string, allow: readonly string[], inner: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    const url = typeof input === 'string' || input instanceof URL ? input : input.url;
    assertEgress(provider, url, allow);
    return inner(input, init);
  };
}
