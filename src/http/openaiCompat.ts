/**
 * POST /v1/chat/completions in the OpenAI Chat Completions shape, so an application built on the
 * OpenAI SDK switches to tollgate by changing its base URL. Requests run through the same gateway
 * as MCP; `model` may name a model or a tier, and the response's `model` is the one that served.
 */
import { Router, type Response } from 'express';
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

const textPart = z.looseObject({ type: z.literal('text'), text: z.string() });
const chatMessage = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(textPart)]).nullable().optional(),
});

const chatRequest = z.looseObject({
  model: z.string().min(1),
  messages: z.array(chatMessage).min(1),
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullish(),
  n: z.literal(1).nullish(),
});

/** Fields tollgate cannot honour; refused rather than silently dropped. */
const UNSUPPORTED = ['tools', 'tool_choice', 'functions', 'function_call', 'audio', 'prediction', 'stop'] as const;

interface ChatCall {
  input: CompletionInput;
  stream: boolean;
  includeUsage: boolean;
}

function invalid(message: string, param: string | null): GatewayError {
  return new GatewayError('INVALID_REQUEST', message, { param });
}

/** Validates a Chat Completions body and turns it into the gateway's request. */
export function parseChatRequest(raw: unknown, gateway: Gateway): ChatCall {
  const parsed = chatRequest.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const param = issue.path.join('.') || null;
    throw invalid(`Invalid request: ${param ?? '(body)'}: ${issue.message}`, param);
  }
  const body = parsed.data;
  for (const key of UNSUPPORTED) {
    if (body[key] !== undefined && body[key] !== null) throw invalid(`Invalid request: ${key} is not supported by tollgate.`, key);
  }
  const text = (c: z.infer<typeof chatMessage>['content']) => (typeof c === 'string' ? c : (c ?? []).map((p) => p.text).join(''));
  const system = body.messages.filter((m) => m.role === 'system' || m.role === 'developer').map((m) => text(m.content));
  const messages = body.messages.flatMap((m) => (m.role === 'user' || m.role === 'assistant' ? [{ role: m.role, content: text(m.content) }] : []));
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  // The MCP tool's validation applies the same limits (max_tokens ceiling, input size) to every way in.
  const input = parseCompleteArgs(
    {
      messages,
      system: system.length > 0 ? system.join('\n\n') : undefined,
      ...modelOrTier(gateway.policy, body.model),
      max_tokens: maxTokens,
      temperature: body.temperature ?? undefined,
    },
    gateway.policy.config.limits,
  );
  return { input, stream: body.stream === true, includeUsage: body.stream_options?.include_usage === true };
}

const ERROR_TYPES: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: 'authentication_error',
  AUTH_INVALID: 'authentication_error',
  FORBIDDEN: 'permission_error',
  POLICY_DENIED: 'permission_error',
  BUDGET_EXHAUSTED: 'insufficient_quota',
  INVALID_REQUEST: 'invalid_request_error',
  UNKNOWN_MODEL: 'invalid_request_error',
  PAYLOAD_TOO_LARGE: 'invalid_request_error',
};

/** OpenAI's error object; the tollgate code is `code` and leads the message. */
export function openaiError(err: GatewayError) {
  const param = typeof err.details.param === 'string' ? err.details.param : err.code === 'UNKNOWN_MODEL' ? 'model' : null;
  return {
    message: `${err.code}: ${err.message}`,
    type: ERROR_TYPES[err.code] ?? 'server_error',
    param,
    code: err.code,
    details: err.details,
  };
}

function renderError(res: Response, err: GatewayError): void {
  if (isFinal(err)) res.setHeader('x-should-retry', 'false');
  res.status(err.status).json({ error: openaiError(err) });
}

function finishReason(result: CallResult, input: CompletionInput): 'stop' | 'length' {
  return result.usage.outputTokens >= input.maxTokens ? 'length' : 'stop';
}

function usageOf(result: CallResult) {
  const { inputTokens, outputTokens, cachedInputTokens } = result.usage;
  return {
    prompt_tokens: inputTokens,
    completion_tokens: outputTokens,
    total_tokens: inputTokens + outputTokens,
    prompt_tokens_details: { cached_tokens: cachedInputTokens ?? 0 },
  };
}

function sendCompletion(res: Response, result: CallResult, input: CompletionInput, created: number): void {
  setBudgetHeaders(res, result.budgets);
  res.setHeader('x-tollgate-tier', result.tier);
  res.setHeader('x-tollgate-decision', result.decision.effect);
  res.json({
    id: `chatcmpl-${result.requestId}`,
    object: 'chat.completion',
    created,
    model: result.model,
    choices: [{ index: 0, message: { role: 'assistant', content: result.text, refusal: null }, logprobs: null, finish_reason: finishReason(result, input) }],
    usage: usageOf(result),
  });
}

/**
 * Streams as server-sent `data:` chunks. The status line waits for the first text, so a refusal
 * before any output still arrives as a plain error response with its own status.
 */
async function streamCompletion(res: Response, gateway: Gateway, principal: Principal, call: ChatCall, requestId: string, created: number): Promise<void> {
  const before = await readBudgetHeaders(gateway, principal);
  const signal = abortOnClose(res);
  let model: string | undefined;
  const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
    id: `chatcmpl-${requestId}`,
    object: 'chat.completion.chunk',
    created,
    model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(call.includeUsage ? { usage: null } : {}),
  });
  const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
  const begin = (served: string) => {
    if (model) return;
    model = served;
    setHeaders(res, before);
    res.status(200).setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-cache');
    res.flushHeaders();
    send(chunk({ role: 'assistant', content: '', refusal: null }, null));
  };
  let result: CallResult;
  try {
    result = await gateway.complete({
      principal,
      transport: 'openai',
      request: call.input,
      signal,
      requestId,
      onText: (delta, served) => {
        begin(served);
        send(chunk({ content: delta }, null));
      },
    });
  } catch (err) {
    const ge = asGatewayError(err);
    if (!model) {
      await setBudgetHeadersFor(res, gateway, principal);
      renderError(res, ge);
    } else if (!res.writableEnded) {
      send({ error: openaiError(ge) });
      res.end();
    }
    return;
  }
  begin(result.model);
  send(chunk({}, finishReason(result, call.input)));
  if (call.includeUsage) send({ id: `chatcmpl-${requestId}`, object: 'chat.completion.chunk', created, model, choices: [], usage: usageOf(result) });
  res.write('data: [DONE]\n\n');
  res.end();
}

/** The router serving POST /v1/chat/completions behind the app's bearer authentication. */
export function openaiCompatRouter(gateway: Gateway, opts: CompatRouteOptions): Router {
  const router = Router();
  router.post('/v1/chat/completions', startRequest, authInApiShape(opts.requireAuth, renderError), opts.json, async (req, res) => {
    const requestId = res.locals.requestId as string;
    const created = Math.floor(Date.now() / 1000);
    let principal: Principal | undefined;
    try {
      principal = principalOf(req);
      const call = parseChatRequest(req.body, gateway);
      if (call.stream) {
        await streamCompletion(res, gateway, principal, call, requestId, created);
        return;
      }
      const result = await gateway.complete({ principal, transport: 'openai', request: call.input, signal: abortOnClose(res), requestId });
      sendCompletion(res, result, call.input, created);
    } catch (err) {
      await setBudgetHeadersFor(res, gateway, principal);
      if (!res.headersSent) renderError(res, asGatewayError(err));
    }
  });
  router.use('/v1/chat/completions', compatErrorHandler(renderError, opts.maxBodyBytes));
  return router;
}
