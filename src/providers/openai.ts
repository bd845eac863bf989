/**
 * The OpenAI adapter: Chat Completions through the official openai SDK. It also serves
 * OpenAI-compatible servers (vLLM, Ollama, LM Studio) through `baseUrl`, which speak the same wire
 * format. Usage comes from the provider; only when a server reports none (a cut stream, a server
 * ignoring `stream_options`) is it estimated, and the estimate rule is written down below. Input
 * tokens are counted before a call with the model's own tokenizer (estimate.ts) when its model id
 * names a known OpenAI encoding.
 */
import OpenAI, { type ClientOptions as OpenAIClientOptions } from 'openai';
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from './config.js';
import { assertEgress, providerEndpoint } from './egress.js';
import { afterAnswer, cancelledError, upstreamError } from './errors.js';
import { ProxyAgent } from 'undici';
import { headGuard, idleGuard, sdkTransport } from './fetchSdk.js';
import { directChatClient, sdkChatClient, type ChatClient } from './openaiWire.js';
import { atLeastOutput, boundOpenAIInput, countOpenAIInput, FRAMING, loadOpenAIVocabularies, outputTokenBound, unreportedInputTokens, utf8Bytes } from './estimate.js';
import type { CompletionRequest, CompletionResult, Provider, StopReason, TextListener, Usage, ProviderBuildOptions } from './provider.js';
import { withoutKey } from '../secretPieces.js';

export type OpenAIConfig = Extract<ProviderConfig, { kind: 'openai' }>;

type ChatParams = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming;

/**
 * The output cap fields to send. `max_completion_tokens` is what OpenAI documents today: `max_tokens`
 * is deprecated there and refused by reasoning models (o-series, gpt-5), which also count hidden
 * reasoning tokens against the newer field. Some OpenAI-compatible servers (Ollama, LM Studio) still
 * read only `max_tokens` and would silently ignore the cap, letting a call run past the budget
 * reserved for it, so for a base URL that is not OpenAI's own the same value goes in both fields.
 */
export function outputCapFields(baseUrl: string, maxTokens: number): { max_completion_tokens: number; max_tokens?: number } {
  const host = new URL(baseUrl).hostname;
  const isOpenAI = host === 'api.openai.com' || host.endsWith('.openai.azure.com');
  return isOpenAI ? { max_completion_tokens: maxTokens } : { max_completion_tokens: maxTokens, max_tokens: maxTokens };
}

/**
 * OpenAI's finish reason in the gateway's words: `length` is a cut at the cap, `content_filter` a
 * refusal, anything else (`stop`, a tool-call turn never asked for) a finished answer. OpenAI
 * reports a stop sequence as `stop`, so an OpenAI answer is never `stop_sequence`. A message that
 * carries a refusal is a refusal whatever the finish reason.
 */
function stopReasonOf(finish: string | null | undefined, refusal?: string | null): StopReason | undefined {
  if (refusal) return 'refusal';
  if (finish === undefined || finish === null) return undefined;
  if (finish === 'length') return 'max_tokens';
  if (finish === 'content_filter') return 'refusal';
  return 'end_turn';
}

function usageOf(u: OpenAI.CompletionUsage): Usage {
  const usage: Usage = { inputTokens: u.prompt_tokens, outputTokens: u.completion_tokens };
  const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
  // OpenAI's prompt_tokens already include the cached ones, as Usage wants.
  if (cached > 0) usage.cachedInputTokens = cached;
  return usage;
}

/**
 * An OpenAI (or OpenAI-compatible, via `baseUrl`) provider for one policy entry. SDK retries follow
 * `maxRetries`; `opts.proxy` sends every call through a corporate proxy and `opts.egressAllow` holds
 * every request to the policy's allowlist.
 */
export function createOpenAIProvider(name: string, config: OpenAIConfig, opts: ProviderBuildOptions = {}): Provider {
  // The endpoint the egress allowlist checked at policy load (always defined for a network kind).
  const baseUrl = providerEndpoint(config)!;
  const sdk = new OpenAI({
    apiKey: config.apiKey,
    // Explicit values so OPENAI_BASE_URL / OPENAI_ORG_ID / OPENAI_ADMIN_KEY in the environment
    // cannot redirect or re-attribute a call the policy configured.
    baseURL: baseUrl,
    organization: config.organization ?? null,
    project: null,
    adminAPIKey: null,
    timeout: config.timeoutMs,
    maxRetries: config.maxRetries,
    // Only the `sdk` client sends through the SDK's fetch; the direct one takes its URL and headers.
    ...(config.client === 'sdk' ? (sdkTransport(name, opts) as Pick<OpenAIClientOptions, 'fetch' | 'fetchOptions'>) : {}),
  });
  const chat: ChatClient =
    config.client === 'sdk'
      ? sdkChatClient(sdk)
      : directChatClient({
          sdk,
          timeoutMs: config.timeoutMs,
          maxRetries: config.maxRetries,
          dispatcher: opts.proxy ? new ProxyAgent(opts.proxy) : undefined,
          egress: opts.egressAllow ? { provider: name, allow: opts.egressAllow } : undefined,
        });

  function params(req: CompletionRequest): ChatParams {
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [];
    if (req.system !== undefined) messages.push({ role: 'system', content: req.system });
    // Parts stay parts: Chat Completions takes text parts for user and assistant messages alike.
    for (const m of req.messages) {
      const content = m.parts ? m.parts.map((text) => ({ type: 'text' as const, text })) : m.content;
      messages.push(m.role === 'user' ? { role: 'user', content } : { role: 'assistant', content });
    }
    const p: ChatParams = { model: req.model, messages, ...outputCapFields(baseUrl, req.maxTokens) };
    if (req.temperature !== undefined) p.temperature = req.temperature;
    return p;
  }

  function redact(text: string): string {
    // Whole, and in pieces: an upstream's 401 may quote the key cut short.
    return withoutKey(text, config.apiKey, '[redacted]');
  }

  function toGatewayError(err: unknown, signal: AbortSignal | undefined, usage?: Usage): GatewayError {
    if (err instanceof GatewayError) return err;
    // The egress guard throws inside fetch; the SDK hands that on as the cause of a connection error.
    if (err instanceof Error && err.cause instanceof GatewayError) return err.cause;
    if (signal?.aborted) return cancelledError(name, usage);
    if (err instanceof OpenAI.APIConnectionTimeoutError) {
      return upstreamError({ provider: name, network: true, type: 'timeout', message: `no answer within ${config.timeoutMs} ms`, usage }, err);
    }
    if (err instanceof OpenAI.APIConnectionError || err instanceof OpenAI.APIUserAbortError) {
      return upstreamError({ provider: name, network: true, type: 'connection_error', message: redact(err.message), usage }, err);
    }
    if (err instanceof OpenAI.APIError) {
      const body = err.error as { message?: unknown } | undefined;
      const message = redact(typeof body?.message === 'string' ? body.message : err.message);
      const type = err.type ?? err.code ?? undefined;
      // An `error` object inside a 200 stream has no status: treat it as the upstream failing midway.
      if (err.status === undefined) return upstreamError({ provider: name, network: true, type: type ?? 'stream_error', message, usage }, err);
      return upstreamError({ provider: name, status: err.status, type, message, usage }, err);
    }
    if (err instanceof SyntaxError) {
      return upstreamError({ provider: name, network: true, type: 'malformed_response', message: 'the upstream answer is not valid JSON', usage }, err);
    }
    // undici reports a connection reset mid-body as a bare TypeError("terminated").
    if (err instanceof TypeError && err.message === 'terminated') {
      return upstreamError({ provider: name, network: true, type: 'connection_lost', message: 'the connection closed mid-answer', usage }, err);
    }
    const what = err instanceof Error ? redact(err.message) : 'unknown failure';
    return upstreamError({ provider: name, network: true, type: 'unexpected_response', message: what, usage }, err);
  }

  /** Fails fast, before the SDK and its retries, when the endpoint itself is off the allowlist. */
  function checkEgress(): void {
    if (opts.egressAllow) assertEgress(name, baseUrl, opts.egressAllow);
  }

  /** An answer whose head arrived and whose body did not within timeoutMs. */
  function bodyTimeout(err: unknown): GatewayError {
    return upstreamError({ provider: name, network: true, type: 'timeout', message: `the answer's body did not arrive within ${config.timeoutMs} ms` }, err);
  }

  // OpenAI models are counted locally: a bound from their vocabulary on every call unless the policy says otherwise.
  const counting = config.countTokens ?? 'always';

  return {
    name,
    kind: 'openai',
    baseUrl,

    ...(counting !== false ? { countTokens: (req: CompletionRequest) => countOpenAIInput(req, req.model), prepare: loadOpenAIVocabularies } : {}),
    ...(counting === 'always'
      ? {
          async estimateInput(req: CompletionRequest) {
            const tokens = await boundOpenAIInput(req, req.model);
            return tokens === undefined ? undefined : { tokens, exact: false };
          },
        }
      : {}),

    async complete(req) {
      if (req.signal?.aborted) throw cancelledError(name);
      checkEgress();
      // A caller who leaves aborts the request until the answer's head arrives; after it, the body is read anyway.
      const upstream = headGuard(req.signal, config.timeoutMs);
      let completion: OpenAI.Chat.ChatCompletion;
      try {
        completion = await chat.complete(params(req), upstream.signal, upstream.answered);
      } catch (err) {
        if (!(err instanceof GatewayError) && req.signal?.aborted) throw cancelledError(name, undefined, upstream.wasAnswered);
        const failure = !(err instanceof GatewayError) && upstream.signal.aborted ? bodyTimeout(err) : toGatewayError(err, undefined);
        // After the head the answer had been generated whole: the provider bills it (dispatch charges its bound).
        throw upstream.wasAnswered ? afterAnswer(failure) : failure;
      } finally {
        upstream.stop();
      }
      // The SDK returns whatever parsed; a proxy or a look-alike server may send another shape.
      const choice = typeof completion === 'object' && completion !== null && Array.isArray(completion.choices) ? completion.choices[0] : undefined;
      if (!choice || typeof choice.message !== 'object') {
        throw upstreamError({ provider: name, network: true, type: 'malformed_response', message: 'the answer is not a chat completion', answered: true });
      }
      // A refusal comes as `refusal` with no content: its text is the answer.
      const text = choice.message.content ?? choice.message.refusal ?? '';
      return {
        text,
        model: completion.model,
        usage: completion.usage
          ? usageOf(completion.usage)
          : // Without usage the output is bounded like the input: at most one token per UTF-8 byte.
            { inputTokens: unreportedInputTokens(req, FRAMING.openai), outputTokens: Math.max(1, outputTokenBound(text, req.maxTokens)) },
        stopReason: stopReasonOf(choice.finish_reason, choice.message.refusal),
      };
    },

    async stream(req, onText: TextListener): Promise<CompletionResult> {
      if (req.signal?.aborted) throw cancelledError(name);
      checkEgress();
      let model = req.model;
      let text = '';
      /** UTF-8 bytes of deltas that came after an abort: generated, though they reached no one. */
      let unsentBytes = 0;
      let finish: string | null | undefined;
      let reported: Usage | undefined;
      let started = false;
      let listenerError: unknown;
      const idle = idleGuard(config.timeoutMs, req.signal);
      let refused = false;
      // Without a usage chunk (a server that ignores include_usage, a stream cut before its end),
      // input is bounded from the prompt and output like a plain answer's: at most one token per
      // UTF-8 byte of what arrived, and at most max_tokens (a delta may carry many tokens).
      // A figure that came before the finish (a look-alike server's early usage) is not the last word
      // on the output: the text that arrived is charged at least its bound.
      let reportedFinal = false;
      const consumed = (): Usage => {
        const bound = outputTokenBound(text, req.maxTokens, unsentBytes);
        if (!reported) return { inputTokens: unreportedInputTokens(req, FRAMING.openai), outputTokens: bound };
        return reportedFinal ? reported : atLeastOutput(reported, bound);
      };
      const stalled = (): GatewayError =>
        upstreamError({ provider: name, network: true, type: 'timeout', message: `no stream chunk within ${config.timeoutMs} ms`, usage: consumed() });

      try {
        // The stream fields are added to params' own object, not spread onto a copy (about 1.6 µs a
        // call on Node 20: see lineAt in src/quota/store.ts); the body's fields keep this order.
        const p = params(req) as unknown as OpenAI.Chat.ChatCompletionCreateParamsStreaming;
        p.stream = true;
        p.stream_options = { include_usage: true };
        const chunks = await chat.stream(p, idle.signal);
        started = true;
        idle.touch();
        for await (const chunk of chunks) {
          idle.touch();
          if (chunk.model) model = chunk.model;
          const choice = chunk.choices?.[0];
          if (chunk.usage) {
            reported = usageOf(chunk.usage);
            reportedFinal = Boolean(finish || choice?.finish_reason);
          }
          if (!choice) continue;
          // A refusal streams as `refusal` deltas: their text is the answer, as in a plain answer.
          const delta = choice.delta?.content || choice.delta?.refusal;
          // Chunks already buffered keep coming after an abort: their text reaches no one, their finish and usage count.
          if (delta && idle.signal.aborted) unsentBytes += utf8Bytes(delta);
          else if (delta) {
            text += delta;
            try {
              onText(delta);
            } catch (err) {
              listenerError = err;
              throw err;
            }
          }
          if (choice.delta?.refusal) refused = true;
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      } catch (err) {
        if (err === listenerError) throw err;
        if (req.signal?.aborted && !(err instanceof GatewayError)) {
          if (finish) return { text, model, usage: consumed(), stopReason: stopReasonOf(finish, refused ? 'refusal' : null) };
          throw cancelledError(name, reported && consumed(), started);
        }
        if (idle.fired) throw stalled();
        throw toGatewayError(err, req.signal, started ? consumed() : undefined);
      } finally {
        idle.stop();
      }
      // The SDK ends the iteration quietly when its signal aborts mid-stream. A provider that had
      // finished answered the call, whenever the caller left; otherwise it is charged what it
      // reported (the pipeline adds the input bound when that is nothing).
      if (req.signal?.aborted) {
        if (finish) return { text, model, usage: consumed(), stopReason: stopReasonOf(finish, refused ? 'refusal' : null) };
        throw cancelledError(name, reported && consumed(), true);
      }
      if (idle.fired) throw stalled();
      if (!finish) {
        throw upstreamError({ provider: name, network: true, type: 'stream_incomplete', message: 'the stream ended without a finish_reason', usage: consumed() });
      }
      return { text, model, usage: consumed(), stopReason: stopReasonOf(finish, refused ? 'refusal' : null) };
    },
  };
}
