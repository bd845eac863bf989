/**
 * POST /v1/responses: a text subset of the OpenAI Responses API (the default of the Vercel AI SDK's
 * OpenAI provider), so an application on `client.responses.create` switches to tollgate by its
 * base URL. Text in (`input` as a string, or message items whose content is a string or
 * `input_text` / `output_text` parts; `instructions`), text out, streamed as the Responses
 * semantic events or not. This file is only the wire codec; the route (compat.ts) runs the call
 * through the same gateway as every other way in. `model` may name a model or a tier.
 */
import { z } from 'zod';
import { textArgument, type CompleteArgs } from '../call/request.js';
import { never, only, refuseUnhonoured, type Neutral } from '../call/unhonoured.js';
import type { CallResult } from '../gateway/gateway.js';
import { bearerToken, type CompatCall, type SseSend, type WireCodec } from './compat.js';
import { invalidRequest, notPassedOn, openaiError, parseOpenAIBody, stringMap } from './openaiCompat.js';
import { openaiRateLimitHeaders } from './rateLimitHeaders.js';

const textPart = z.looseObject({ type: z.enum(['input_text', 'output_text'], { error: notPassedOn('content parts', 'input_text and output_text parts') }), text: z.string() });
const messageItem = z.looseObject({
  type: z.literal('message', { error: notPassedOn('input items', 'message items') }).optional(),
  role: z.enum(['user', 'assistant', 'system', 'developer']),
  content: z.union([z.string(), z.array(textPart)]),
});

const responsesRequest = z.looseObject({
  model: z.string().min(1),
  input: z.union([z.string().min(1), z.array(messageItem).min(1)]),
  instructions: z.string().nullish(),
  max_output_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  stream: z.boolean().nullish(),
  text: z.looseObject({ format: z.looseObject({ type: z.literal('text') }).optional() }).nullish(),
  // Taken and not sent on, but of the types the API gives them.
  store: z.boolean().nullish(),
  user: z.string().nullish(),
  metadata: stringMap.nullish(),
});

/**
 * Fields tollgate cannot honour, refused rather than silently dropped, each with the values that
 * change nothing (the API's defaults). `store` is taken and answered `false`: nothing is stored.
 * The prompt cache's hints are taken and not sent, as on chat completions (openaiCompat.ts).
 */
const UNSUPPORTED: Readonly<Record<string, Neutral>> = {
  tools: never,
  tool_choice: only('none'),
  previous_response_id: never,
  conversation: never,
  prompt: never,
  background: never,
  reasoning: never,
  include: never,
  context_management: never,
  moderation: never,
  top_p: only(1),
  top_logprobs: only(0),
  truncation: only('disabled'),
  service_tier: only('auto'),
};

/** Fields of `text` besides its format: `verbosity` changes the answer. */
const UNSUPPORTED_IN_TEXT: Readonly<Record<string, Neutral>> = { verbosity: never };

/** Validates a Responses body and turns it into wire-neutral `complete` arguments. */
export function decodeResponsesRequest(raw: unknown): CompleteArgs {
  const body = parseOpenAIBody(responsesRequest, raw, UNSUPPORTED);
  if (body.text) refuseUnhonoured(body.text, UNSUPPORTED_IN_TEXT, 'text.', invalidRequest);
  // Parts of one message are separate pieces of text: kept as parts (the call core joins them on a
  // line break where a provider has none), so content rules read each seam between them.
  const pieces = (c: z.infer<typeof messageItem>['content']) => (typeof c === 'string' ? [c] : c.map((p) => p.text));
  const items = typeof body.input === 'string' ? [{ role: 'user' as const, content: body.input }] : body.input;
  const system = [...(body.instructions ? [body.instructions] : []), ...items.filter((m) => m.role === 'system' || m.role === 'developer').flatMap((m) => pieces(m.content))];
  const messages = items.flatMap((m) => (m.role === 'user' || m.role === 'assistant' ? [{ role: m.role, content: textArgument(pieces(m.content)) ?? '' }] : []));
  if (messages.length === 0) throw invalidRequest('Invalid request: input: at least one user or assistant message is required.', 'input');
  return {
    messages,
    system: textArgument(system),
    model: body.model,
    max_tokens: body.max_output_tokens ?? undefined,
    temperature: body.temperature ?? undefined,
  };
}

/** Cut at the output cap, as the provider reported it (its finish reason, mapped to the gateway's stop reason). */
/**
 * Why an answer is incomplete, as the Responses API says it: cut at the output cap
 * (`max_output_tokens`), or stopped or withheld by the provider's safety system (`content_filter`,
 * as Chat Completions' finish_reason says it); undefined for a finished answer.
 */
const incompleteReason = (result: CallResult): 'max_output_tokens' | 'content_filter' | undefined =>
  result.stopReason === 'max_tokens' ? 'max_output_tokens' : result.stopReason === 'refusal' ? 'content_filter' : undefined;
const cut = (result: CallResult, _call: CompatCall) => incompleteReason(result) !== undefined;

function usageOf(result: CallResult) {
  const { inputTokens, outputTokens, cachedInputTokens } = result.usage;
  return {
    input_tokens: inputTokens,
    input_tokens_details: { cached_tokens: cachedInputTokens ?? 0 },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: inputTokens + outputTokens,
  };
}

const outputText = (text: string) => ({ type: 'output_text', text, annotations: [], logprobs: [] });

function message(call: CompatCall, status: 'in_progress' | 'completed' | 'incomplete', text?: string) {
  return { type: 'message', id: `msg_${call.requestId}`, status, role: 'assistant', content: text === undefined ? [] : [outputText(text)] };
}

/** The Response object: in progress (no output yet) or finished with `result`. */
function response(call: CompatCall, model: string, result?: CallResult) {
  const incomplete = result !== undefined && cut(result, call);
  return {
    id: `resp_${call.requestId}`,
    object: 'response',
    created_at: call.created,
    status: result === undefined ? 'in_progress' : incomplete ? 'incomplete' : 'completed',
    error: null,
    incomplete_details: incomplete ? { reason: incompleteReason(result) } : null,
    instructions: null,
    max_output_tokens: call.maxTokens,
    model,
    output: result === undefined ? [] : [message(call, incomplete ? 'incomplete' : 'completed', result.text)],
    parallel_tool_calls: false,
    store: false,
    temperature: null,
    text: { format: { type: 'text' } },
    tool_choice: 'none',
    tools: [],
    top_p: null,
    truncation: 'disabled',
    usage: result === undefined ? null : usageOf(result),
    metadata: {},
  };
}

/** Each stream's next sequence number (every Responses event carries one, from 0). */
const sequences = new WeakMap<CompatCall, number>();

/** Sends one Responses event: its type on the `event:` line and in the data, with the sequence number. */
function emit(send: SseSend, call: CompatCall, type: string, fields: Record<string, unknown>): void {
  const seq = sequences.get(call) ?? 0;
  sequences.set(call, seq + 1);
  send({ type, ...fields, sequence_number: seq }, type);
}

/**
 * The fields that locate every text event (the one message item, its one text part), then the
 * event's own. Written out rather than spread: a spread given more fields costs about 1 µs on
 * Node 20, once for every streamed delta (see lineAt in src/quota/store.ts).
 */
function at<F extends Record<string, unknown>>(call: CompatCall, fields: F): { item_id: string; output_index: 0; content_index: 0 } & F {
  const located: Record<string, unknown> = { item_id: `msg_${call.requestId}`, output_index: 0, content_index: 0 };
  for (const key in fields) located[key] = fields[key];
  return located as { item_id: string; output_index: 0; content_index: 0 } & F;
}

/** The Responses wire codec (text only). */
export const responsesCodec: WireCodec = {
  transport: 'openai',
  path: '/v1/responses',
  credentialOf: bearerToken,
  options: (body) => ({ stream: (body as { stream?: unknown } | null | undefined)?.stream === true, includeUsage: false }),
  decode: decodeResponsesRequest,
  outputCapField: () => 'max_output_tokens',
  render(res, result, call) {
    res.json(response(call, result.model, result));
  },
  errorBody: (err) => ({ error: openaiError(err) }),
  rateLimitHeaders: openaiRateLimitHeaders,
  stream: {
    start(send, model, call) {
      emit(send, call, 'response.created', { response: response(call, model) });
      emit(send, call, 'response.in_progress', { response: response(call, model) });
      emit(send, call, 'response.output_item.added', { output_index: 0, item: message(call, 'in_progress') });
      emit(send, call, 'response.content_part.added', at(call, { part: outputText('') }));
    },
    delta: (send, text, _model, call) => emit(send, call, 'response.output_text.delta', at(call, { delta: text, logprobs: [] })),
    end(send, result, call) {
      const status = cut(result, call) ? 'incomplete' : 'completed';
      emit(send, call, 'response.output_text.done', at(call, { text: result.text, logprobs: [] }));
      emit(send, call, 'response.content_part.done', at(call, { part: outputText(result.text) }));
      emit(send, call, 'response.output_item.done', { output_index: 0, item: message(call, status, result.text) });
      emit(send, call, `response.${status}`, { response: response(call, result.model, result) });
    },
    // The documented event has `code`, `message` and `param` at the top; OpenAI sends them in an
    // `error` object too, which is what the openai SDKs read: without it `responses.stream()` ends
    // its `finalResponse()` with the bare event instead of an APIError.
    error: (send, err, call) => {
      const e = openaiError(err);
      emit(send, call, 'error', { code: e.code, message: e.message, param: e.param, error: { type: e.type, code: e.code, message: e.message, param: e.param } });
    },
  },
};
