/**
 * One error class for everything a caller can be told, with stable string codes.
 * Transports map a GatewayError to their own shape (MCP tool error, HTTP status, A2A error)
 * in one place; anything that is not a GatewayError is an internal error, never a client fault.
 */

/** Every code tollgate can return, with the HTTP status it maps to and what it means. */
export const ERROR_CODES = {
  AUTH_REQUIRED: { status: 401, summary: 'No credential was presented.' },
  AUTH_INVALID: { status: 401, summary: 'The credential was presented but is unknown, expired or malformed.' },
  FORBIDDEN: { status: 403, summary: 'The caller is authenticated but may not use this gateway or model.' },
  POLICY_DENIED: { status: 403, summary: 'A policy rule denied the call; the rule id and its message are returned.' },
  BUDGET_EXHAUSTED: { status: 429, summary: 'A budget that applies cannot cover the call; the budget and its reset time are returned.' },
  RATE_LIMITED: { status: 429, summary: 'A rate limit or concurrency cap that applies is reached; the limit, its scope and when to retry are returned.' },
  INVALID_REQUEST: { status: 400, summary: 'The arguments are missing, of the wrong type or out of range.' },
  UNKNOWN_MODEL: { status: 400, summary: 'The requested model or tier is not configured.' },
  NOT_FOUND: { status: 404, summary: 'There is no such endpoint on this gateway.' },
  PAYLOAD_TOO_LARGE: { status: 413, summary: 'The request body exceeds the configured size limit.' },
  PROVIDER_UNAVAILABLE: { status: 502, summary: 'Every provider that could serve the call failed; the attempts are returned.' },
  PROVIDER_ERROR: { status: 502, summary: 'The provider rejected the call in a way retrying will not fix.' },
  QUOTA_STORE_UNAVAILABLE: { status: 503, summary: 'The shared quota store is unreachable and the budget fails closed.' },
  IDENTITY_UNAVAILABLE: { status: 503, summary: 'The OIDC issuer could not be reached to sign in to the console (discovery or token endpoint).' },
  AUTHZ_UNAVAILABLE: { status: 503, summary: 'The authorization service (OpenFGA) is unreachable and its check fails closed, or it rejected the check.' },
  GATEWAY_BUSY: { status: 503, summary: 'The gateway holds as many MCP sessions as it is configured for (TOLLGATE_MAX_SESSIONS, or the caller\'s TOLLGATE_MAX_SESSIONS_PER_CALLER, each busy with a call); try again later.' },
  CANCELLED: { status: 499, summary: 'The caller cancelled the call; what was consumed is charged, the rest released.' },
  POLICY_INVALID: { status: 500, summary: 'The policy file failed validation; every error is listed with its path.' },
  EGRESS_DENIED: { status: 500, summary: 'A provider endpoint is not on the egress allowlist.' },
  INTERNAL: { status: 500, summary: 'An unexpected error inside tollgate; details are in the gateway log, not the response.' },
} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error a caller may see. `details` is safe to return; `cause` stays in the log. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GatewayError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  /** The body every transport returns for this error. */
  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** Turns anything thrown into a GatewayError; unknown errors become INTERNAL without leaking their text. */
export function asGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('INTERNAL', 'Internal error in tollgate; see the gateway log.', {}, { cause: err });
}

/** True for errors a different provider or a retry may fix. */
export function isRetryable(err: unknown): boolean {
  return err instanceof GatewayError && err.code === 'PROVIDER_UNAVAILABLE';
}
