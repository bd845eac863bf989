/**
 * A local OpenAI Chat Completions API (`POST /v1/chat/completions`) that the real openai SDK talks
 * to over HTTP: the same JSON and SSE chunk shapes, error bodies and headers as the real service,
 * with the deterministic token rules of types.ts. It also stands in for OpenAI-compatible servers
 * (vLLM, Ollama), which speak the same wire format.
 */
import type { ServerResponse } from 'node:http';
import { bearerToken, openEventStream, sendCutJson, sendJson, sendJsonAnswer, sendMalformedJson, startFakeHttpServer, writeFlushed, type FakeCall } from './http.js';
import { billedInputTokens, type FakeBilling } from './billing.js';
import { countWords, replyWords, type FakeProviderServer } from './types.js';

export interface FakeOpenAIOptions {
  /** The only key accepted; when unset, any non-empty key is. */
  apiKey?: string;
  /** Prompt tokens to report as cached (`prompt_tokens_details.cached_tokens`), capped at the prompt. */
  cachedTokens?: number;
  /** How prompt tokens are billed: whitespace words (default) or o200k_base as OpenAI bills (billing.ts). */
  billing?: FakeBilling;
}

/** OpenAI's error `type` and `code` for a status. */
export function openAIError(status: number): { type: string; code: string | null } {
  if (status === 401) return { type: 'invalid_request_error', code: 'invalid_api_key' };
  if (status === 403) return { type: 'invalid_request_error', code: 'unsupported_country_region_territory' };
  if (status === 404) return { type: 'invalid_request_error', code: 'model_not_found' };
  if (status === 429) return { type: 'requests', code: 'rate_limit_exceeded' };
  if (status >= 500) return { type: 'server_error', code: null };
  return { type: 'invalid_request_error', code: null };
}

let sequence = 0;

function sendError(res: ServerResponse, status: number, message: string, requestId: string, param: string | null = null): void {
  sendJson(res, status, { error: { message, ...openAIError(status), param } }, { 'x-request-id': requestId });
}

/** Text of a string or of an array of content parts (only text parts count). */
function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((p: unknown) => (typeof p === 'object' && p !== null && (p as { type?: unknown }).type === 'text' ? String((p as { text?: unknown }).text ?? '') : ''))
    .join(' ');
}

interface ChatBody {
  model: string;
  messages: { role: string; content: unknown }[];
  max_tokens?: number;
  max_completion_tokens?: number;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
}

function validate(body: unknown): ChatBody | { message: string; param: string } {
  if (typeof body !== 'object' || body === null) return { message: 'We could not parse the JSON body of your request.', param: 'body' };
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model === '') return { message: 'you must provide a model parameter', param: 'model' };
  if (!Array.isArray(b.messages) || b.messages.length === 0) return { message: "Missing required parameter: 'messages'.", param: 'messages' };
  for (const field of ['max_tokens', 'max_completion_tokens'] as const) {
    const v = b[field];
    if (v !== undefined && v !== null && (typeof v !== 'number' || !Number.isInteger(v) || v < 1)) {
      return { message: `Invalid '${field}': expected an integer greater than or equal to 1.`, param: field };
    }
  }
  return b as unknown as ChatBody;
}

/** Starts the fake on 127.0.0.1 (a free port); its `url` ends in /v1, as the SDK's `baseURL` must. */
export async function startFakeOpenAI(opts: FakeOpenAIOptions = {}): Promise<FakeProviderServer> {
  const base = await startFakeHttpServer(handle);

  async function handle(call: FakeCall): Promise<void> {
    const { req, res, fault } = call;
    const n = ++sequence;
    const requestId = `req_fake${n}`;
    if (req.method !== 'POST' || call.path !== '/v1/chat/completions') return sendError(res, 404, `Invalid URL (${req.method} ${call.path})`, requestId);
    const key = bearerToken(req);
    if (!key || (opts.apiKey !== undefined && key !== opts.apiKey)) return sendError(res, 401, 'Incorrect API key provided.', requestId);
    if (fault?.kind === 'status') return sendError(res, fault.status, `fake fault: HTTP ${fault.status}`, requestId);
    const body = validate(call.record.body);
    if ('param' in body) return sendError(res, 400, body.message, requestId, body.param);

    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? Number.MAX_SAFE_INTEGER;
    const lastUser = [...body.messages].reverse().find((m) => m.role === 'user');
    const fullLength = replyWords('openai', textOf(lastUser?.content), Number.MAX_SAFE_INTEGER).length;
    const stop = fault?.kind === 'stop' ? fault : undefined;
    const words = replyWords('openai', textOf(lastUser?.content), Math.min(maxTokens, stop?.afterWords ?? Number.MAX_SAFE_INTEGER));
    // OpenAI reports a stop sequence as a plain `stop`; filtered output as `content_filter`.
    const finishReason = stop ? (stop.reason === 'refusal' ? 'content_filter' : 'stop') : fullLength > maxTokens ? 'length' : 'stop';
    // System and developer messages travel in `messages`, so every message is prompt.
    const promptTokens =
      opts.billing === 'bpe'
        ? await billedInputTokens('openai', 'bpe', { messages: body.messages.map((m) => ({ content: textOf(m.content) })) })
        : body.messages.reduce((sum, m) => sum + countWords(textOf(m.content)), 0);
    const leftOut = fault?.kind === 'leaveOutUsage' ? fault.what : undefined;
    const usage = {
      ...(leftOut ? {} : { prompt_tokens: promptTokens }),
      completion_tokens: words.length,
      total_tokens: promptTokens + words.length,
      prompt_tokens_details: { cached_tokens: Math.min(opts.cachedTokens ?? 0, promptTokens), audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
    const id = `chatcmpl-fake${String(n).padStart(6, '0')}`;
    const created = Math.floor(Date.now() / 1000);
    const headers = { 'x-request-id': requestId, 'openai-processing-ms': '1' };

    if (!body.stream) {
      if (fault?.kind === 'malformed') return sendMalformedJson(res, headers);
      if (fault?.kind === 'misshapen') return sendJson(res, 200, { choices: 'nope' }, headers);
      const answer = {
        id,
        object: 'chat.completion',
        created,
        model: body.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: words.join(''), refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: finishReason,
          },
        ],
        ...(leftOut === 'all' ? {} : { usage }),
        service_tier: 'default',
        system_fingerprint: null,
      };
      if (fault?.kind === 'cut') return sendCutJson(call, answer, headers);
      return sendJsonAnswer(call, answer, headers);
    }

    const includeUsage = body.stream_options?.include_usage === true;
    openEventStream(res, headers);
    // With include_usage every chunk carries `usage: null` until the last one, as OpenAI sends it.
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): Promise<boolean> =>
      writeFlushed(
        res,
        `data: ${JSON.stringify({
          id,
          object: 'chat.completion.chunk',
          created,
          model: body.model,
          service_tier: 'default',
          system_fingerprint: null,
          choices,
          ...(includeUsage ? { usage: null } : {}),
          ...extra,
        })}\n\n`,
      );
    const delta = (d: Record<string, unknown>, finish: string | null = null): unknown => ({ index: 0, delta: d, logprobs: null, finish_reason: finish });

    const early = fault?.kind === 'cut' && fault.earlyUsage ? { usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } } : {};
    await chunk([delta({ role: 'assistant', content: '', refusal: null })], early);
    if (fault?.kind === 'malformed') {
      await writeFlushed(res, 'data: {"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{\n\n');
      res.end();
      return;
    }
    const sent = fault?.kind === 'cut' ? words.slice(0, fault.afterWords) : words;
    for (const content of sent) {
      if (!(await call.wordPause()) || !(await chunk([delta({ content })]))) return;
    }
    if (fault?.kind === 'cut') return call.cut();
    await chunk([delta({}, finishReason)]);
    if (includeUsage && leftOut !== 'all') await chunk([], { usage });
    await writeFlushed(res, 'data: [DONE]\n\n');
    if (await call.endPause()) res.end();
  }

  return {
    kind: 'openai',
    url: `${base.origin}/v1`,
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
