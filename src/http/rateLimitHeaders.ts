/**
 * The headers a RATE_LIMITED refusal carries on the provider-compatible endpoints, so the
 * official SDKs' own retry logic waits as long as the gateway says (both read `retry-after-ms`,
 * then `Retry-After`) and clients that watch OpenAI's or Anthropic's rate-limit headers see the
 * limit that refused them. Built from the refusal's details (src/pipeline/steps/reserve.ts).
 *
 * A concurrency cap is reported in the request forms: neither API has a header for calls in flight.
 */
import type { GatewayError } from '../errors.js';

interface RateLimitDetails {
  kind: 'requests' | 'tokens' | 'concurrent';
  limit: number;
  remaining: number;
  retryAfterMs: number;
  retryAt: string;
  limitId: string;
  scope: string;
}

function detailsOf(err: GatewayError): RateLimitDetails | undefined {
  if (err.code !== 'RATE_LIMITED') return undefined;
  return err.details as unknown as RateLimitDetails;
}

/** OpenAI's reset format: `1m30s`, `6s`, `250ms`. */
export function openaiDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(1, Math.ceil(ms))}ms`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = (ms - minutes * 60_000) / 1000;
  const s = `${Number.isInteger(seconds) ? seconds : seconds.toFixed(3).replace(/0+$/, '')}s`;
  return minutes > 0 ? `${minutes}m${s}` : s;
}

/** `Retry-After` (whole seconds, rounded up) and `retry-after-ms`, plus tollgate's own naming of the limit. */
export function retryHeaders(err: GatewayError): Record<string, string> {
  const d = detailsOf(err);
  if (!d) return {};
  return {
    'retry-after': String(Math.max(1, Math.ceil(d.retryAfterMs / 1000))),
    'retry-after-ms': String(d.retryAfterMs),
    'x-tollgate-ratelimit-id': d.limitId,
    'x-tollgate-ratelimit-scope': d.scope,
  };
}

/**
 * An ISO instant in whole seconds (Anthropic's RFC 3339 form), rounded up: a reset cut down to its
 * second would send a client that waits for it back before the window has moved on.
 */
function wholeSecondAfter(iso: string): string {
  return new Date(Math.ceil(Date.parse(iso) / 1000) * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

/** OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limit that refused. */
export function openaiRateLimitHeaders(err: GatewayError): Record<string, string> {
  const d = detailsOf(err);
  if (!d) return {};
  const unit = d.kind === 'tokens' ? 'tokens' : 'requests';
  return {
    ...retryHeaders(err),
    [`x-ratelimit-limit-${unit}`]: String(d.limit),
    [`x-ratelimit-remaining-${unit}`]: String(d.remaining),
    [`x-ratelimit-reset-${unit}`]: openaiDuration(d.retryAfterMs),
  };
}

/** Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` for the limit that refused. */
export function anthropicRateLimitHeaders(err: GatewayError): Record<string, string> {
  const d = detailsOf(err);
  if (!d) return {};
  const unit = d.kind === 'tokens' ? 'tokens' : 'requests';
  return {
    ...retryHeaders(err),
    [`anthropic-ratelimit-${unit}-limit`]: String(d.limit),
    [`anthropic-ratelimit-${unit}-remaining`]: String(d.remaining),
    [`anthropic-ratelimit-${unit}-reset`]: wholeSecondAfter(d.retryAt),
  };
}
