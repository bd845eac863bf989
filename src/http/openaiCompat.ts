/**
 * POST /v1/chat/completions in the OpenAI Chat Completions shape, so an application built on the
 * OpenAI SDK switches to tollgate by changing its base URL. This file is only the wire codec; the
 * route (compat.ts) runs the call through the same gateway as MCP. `model` may name a model or a
 * tier, and the response's `model` is the one that served.
 */
import type { Response } from 'express';
import { z } from 'zod';
import { PART_SEPARATOR, textArgument, type CompleteArgs } from '../call/request.js';
import { never, only, refuseUnhonoured, unset, type Neutral } from '../call/unhonoured.js';
import { GatewayError, type ErrorCode } from '../errors.js';
import type { CallResult } from '../gateway/gateway.js';
import { openaiRateLimitHeaders } from './rateLimitHeaders.js';
import { bearerToken, type CompatCall, type WireCodec } from './compat.js';

/** An issue message for a `type` tollgate does not pass on, naming it and what does go through (zod's own when there is none). */
export function notPassedOn(what: string, through: string) {
  return (issue: { input?: unknown }) => (issue.input === undefined ? undefined : `${what} of type ${JSON.stringify(issue.input)} are not supported by tollgate; only ${through} go through.`);
}

const textPart = z.looseObject({ type: z.literal('text', { error: notPassedOn('content parts', 'text parts') }), text: z.string() });
const chatMessage = z
  .looseObject({
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    content: z.union([z.string(), z.array(textPart)]).nullable().optional(),
    name: z.string().optional(),
  })
  .superRefine((m, ctx) => {
    // Only an assistant's message may be without content (OpenAI's rule): any other is refused as OpenAI refuses it.
    if (m.role === 'assistant') return;
    if (m.content === null || m.content === undefined) ctx.addIssue({ code: 'custom', path: ['content'], message: `a ${m.role} message needs content: a string or a list of parts` });
    else if (Array.isArray(m.content) && m.content.length === 0) ctx.addIssue({ code: 'custom', path: ['content'], message: 'an empty list of parts; give at least one' });
  });

/** OpenAI's `metadata`: a map of strings to strings (taken, not sent on). */
export const stringMap = z.record(z.string(), z.string());

const chatRequest = z.looseObject({
  model: z.string().min(1),
  messages: z.array(chatMessage).min(1),
  // Taken and not sent on, but of the types the API gives them.
  user: z.string().nullish(),
  metadata: stringMap.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullish(),
  n: z.literal(1).nullish(),
});

/**
 * Fields tollgate cannot honour, refused rather than silently dropped, each with the values that
 * change nothing (the API's defaults). Dropping any other value would change the answer (sampling,
 * log probabilities, a seed, reasoning effort, verbosity, web search, audio, moderation) or what it
 * costs or keeps (service tier, stored completions). `user`, `metadata`, `safety_identifier` and
 * `parallel_tool_calls` (there are no tools) change neither and are taken without being sent; so
 * are the prompt cache's hints (`prompt_cache_key`, `prompt_cache_retention`,
 * `prompt_cache_options`, a part's `prompt_cache_breakpoint`): they never change the answer, and
 * refusing them would save nothing.
 */
const UNSUPPORTED: Readonly<Record<string, Neutral>> = {
  tools: never,
  tool_choice: only('none'),
  functions: never,
  function_call: only('none'),
  audio: never,
  prediction: never,
  stop: never,
  response_format: (v) => (v as { type?: unknown }).type === 'text',
  logprobs: only(false),
  top_logprobs: only(0),
  top_p: only(1),
  frequency_penalty: only(0),
  presence_penalty: only(0),
  logit_bias: unset,
  seed: never,
  reasoning_effort: never,
  verbosity: never,
  web_search_options: never,
  modalities: (v) => Array.isArray(v) && v.every((m) => m === 'text'),
  moderation: never,
  service_tier: only('auto'),
  store: only(false),
};

/** Fields of a message that would be dropped on the way to the provider. */
const UNSUPPORTED_IN_MESSAGE: Readonly<Record<string, Neutral>> = { tool_calls: never, function_call: never, refusal: never, audio: never };

/** An INVALID_REQUEST naming the body field at fault, as OpenAI's `error.param` does. */
export function invalidRequest(message: string, param: string | null): GatewayError {
  return new GatewayError('INVALID_REQUEST', message, { param });
}

/**
 * The issue to report of a value matching none of a union's forms (a string or a list of parts):
 * inside the form the value has (a list whose part is of an unknown type names that part), or, when
 * it has none of them, the types expected. Zod's own says only "Invalid input".
 */
export function telling(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return issue;
  const ofType = (branch: z.core.$ZodIssue[]) => branch.length === 1 && branch[0]!.code === 'invalid_type' && branch[0]!.path.length === 0;
  const matched = issue.errors.find((branch) => branch.length > 0 && !ofType(branch));
  if (matched) {
    const inner = telling(matched[0]!);
    return { path: [...issue.path, ...inner.path], message: inner.message };
  }
  const expected = issue.errors.map((branch) => (branch[0] as z.core.$ZodIssueInvalidType).expected);
  return { path: issue.path, message: `Invalid input: expected ${expected.join(' or ')}` };
}

/**
 * Validates an OpenAI-style body against `schema` and refuses the fields tollgate cannot honour
 * (an empty list counts as absent: SDKs send `tools: []`). The first schema issue names the field.
 */
export function parseOpenAIBody<S extends z.ZodType>(schema: S, raw: unknown, unsupported: Readonly<Record<string, Neutral>>): z.infer<S> {
  const parsed = schema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = telling(parsed.error.issues[0]!);
    const param = issue.path.map(String).join('.') || null;
    throw invalidRequest(`Invalid request: ${param ?? '(body)'}: ${issue.message}`, param);
  }
  refuseUnhonoured(parsed.data as Record<string, unknown>, unsupported, '', invalidRequest);
  return parsed.data;
}

/** Validates a Chat Completions body and turns it into wire-neutral `complete` arguments. */
export function decodeChatRequest(raw: unknown): CompleteArgs {
  const body = parseOpenAIBody(chatRequest, raw, UNSUPPORTED);
  // Tool calls, a refusal or an audio answer in the history would be dropped on the way to the
  // provider, changing the conversation.
  body.messages.forEach((m, i) => refuseUnhonoured(m, UNSUPPORTED_IN_MESSAGE, `messages.${i}.`, invalidRequest));
  const text = (c: z.infer<typeof chatMessage>['content']) => (typeof c === 'string' ? c : (c ?? []).map((p) => p.text).join(PART_SEPARATOR));
  // A user or assistant message's parts stay parts (the call core joins them where a provider has none).
  const content = (c: z.infer<typeof chatMessage>['content']) => (Array.isArray(c) && c.length > 0 ? c.map((p) => ({ type: 'text' as const, text: p.text })) : text(c));
  // System and developer messages become one system prompt, kept as pieces (each message, each of its
  // parts) for content rules; the call core joins them with "\n".
  const system = body.messages.filter((m) => m.role === 'system' || m.role === 'developer').flatMap((m) => (Array.isArray(m.content) ? m.content.map((p) => p.text) : [text(m.content)]));
  const messages = body.messages.flatMap((m) => (m.role === 'user' || m.role === 'assistant' ? [{ role: m.role, content: content(m.content) }] : []));
  if (messages.length === 0) throw invalidRequest('Invalid request: messages: at least one user or assistant message is required.', 'messages');
  // OpenAI refuses both caps at once; two equal ones are one cap, two different ones leave the cap unknown.
  if (body.max_tokens != null && body.max_completion_tokens != null && body.max_tokens !== body.max_completion_tokens) {
    throw invalidRequest(`Invalid request: max_tokens: max_tokens (${body.max_tokens}) and max_completion_tokens (${body.max_completion_tokens}) differ; send one of them.`, 'max_tokens');
  }
  return {
    messages,
    system: textArgument(system),
    model: body.model,
    max_tokens: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    temperature: body.temperature ?? undefined,
  };
}

const ERROR_TYPES: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: 'authentication_error',
  AUTH_INVALID: 'authentication_error',
  FORBIDDEN: 'permission_error',
  POLICY_DENIED: 'permission_error',
  BUDGET_EXHAUSTED: 'insufficient_quota',
  RATE_LIMITED: 'rate_limit_exceeded',
  INVALID_REQUEST: 'invalid_request_error',
  UNKNOWN_MODEL: 'invalid_request_error',
  PAYLOAD_TOO_LARGE: 'invalid_request_error',
  NOT_FOUND: 'invalid_request_error',
};

/**
 * OpenAI's error object. The tollgate code leads the message and is `tollgate_code`; `code` is the
 * tollgate code too, except for a spent budget, which answers as OpenAI answers a spent account
 * (type and code `insufficient_quota`), the value OpenAI clients switch on.
 */
export function openaiError(err: GatewayError) {
  const param = typeof err.details.param === 'string' ? err.details.param : err.code === 'UNKNOWN_MODEL' ? 'model' : null;
  return {
    message: `${err.code}: ${err.message}`,
    type: ERROR_TYPES[err.code] ?? 'server_error',
    param,
    code: err.code === 'BUDGET_EXHAUSTED' ? 'insufficient_quota' : err.code,
    tollgate_code: err.code,
    details: err.details,
  };
}

/** The gateway's stop reason in OpenAI's words; a stop sequence is `stop` there, a refusal `content_filter`. */
const FINISH_REASONS = { end_turn: 'stop', max_tokens: 'length', stop_sequence: 'stop', refusal: 'content_filter' } as const;

function finishReason(result: CallResult): (typeof FINISH_REASONS)[keyof typeof FINISH_REASONS] {
  return FINISH_REASONS[result.stopReason];
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

/** The chunk object of a stream event (a text delta's is written by deltaChunkJson). */
export function chunk(call: CompatCall, model: string, delta: Record<string, unknown>, finish: string | null) {
  return {
    id: `chatcmpl-${call.requestId}`,
    object: 'chat.completion.chunk',
    created: call.created,
    model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(call.includeUsage ? { usage: null } : {}),
  };
}

/**
 * A text delta's chunk as JSON: the text JSON.stringify'd into a template of the rest, which is the
 * text `chunk(call, model, { content: text }, null)` serialises to (test/unit/openai-delta-chunk.test.ts
 * holds the two equal). The most frequent event of a stream: building and serialising the object
 * for each delta cost several times this (issue 21).
 */
export function deltaChunkJson(call: CompatCall, model: string, text: string): string {
  return `{"id":${JSON.stringify(`chatcmpl-${call.requestId}`)},"object":"chat.completion.chunk","created":${JSON.stringify(call.created)},"model":${JSON.stringify(model)},"choices":[{"index":0,"delta":{"content":${JSON.stringify(text)}},"logprobs":null,"finish_reason":null}]${call.includeUsage ? ',"usage":null' : ''}}`;
}

/** The Chat Completions wire codec. */
export const openaiCodec: WireCodec = {
  transport: 'openai',
  path: '/v1/chat/completions',
  credentialOf: bearerToken,
  options(body) {
    const b = body as { stream?: unknown; stream_options?: { include_usage?: unknown } } | null | undefined;
    return { stream: b?.stream === true, includeUsage: b?.stream_options?.include_usage === true };
  },
  decode: decodeChatRequest,
  // The cap's newer field when the caller sent it (decodeChatRequest takes it first).
  outputCapField: (body) => ((body as { max_completion_tokens?: unknown } | null | undefined)?.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens'),
  render(res: Response, result, call) {
    res.json({
      id: `chatcmpl-${call.requestId}`,
      object: 'chat.completion',
      created: call.created,
      model: result.model,
      choices: [{ index: 0, message: { role: 'assistant', content: result.text, refusal: null }, logprobs: null, finish_reason: finishReason(result) }],
      usage: usageOf(result),
    });
  },
  errorBody: (err) => ({ error: openaiError(err) }),
  rateLimitHeaders: openaiRateLimitHeaders,
  stream: {
    start: (send, model, call) => send(chunk(call, model, { role: 'assistant', content: '', refusal: null }, null)),
    delta: (send, text, model, call) => send(deltaChunkJson(call, model, text)),
    end(send, result, call) {
      send(chunk(call, result.model, {}, finishReason(result)));
      if (call.includeUsage) send({ id: `chatcmpl-${call.requestId}`, object: 'chat.completion.chunk', created: call.created, model: result.model, choices: [], usage: usageOf(result) });
      send('[DONE]');
    },
    error: (send, err) => send({ error: openaiError(err) }),
  },
};
