/**
 * POST /v1/messages in the Anthropic Messages shape, so an application built on the Anthropic SDK
 * switches to tollgate by changing its base URL. The tollgate key is read from
 * `Authorization: Bearer` (SDK 1.x) or `x-api-key` (older SDKs); calls run through the same
 * gateway as MCP, and the response's `model` is the one that served.
 */
import { Router, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { asGatewayError, GatewayError, type ErrorCode } from '../errors.js';
import type { CallResult, Gateway } from '../gateway.js';
import type { Principal } from '../identity/principal.js';
import { parseCompleteArgs } from '../mcp/tools/schemas.js';
import type { CompletionInput } from '../policy/decide.js';
import { readBudgetHeaders, setBudgetHeaders, setHeaders } from './budgetHeaders.js';
import {
  abortOnClose,
  authInApiShape,
  compatErrorHandler,
  isFinal,
  modelOrTier,
  principalOf,
  setBudgetHeadersFor,
  startRequest,
  type CompatRouteOptions,
} from './compat.js';

const textBlock = z.looseObject({ type: z.literal('text'), text: z.string() });
const messagesRequest = z.looseObject({
  model: z.string().min(1),
  max_tokens: z.number().int().positive(),
  messages: z.array(z.looseObject({ role: z.enum(['user', 'assistant']), content: z.union([z.string(), z.array(textBlock)]) })).min(1),
  system: z.union([z.string(), z.array(textBlock)]).optional(),
  temperature: z.number().min(0).max(1).optional(),
  stream: z.boolean().optional(),
});

/** Fields tollgate cannot honour; refused rather than silently dropped. */
const UNSUPPORTED = ['tools', 'tool_choice', 'stop_sequences', 'thinking', 'mcp_servers', 'container'] as const;

interface MessagesCall {
  input: CompletionInput;
  stream: boolean;
}

/** Validates a Messages API body and turns it into the gateway's request. */
export function parseMessagesRequest(raw: unknown, gateway: Gateway): MessagesCall {
  const parsed = messagesRequest.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new GatewayError('INVALID_REQUEST', `Invalid request: ${issue.path.join('.') || '(body)'}: ${issue.message}`);
  }
  const body = parsed.data;
  for (const key of UNSUPPORTED) {
    const v = body[key];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)) throw new GatewayError('INVALID_REQUEST', `Invalid request: ${key} is not supported by tollgate.`);
  }
  const text = (c: string | Array<{ text: string }>) => (typeof c === 'string' ? c : c.map((b) => b.text).join(''));
  const input = parseCompleteArgs(
    {
      messages: body.messages.map((m) => ({ role: m.role, content: text(m.content) })),
      system: body.system === undefined ? undefined : text(body.system),
      ...modelOrTier(gateway.policy, body.model),
      max_tokens: body.max_tokens,
      temperature: body.temperature,
    },
    gateway.policy.config.limits,
  );
  return { input, stream: body.stream === true };
}

const ERROR_TYPES: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: 'authentication_error',
  AUTH_INVALID: 'authentication_error',
  FORBIDDEN: 'permission_error',
  POLICY_DENIED: 'permission_error',
  BUDGET_EXHAUSTED: 'rate_limit_error',
  INVALID_REQUEST: 'invalid_request_error',
  UNKNOWN_MODEL: 'not_found_error',
  PAYLOAD_TOO_LARGE: 'request_too_large',
  QUOTA_STORE_UNAVAILABLE: 'overloaded_error',
  AUTHZ_UNAVAILABLE: 'overloaded_error',
};

/** Anthropic's error object; the tollgate code leads the message and is repeated in `details`. */
export function anthropicError(err: GatewayError) {
  return { type: ERROR_TYPES[err.code] ?? 'api_error', message: `${err.code}: ${err.message}`, details: { error_code: err.code, ...err.details } };
}

function renderError(res: Response, err: GatewayError): void {
  if (isFinal(err)) res.setHeader('x-should-retry', 'false');
  // UNKNOWN_MODEL is a 400 in tollgate; Anthropic answers an unknown model with 404 not_found_error.
  res.status(err.code === 'UNKNOWN_MODEL' ? 404 : err.status).json({ type: 'error', error: anthropicError(err), request_id: res.locals.requestId });
}

function stopReason(result: CallResult, input: CompletionInput): 'end_turn' | 'max_tokens' {
  return result.usage.outputTokens >= input.maxTokens ? 'max_tokens' : 'end_turn';
}

function usageOf(result: CallResult) {
  const cached = result.usage.cachedInputTokens ?? 0;
  return { input_tokens: result.usage.inputTokens - cached, output_tokens: result.usage.outputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: cached };
}

/** Anthropic SDKs read `request-id`; the other endpoints use `x-request-id`. Both are sent. */
const mirrorRequestId: RequestHandler = (_req, res, next) => {
  res.setHeader('request-id', res.locals.requestId as string);
  next();
};

/** Older SDKs send the key as `x-api-key`; the bearer middleware reads `Authorization`. */
const apiKeyAsBearer: RequestHandler = (req, _res, next) => {
  const key = req.headers['x-api-key'];
  if (!req.headers.authorization && typeof key === 'string' && key) req.headers.authorization = `Bearer ${key}`;
  next();
};

/**
 * Streams the Messages SSE events. The status line waits for the first text, so a refusal before
 * any output still arrives as a plain error response with its own status.
 */
async function streamMessage(res: Response, gateway: Gateway, principal: Principal, call: MessagesCall, requestId: string): Promise<void> {
  const before = await readBudgetHeaders(gateway, principal);
  const signal = abortOnClose(res);
  let started = false;
  const send = (event: string, data: Record<string, unknown>) => res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
  const begin = (model: string) => {
    if (started) return;
    started = true;
    setHeaders(res, before);
    res.status(200).setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-cache');
    res.flushHeaders();
    // Usage is known once the provider reports it; message_delta carries the totals.
    const message = { id: `msg_${requestId}`, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } };
    send('message_start', { message });
    send('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
  };
  let result: CallResult;
  try {
    result = await gateway.complete({
      principal,
      transport: 'anthropic',
      request: call.input,
      signal,
      requestId,
      onText: (delta, model) => {
        begin(model);
        send('content_block_delta', { index: 0, delta: { type: 'text_delta', text: delta } });
      },
    });
  } catch (err) {
    const ge = asGatewayError(err);
    if (!started) {
      await setBudgetHeadersFor(res, gateway, principal);
      renderError(res, ge);
    } else if (!res.writableEnded) {
      send('error', { error: anthropicError(ge) });
      res.end();
    }
    return;
  }
  begin(result.model);
  send('content_block_stop', { index: 0 });
  send('message_delta', { delta: { stop_reason: stopReason(result, call.input), stop_sequence: null }, usage: usageOf(result) });
  send('message_stop', {});
  res.end();
}

/** The router serving POST /v1/messages behind the app's bearer authentication. */
export function anthropicCompatRouter(gateway: Gateway, opts: CompatRouteOptions): Router {
  const router = Router();
  router.post('/v1/messages', startRequest, mirrorRequestId, apiKeyAsBearer, authInApiShape(opts.requireAuth, renderError), opts.json, async (req, res) => {
    const requestId = res.locals.requestId as string;
    let principal: Principal | undefined;
    try {
      principal = principalOf(req);
      const call = parseMessagesRequest(req.body, gateway);
      if (call.stream) {
        await streamMessage(res, gateway, principal, call, requestId);
        return;
      }
      const result = await gateway.complete({ principal, transport: 'anthropic', request: call.input, signal: abortOnClose(res), requestId });
      setBudgetHeaders(res, result.budgets);
      res.setHeader('x-tollgate-tier', result.tier);
      res.setHeader('x-tollgate-decision', result.decision.effect);
      res.json({
        id: `msg_${requestId}`,
        type: 'message',
        role: 'assistant',
        model: result.model,
        content: [{ type: 'text', text: result.text }],
        stop_reason: stopReason(result, call.input),
        stop_sequence: null,
        usage: usageOf(result),
      });
    } catch (err) {
      await setBudgetHeadersFor(res, gateway, principal);
      if (!res.headersSent) renderError(res, asGatewayError(err));
    }
  });
  router.use('/v1/messages', compatErrorHandler(renderError, opts.maxBodyBytes));
  return router;
}
