/**
 * POST /v1/messages in the Anthropic Messages shape, so an application built on the Anthropic SDK
 * switches to tollgate by changing its base URL. This file is only the wire codec; the route
 * (compat.ts) runs the call through the same gateway as MCP. The tollgate key is read from
 * `Authorization: Bearer` (SDK 1.x) or `x-api-key` (older SDKs); the response's `model` is the
 * one that served.
 */
import type { Request } from 'express';
import { z } from 'zod';
import { PART_SEPARATOR, textArgument, type CompleteArgs } from '../call/request.js';
import { never, only, refuseUnhonoured, unset, type Neutral } from '../call/unhonoured.js';
import { GatewayError, type ErrorCode } from '../errors.js';
import type { CallResult } from '../gateway/gateway.js';
import { bearerToken, type CompatCall, type WireCodec } from './compat.js';
import { notPassedOn, telling } from './openaiCompat.js';
import { anthropicRateLimitHeaders } from './rateLimitHeaders.js';

const textBlock = z.looseObject({ type: z.literal('text', { error: notPassedOn('content blocks', 'text blocks') }), text: z.string() });
const messagesRequest = z.looseObject({
  model: z.string().min(1),
  max_tokens: z.number().int().positive(),
  messages: z.array(z.looseObject({ role: z.enum(['user', 'assistant']), content: z.union([z.string(), z.array(textBlock)]) })).min(1),
  system: z.union([z.string(), z.array(textBlock)]).optional(),
  temperature: z.number().min(0).max(1).optional(),
  stream: z.boolean().optional(),
  // Taken and not sent on, but of the type the API gives it.
  metadata: z.looseObject({ user_id: z.string().nullish() }).nullish(),
});

/**
 * Fields tollgate cannot honour, refused rather than silently dropped, each with the values that
 * change nothing. Dropping any other value would change the answer (sampling, a structured output
 * format or effort, thinking, tools, context management) or what it costs and where it runs (the
 * inference region, fast mode, the service tier; the beta `billing_policy`, `fallbacks` and
 * `fallback_credit_token`). `metadata` (`user_id`) changes neither and is taken without being
 * sent; so is `cache_control` (at the top or on a block): a cache mark never changes the answer,
 * and refusing it would save nothing, since the caller would send the call without it and pay the
 * same full input price.
 */
const UNSUPPORTED: Readonly<Record<string, Neutral>> = {
  tools: never,
  tool_choice: never,
  stop_sequences: never,
  thinking: never,
  mcp_servers: never,
  container: never,
  top_p: never,
  top_k: never,
  output_config: unset,
  output_format: never,
  inference_geo: never,
  speed: only('standard'),
  service_tier: only('auto'),
  diagnostics: never,
  context_management: never,
  compaction: never,
  thread: never,
  billing_policy: never,
  fallbacks: never,
  fallback_credit_token: never,
};

/** Validates a Messages API body and turns it into wire-neutral `complete` arguments. */
export function decodeMessagesRequest(raw: unknown): CompleteArgs {
  const parsed = messagesRequest.safeParse(raw ?? {});
  if (!parsed.success) {
    // Inside the form the value has: a list of blocks with one of another type names that block.
    const issue = telling(parsed.error.issues[0]!);
    throw new GatewayError('INVALID_REQUEST', `Invalid request: ${issue.path.map(String).join('.') || '(body)'}: ${issue.message}`);
  }
  const body = parsed.data;
  refuseUnhonoured(body, UNSUPPORTED);
  refuseEmptyContent(body.messages);
  // Text blocks of a message or of the system prompt stay blocks (the call core joins them where a
  // provider has none, and the system prompt's with "\n"), so content rules read each seam.
  const text = (c: string | Array<{ text: string }>) => (typeof c === 'string' ? c : c.map((b) => b.text).join(PART_SEPARATOR));
  const content = (c: string | Array<{ text: string }>) => (Array.isArray(c) && c.length > 0 ? c.map((b) => ({ type: 'text' as const, text: b.text })) : text(c));
  return {
    messages: body.messages.map((m) => ({ role: m.role, content: content(m.content) })),
    system: body.system === undefined ? undefined : typeof body.system === 'string' ? body.system : (textArgument(body.system.map((b) => b.text)) ?? ''),
    model: body.model,
    max_tokens: body.max_tokens,
    temperature: body.temperature,
  };
}

/**
 * Anthropic refuses an empty text block, and a message with no content but the last one when it is
 * the assistant's (a prefill to continue). Sent on, either would come back from the provider as a
 * 502 PROVIDER_ERROR for what is the caller's fault; refused here, it is Anthropic's own 400.
 */
function refuseEmptyContent(messages: ReadonlyArray<{ role: string; content: string | Array<{ text: string }> }>): void {
  const refuse = (reason: string) => new GatewayError('INVALID_REQUEST', `Invalid request: ${reason}`);
  if (messages.some((m) => Array.isArray(m.content) && m.content.some((b) => b.text === ''))) throw refuse('messages: text content blocks must be non-empty');
  const empty = messages.findIndex((m, i) => m.content.length === 0 && !(m.role === 'assistant' && i === messages.length - 1));
  if (empty >= 0) throw refuse(`messages.${empty}: all messages must have non-empty content except for the optional final assistant message`);
}

/**
 * Betas (`anthropic-beta`) whose only effect is to admit request fields or content tollgate refuses
 * on its own (tools, thinking, context management, MCP servers, documents, files, structured
 * outputs, effort, skills), or a cache mark it takes without sending, or that name how the caller
 * signs in to Anthropic: without those fields, dropping the beta changes nothing. Any other beta is
 * refused by name, as an unhonoured field is: some change the answer or its price with no field at
 * all (`context-1m-2025-08-07` widens the context window at a higher price, `output-128k-2025-02-19`
 * raises the output cap), and a beta tollgate does not know may do either.
 */
const NEUTRAL_BETAS: ReadonlySet<string> = new Set([
  'prompt-caching-2024-07-31',
  'extended-cache-ttl-2025-04-11',
  'token-counting-2024-11-01',
  'oauth-2025-04-20',
  'token-efficient-tools-2025-02-19',
  'fine-grained-tool-streaming-2025-05-14',
  'computer-use-2024-10-22',
  'computer-use-2025-01-24',
  'code-execution-2025-05-22',
  'code-execution-2025-08-25',
  'web-fetch-2025-09-10',
  'interleaved-thinking-2025-05-14',
  'adaptive-thinking-2026-01-28',
  'prompt-caching-scope-2026-01-05',
  'context-management-2025-06-27',
  'mcp-client-2025-04-04',
  'mcp-client-2025-11-20',
  'pdfs-2024-09-25',
  'files-api-2025-04-14',
  'search-results-2025-06-09',
  'structured-outputs-2025-11-13',
  'effort-2025-11-24',
  'skills-2025-10-02',
]);

/**
 * The refusal of an `anthropic-beta` header naming a beta tollgate would drop with a difference
 * (see NEUTRAL_BETAS), for the call's `rejected` so it is recorded as the caller's INVALID_REQUEST.
 * The header is a comma-separated list, possibly sent more than once.
 */
export function unhonouredBeta(req: Request): GatewayError | undefined {
  const header = req.headers['anthropic-beta'];
  const betas = (Array.isArray(header) ? header : [header ?? '']).flatMap((h) => h.split(','));
  for (const raw of betas) {
    const beta = raw.trim();
    if (beta && !NEUTRAL_BETAS.has(beta)) return new GatewayError('INVALID_REQUEST', `Invalid request: anthropic-beta ${beta.slice(0, 100)} is not supported by tollgate.`);
  }
  return undefined;
}

const ERROR_TYPES: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: 'authentication_error',
  AUTH_INVALID: 'authentication_error',
  FORBIDDEN: 'permission_error',
  POLICY_DENIED: 'permission_error',
  BUDGET_EXHAUSTED: 'rate_limit_error',
  RATE_LIMITED: 'rate_limit_error',
  INVALID_REQUEST: 'invalid_request_error',
  UNKNOWN_MODEL: 'not_found_error',
  NOT_FOUND: 'not_found_error',
  PAYLOAD_TOO_LARGE: 'request_too_large',
  QUOTA_STORE_UNAVAILABLE: 'overloaded_error',
  AUTHZ_UNAVAILABLE: 'overloaded_error',
  GATEWAY_BUSY: 'overloaded_error',
};

/** Anthropic's error object; the tollgate code leads the message and is repeated in `details`. */
export function anthropicError(err: GatewayError) {
  return { type: ERROR_TYPES[err.code] ?? 'api_error', message: `${err.code}: ${err.message}`, details: { error_code: err.code, ...err.details } };
}

/** Anthropic's stop_reason and stop_sequence, which the gateway's words already are. */
function stopOf(result: CallResult) {
  return { stop_reason: result.stopReason, stop_sequence: result.stopSequence ?? null };
}

function usageOf(result: CallResult) {
  const cached = result.usage.cachedInputTokens ?? 0;
  return { input_tokens: result.usage.inputTokens - cached, output_tokens: result.usage.outputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: cached };
}

/** SDK 1.x sends `Authorization: Bearer`; older SDKs send the key as `x-api-key`. */
function credentialOf(req: Request): string | undefined {
  const key = req.headers['x-api-key'];
  if (!req.headers.authorization && typeof key === 'string' && key) return key;
  return bearerToken(req);
}

/** The Messages wire codec; Anthropic's SSE frames carry an `event:` line and the type again in the data. */
export const anthropicCodec: WireCodec = {
  transport: 'anthropic',
  path: '/v1/messages',
  credentialOf,
  rejected: unhonouredBeta,
  // Anthropic SDKs read `request-id`; the other endpoints use `x-request-id`. Both are sent.
  prepare: (res) => res.setHeader('request-id', res.locals.requestId as string),
  options: (body) => ({ stream: (body as { stream?: unknown } | null | undefined)?.stream === true, includeUsage: false }),
  decode: decodeMessagesRequest,
  render(res, result, call) {
    res.json({
      id: `msg_${call.requestId}`,
      type: 'message',
      role: 'assistant',
      model: result.model,
      content: [{ type: 'text', text: result.text }],
      ...stopOf(result),
      usage: usageOf(result),
    });
  },
  rateLimitHeaders: anthropicRateLimitHeaders,
  errorBody: (err, res) => ({ type: 'error', error: anthropicError(err), request_id: res.locals.requestId }),
  // UNKNOWN_MODEL is a 400 in tollgate; Anthropic answers an unknown model with 404 not_found_error.
  statusOf: (err) => (err.code === 'UNKNOWN_MODEL' ? 404 : err.status),
  stream: {
    start(send, model, call) {
      // Usage is known once the provider reports it; message_delta carries the totals.
      const message = { id: `msg_${call.requestId}`, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } };
      send({ type: 'message_start', message }, 'message_start');
      send({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, 'content_block_start');
    },
    delta: (send, text) => send({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }, 'content_block_delta'),
    end(send, result, call) {
      send({ type: 'content_block_stop', index: 0 }, 'content_block_stop');
      send({ type: 'message_delta', delta: stopOf(result), usage: usageOf(result) }, 'message_delta');
      send({ type: 'message_stop' }, 'message_stop');
    },
    error: (send, err) => send({ type: 'error', error: anthropicError(err) }, 'error'),
  },
};
