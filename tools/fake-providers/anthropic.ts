/**
 * A local Anthropic Messages API (`POST /v1/messages`) that the real @anthropic-ai/sdk talks to over
 * HTTP: the same JSON and SSE shapes, error bodies and headers as the real service, with the
 * deterministic token rules of types.ts so tests can assert usage exactly.
 */
import type { ServerResponse } from 'node:http';
import { bearerToken, openEventStream, sendCutJson, sendJson, sendJsonAnswer, sendMalformedJson, startFakeHttpServer, writeFlushed, type FakeCall } from './http.js';
import { billedInputTokens, type FakeBilling } from './billing.js';
import { countWords, replyWords, type FakeProviderServer } from './types.js';

export interface FakeAnthropicOptions {
  /** The only key accepted; when unset, any non-empty key is. */
  apiKey?: string;
  /** Input tokens to report as read from the prompt cache (capped at the prompt's tokens). */
  cacheReadTokens?: number;
  /** How input tokens are billed and counted: whitespace words (default) or a real BPE tokenizer (billing.ts). */
  billing?: FakeBilling;
}

/** Anthropic's error `type` for each HTTP status it documents. */
export function anthropicErrorType(status: number): string {
  const types: Record<number, string> = {
    400: 'invalid_request_error',
    401: 'authentication_error',
    402: 'billing_error',
    403: 'permission_error',
    404: 'not_found_error',
    413: 'request_too_large',
    429: 'rate_limit_error',
    504: 'timeout_error',
    529: 'overloaded_error',
  };
  return types[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

let sequence = 0;

function sendError(res: ServerResponse, status: number, message: string, requestId: string): void {
  sendJson(res, status, { type: 'error', error: { type: anthropicErrorType(status), message }, request_id: requestId }, { 'request-id': requestId });
}

/** Text of a string or of an array of content blocks (only text blocks count). */
function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((b: unknown) => (typeof b === 'object' && b !== null && (b as { type?: unknown }).type === 'text' ? String((b as { text?: unknown }).text ?? '') : ''))
    .join(' ');
}

interface MessagesBody {
  model: string;
  max_tokens: number;
  messages: { role: string; content: unknown }[];
  system?: unknown;
  stream?: boolean;
}

/** The API version that stopped accepting sampling parameters; older versions still take them. */
const NO_SAMPLING_SINCE = '2026-10-21';

function validate(body: unknown, version: string): MessagesBody | string {
  if (typeof body !== 'object' || body === null) return 'request body must be a JSON object';
  const b = body as Record<string, unknown>;
  if (version >= NO_SAMPLING_SINCE) {
    for (const field of ['temperature', 'top_p', 'top_k']) if (field in b) return `${field}: Extra inputs are not permitted`;
  }
  if (typeof b.model !== 'string' || b.model === '') return 'model: Field required';
  if (typeof b.max_tokens !== 'number' || !Number.isInteger(b.max_tokens) || b.max_tokens < 1) return 'max_tokens: Field required';
  if (!Array.isArray(b.messages) || b.messages.length === 0) return 'messages: at least one message is required';
  return b as unknown as MessagesBody;
}

/** A count_tokens body: the Messages fields that are input (model, messages, system), no max_tokens needed. */
function validateCount(body: unknown): Pick<MessagesBody, 'model' | 'messages' | 'system'> | string {
  if (typeof body !== 'object' || body === null) return 'request body must be a JSON object';
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model === '') return 'model: Field required';
  if (!Array.isArray(b.messages) || b.messages.length === 0) return 'messages: at least one message is required';
  return b as unknown as MessagesBody;
}

/**
 * Starts the fake on 127.0.0.1 (a free port); its `url` is the SDK's `baseURL` (no /v1). It also
 * answers `POST /v1/messages/count_tokens` with `{ "input_tokens": n }`, n being what
 * `POST /v1/messages` bills for the same input.
 */
export async function startFakeAnthropic(opts: FakeAnthropicOptions = {}): Promise<FakeProviderServer> {
  const base = await startFakeHttpServer(handle);

  /** Input tokens of a request's system prompt and messages, by the billing rule. */
  function inputOf(b: Pick<MessagesBody, 'messages' | 'system'>): Promise<number> {
    if (opts.billing !== 'bpe') return Promise.resolve(b.messages.reduce((sum, m) => sum + countWords(textOf(m.content)), countWords(textOf(b.system))));
    const system = b.system === undefined ? undefined : textOf(b.system);
    return billedInputTokens('anthropic', 'bpe', { system, messages: b.messages.map((m) => ({ content: textOf(m.content) })) });
  }

  async function handle(call: FakeCall): Promise<void> {
    const { req, res, fault } = call;
    const n = ++sequence;
    const requestId = `req_fake${n}`;
    const counting = call.path === '/v1/messages/count_tokens';
    if (req.method !== 'POST' || (call.path !== '/v1/messages' && !counting)) return sendError(res, 404, `${req.method} ${call.path} not found`, requestId);
    // SDK 1.x sends `Authorization: Bearer`, 0.x and curl users `x-api-key`; with both, x-api-key wins.
    const header = req.headers['x-api-key'];
    const key = (Array.isArray(header) ? header[0] : header) ?? bearerToken(req);
    if (!key || (opts.apiKey !== undefined && key !== opts.apiKey)) return sendError(res, 401, 'invalid x-api-key', requestId);
    const version = req.headers['anthropic-version'];
    if (typeof version !== 'string' || version === '') return sendError(res, 400, 'anthropic-version: header is required', requestId);
    if (fault?.kind === 'status') return sendError(res, fault.status, `fake fault: HTTP ${fault.status}`, requestId);
    if (counting) {
      const toCount = validateCount(call.record.body);
      if (typeof toCount === 'string') return sendError(res, 400, toCount, requestId);
      return sendJson(res, 200, { input_tokens: await inputOf(toCount) }, { 'request-id': requestId });
    }
    const body = validate(call.record.body, version);
    if (typeof body === 'string') return sendError(res, 400, body, requestId);

    const lastUser = [...body.messages].reverse().find((m) => m.role === 'user');
    const fullLength = replyWords('anthropic', textOf(lastUser?.content), Number.MAX_SAFE_INTEGER).length;
    const stop = fault?.kind === 'stop' ? fault : undefined;
    const words = replyWords('anthropic', textOf(lastUser?.content), Math.min(body.max_tokens, stop?.afterWords ?? Number.MAX_SAFE_INTEGER));
    const stopReason = stop ? stop.reason : fullLength > body.max_tokens ? 'max_tokens' : 'end_turn';
    const stopSequence = stop?.reason === 'stop_sequence' ? (stop.sequence ?? '###') : null;
    const promptWords = await inputOf(body);
    const cacheRead = Math.min(opts.cacheReadTokens ?? 0, promptWords);
    const leftOut = fault?.kind === 'leaveOutUsage' ? fault.what : undefined;
    const usageIn = { ...(leftOut ? {} : { input_tokens: promptWords - cacheRead }), cache_creation_input_tokens: 0, cache_read_input_tokens: cacheRead };
    /** `usage` as sent: none when the fault leaves it all out. */
    const withUsage = (usage: object): { usage?: object } => (leftOut === 'all' ? {} : { usage });
    const id = `msg_fake${String(n).padStart(6, '0')}`;
    const headers = { 'request-id': requestId };

    if (!body.stream) {
      if (fault?.kind === 'malformed') return sendMalformedJson(res, headers);
      if (fault?.kind === 'misshapen') return sendJson(res, 200, { type: 'message', content: words.join('') }, headers);
      const answer = {
        id,
        type: 'message',
        role: 'assistant',
        model: body.model,
        content: [{ type: 'text', text: words.join('') }],
        stop_reason: stopReason,
        stop_sequence: stopSequence,
        ...withUsage({ ...usageIn, output_tokens: words.length, service_tier: 'standard' }),
      };
      if (fault?.kind === 'cut') return sendCutJson(call, answer, headers);
      return sendJsonAnswer(call, answer, headers);
    }

    openEventStream(res, headers);
    const frame = (event: string, data: unknown): Promise<boolean> => writeFlushed(res, `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    const message = { id, type: 'message', role: 'assistant', model: body.model, content: [], stop_reason: null, stop_sequence: null };
    if (fault?.kind !== 'noMessageStart') await frame('message_start', { type: 'message_start', message: { ...message, ...withUsage({ ...usageIn, output_tokens: 1, service_tier: 'standard' }) } });
    await frame('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    await frame('ping', { type: 'ping' });
    if (fault?.kind === 'malformed') {
      await writeFlushed(res, 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":\n\n');
      res.end();
      return;
    }
    const sent = fault?.kind === 'cut' ? words.slice(0, fault.afterWords) : words;
    for (const text of sent) {
      if (!(await call.wordPause()) || !(await frame('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }))) return;
    }
    if (fault?.kind === 'cut') return call.cut();
    await frame('content_block_stop', { type: 'content_block_stop', index: 0 });
    await frame('message_delta', {
      type: 'message_delta',
      delta: { stop_reason: stopReason, stop_sequence: stopSequence },
      ...withUsage({ output_tokens: words.length }),
    });
    await frame('message_stop', { type: 'message_stop' });
    if (await call.endPause()) res.end();
  }

  return {
    kind: 'anthropic',
    url: base.origin,
    port: base.port,
    requests: base.requests,
    failNext: (fault, times) => base.failNext(fault, times),
    setLatency: (ms) => base.setLatency(ms),
    setWordDelay: (ms) => base.setWordDelay(ms),
    setEndDelay: (ms) => base.setEndDelay(ms),
    counts: base.counts,
    inFlight: base.inFlight,
    reset: () => base.reset(),
    close: () => base.close(),
  };
}
