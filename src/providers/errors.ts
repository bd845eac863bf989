/**
 * Maps what an upstream answered to the gateway's error codes, the same way for every adapter:
 * statuses another provider or a later retry may fix become PROVIDER_UNAVAILABLE (so the pipeline
 * fails over); everything else is PROVIDER_ERROR. The upstream message is kept short and never
 * carries the request or credentials.
 */
import { GatewayError } from '../errors.js';
import type { Usage } from './provider.js';

/** 408 timeout, 409 conflict, 425, 429 rate limit, every 5xx (incl. Anthropic's 529 overloaded). */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
}

export interface UpstreamFailure {
  provider: string;
  /** HTTP status, when the upstream answered. */
  status?: number;
  /** Upstream error type, e.g. `rate_limit_error` or `ThrottlingException`. */
  type?: string;
  message: string;
  /** Tokens consumed before the failure (a stream cut midway), so they are still charged. */
  usage?: Usage;
  /** A timeout or connection failure rather than an answer. */
  network?: boolean;
  /**
   * The provider's 2xx head had arrived before the failure (a plain answer's body cut, stalled or
   * not an answer): the provider did the work and bills it. Without `usage` the pipeline charges
   * the attempt its bound (dispatch.ts).
   */
  answered?: boolean;
}

export function upstreamError(f: UpstreamFailure, cause?: unknown): GatewayError {
  const retryable = f.network === true || (f.status !== undefined && isRetryableStatus(f.status));
  const what = f.status !== undefined ? `HTTP ${f.status}${f.type ? ` ${f.type}` : ''}` : (f.type ?? 'network error');
  const details: Record<string, unknown> = { provider: f.provider };
  if (f.status !== undefined) details.status = f.status;
  if (f.type) details.upstreamType = f.type;
  if (f.usage) details.usage = f.usage;
  if (f.answered) details.answered = true;
  return new GatewayError(
    retryable ? 'PROVIDER_UNAVAILABLE' : 'PROVIDER_ERROR',
    `Provider ${f.provider} failed (${what}): ${f.message.slice(0, 300)}`,
    details,
    { cause },
  );
}

/**
 * The caller left. `usage` is what the provider reported before that (never an estimate of the
 * adapter's own); `answered` says the provider had begun answering (its response head had arrived),
 * so it bills the call even without reporting usage: the pipeline then charges at least the input
 * it reserved for (dispatch.ts).
 */
export function cancelledError(provider: string, usage?: Usage, answered = false): GatewayError {
  const details: Record<string, unknown> = { provider };
  if (usage) details.usage = usage;
  if (answered) details.answered = true;
  return new GatewayError('CANCELLED', 'The call was cancelled by the caller.', details);
}

/**
 * `err` as a failure after the provider's 2xx head had arrived (UpstreamFailure.answered): an
 * adapter's mapping of what went wrong with the body, marked as a call the provider bills.
 */
export function afterAnswer(err: GatewayError): GatewayError {
  if (err.details.answered === true) return err;
  return new GatewayError(err.code, err.message, { ...err.details, answered: true }, { cause: err.cause });
}
