/**
 * The Anthropic adapter: the Messages API through the official @anthropic-ai/sdk. It turns the
 * provider-neutral request into `messages.create`, reads usage the way Anthropic bills it (cache
 * reads and writes are input tokens too) and maps every failure through errors.ts, charging what a
 * stream consumed before it broke. With `countTokens: true` in the policy it counts a call's input
 * before the call through `messages.countTokens` (POST /v1/messages/count_tokens) when admission asks.
 */
import Anthropic, { type ClientOptions } from '@anthropic-ai/sdk';
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from './config.js';
import { assertEgress, providerEndpoint } from './egress.js';
import { afterAnswer, cancelledError, upstreamError } from './errors.js';
import { FRAMING, outputTokenBound, sumOfCounts, unreportedInputTokens } from './estimate.js';
import { ProxyAgent } from 'undici';
import { directMessagesClient, sdkMessagesClient, type MessagesClient } from './anthropicWire.js';
import { headGuard, idleGuard, sdkTransport } from './fetchSdk.js';
import type { CompletionRequest, CompletionResult, Provider, TextListener, Usage, ProviderBuildOptions } from './provider.js';
import { withoutKey } from '../secretPieces.js';

export type AnthropicConfig = Extract<ProviderConfig, { kind: 'anthropic' }>;

/**
 * The HTTP status Anthropic uses for an error `type`. An error that arrives as an SSE `error` event
 * after a 200 has no status of its own; this gives it the one Anthropic would have answered with,
 * so an `overloaded_error` mid-stream fails over like a 529 does.
 */
const STATUS_OF_TYPE: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529,
};

type MessageParams = Anthropic.MessageCreateParamsNonStreaming;

/**
 * An Anthropic provider for one policy entry. SDK retries follow `maxRetries` (the pipeline's own
 * failover usually wants 0); `opts.proxy` sends every call through a corporate proxy and
 * `opts.egressAllow` holds every request to the policy's allowlist. Messages go through the SDK
 * (`client: sdk`) or as the request the SDK builds (`client: direct`, anthropicWire.ts); token
 * counting always goes through the SDK.
 */
export function createAnthropicProvider(name: string, config: AnthropicConfig, opts: ProviderBuildOptions = {}): Provider {
  // The endpoint the egress allowlist checked at policy load (always defined for a network kind).
  const baseUrl = providerEndpoint(config)!;
  const client = new Anthropic({
    apiKey: config.apiKey,
    // Explicit so ANTHROPIC_BASE_URL / ANTHROPIC_AUTH_TOKEN in the environment cannot redirect a call
    // away from the URL the egress allowlist checked.
    authToken: null,
    baseURL: baseUrl,
    timeout: config.timeoutMs,
    maxRetries: config.maxRetries,
    // The direct client takes its URL and headers from this client and sends them itself; token
    // counting stays on the SDK, so its fetch is the guarded one whichever client runs.
    ...(sdkTransport(name, opts) as Pick<ClientOptions, 'fetch' | 'fetchOptions'>),
  });
  const messages: MessagesClient =
    config.client === 'sdk'
      ? sdkMessagesClient(client)
      : directMessagesClient({
          sdk: client,
          timeoutMs: config.timeoutMs,
          maxRetries: config.maxRetries,
          dispatcher: opts.proxy ? new ProxyAgent(opts.proxy) : undefined,
          egress: opts.egressAllow ? { provider: name, allow: opts.egressAllow } : undefined,
        });

  function params(req: CompletionRequest): MessageParams {
    const p: MessageParams = {
      model: req.model,
      max_tokens: req.maxTokens,
      messages: req.messages.map((m) => ({ role: m.role, content: m.parts ? m.parts.map((text) => ({ type: 'text' as const, text })) : m.content })),
    };
    if (req.system !== undefined) p.system = req.system;
    // `temperature` is deliberately not sent: API version 2026-10-21 (what SDK 1.x speaks) answers
    // 400 "Extra inputs are not permitted" to temperature, top_p and top_k, even at their defaults.
    return p;
  }

  /** Keeps the key out of anything a caller or a log may see. */
  function redact(text: string): string {
    // Whole, and in pieces: an upstream's 401 may quote the key cut short.
    return withoutKey(text, config.apiKey, '[redacted]');
  }

  function toGatewayError(err: unknown, signal: AbortSignal | undefined, usage?: Usage): GatewayError {
    if (err instanceof GatewayError) return err;
    // The egress guard throws inside fetch; the SDK hands that on as the cause of a connection error.
    if (err instanceof Error && err.cause instanceof GatewayError) return err.cause;
    if (signal?.aborted) return cancelledError(name, usage);
    if (err instanceof Anthropic.APIConnectionTimeoutError) {
      return upstreamError({ provider: name, network: true, type: 'timeout', message: `no answer within ${config.timeoutMs} ms`, usage }, err);
    }
    if (err instanceof Anthropic.APIConnectionError || err instanceof Anthropic.APIUserAbortError) {
      return upstreamError({ provider: name, network: true, type: 'connection_error', message: redact(err.message), usage }, err);
    }
    if (err instanceof Anthropic.APIError) {
      const type = err.type ?? undefined;
      const status = err.status ?? (type ? STATUS_OF_TYPE[type] : undefined);
      const message = redact(err.apiMessage ?? err.message);
      if (status === undefined) return upstreamError({ provider: name, network: true, type: type ?? 'stream_error', message, usage }, err);
      return upstreamError({ provider: name, status, type, message, usage }, err);
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

  function malformed(what: string): GatewayError {
    return upstreamError({ provider: name, network: true, type: 'malformed_response', message: what });
  }

  /** Fails fast, before the SDK and its retries, when the endpoint itself is off the allowlist. */
  function checkEgress(): void {
    if (opts.egressAllow) assertEgress(name, baseUrl, opts.egressAllow);
  }

  /** An answer whose head arrived and whose body did not within timeoutMs. */
  function bodyTimeout(err: unknown): GatewayError {
    return upstreamError({ provider: name, network: true, type: 'timeout', message: `the answer's body did not arrive within ${config.timeoutMs} ms` }, err);
  }

  async function countInput(req: CompletionRequest): Promise<number> {
    if (req.signal?.aborted) throw cancelledError(name);
    checkEgress();
    const { model, messages, system } = params(req);
    let counted: Anthropic.MessageTokensCount;
    try {
      counted = await client.messages.countTokens({ model, messages, ...(system !== undefined ? { system } : {}) }, { signal: req.signal });
    } catch (err) {
      throw toGatewayError(err, req.signal);
    }
    if (typeof counted?.input_tokens !== 'number' || !Number.isFinite(counted.input_tokens) || counted.input_tokens < 0) {
      throw malformed('the answer is not a token count');
    }
    return counted.input_tokens;
  }

  return {
    name,
    kind: 'anthropic',
    baseUrl,

    ...(config.countTokens ? { countTokens: countInput } : {}),
    ...(config.countTokens === 'always' ? { estimateInput: async (req: CompletionRequest) => ({ tokens: await countInput(req), exact: true }) } : {}),

    async complete(req) {
      if (req.signal?.aborted) throw cancelledError(name);
      checkEgress();
      // A caller who leaves aborts the request until the answer's head arrives; after it, the body is read anyway.
      const upstream = headGuard(req.signal, config.timeoutMs);
      let message: Anthropic.Message;
      try {
        message = await messages.create(params(req), upstream.signal, upstream.answered);
      } catch (err) {
        if (!(err instanceof GatewayError) && req.signal?.aborted) throw cancelledError(name, undefined, upstream.wasAnswered);
        const failure = !(err instanceof GatewayError) && upstream.signal.aborted ? bodyTimeout(err) : toGatewayError(err, undefined);
        // After the head the answer had been generated whole: the provider bills it (dispatch charges its bound).
        throw upstream.wasAnswered ? afterAnswer(failure) : failure;
      } finally {
        upstream.stop();
      }
      // The SDK returns whatever parsed; a proxy or a look-alike server may send another shape.
      if (typeof message !== 'object' || message === null || !Array.isArray(message.content)) {
        throw afterAnswer(malformed('the answer is not a Messages API message'));
      }
      // Usage that is missing or not counts is charged at its bounds (chargeableUsage), not refused:
      // the provider did the work and bills it.
      const reported: Partial<InputCounts> & { output_tokens?: unknown } = typeof message.usage === 'object' && message.usage !== null ? message.usage : {};
      return {
        text: message.content.map((b) => (b.type === 'text' ? b.text : '')).join(''),
        model: message.model,
        usage: usageOf(reported as InputCounts, reported.output_tokens as number),
        ...stopOf(message.stop_reason, message.stop_sequence),
      };
    },

    async stream(req, onText: TextListener): Promise<CompletionResult> {
      if (req.signal?.aborted) throw cancelledError(name);
      checkEgress();
      const idle = idleGuard(config.timeoutMs, req.signal);
      let model = req.model;
      let text = '';
      let input: InputCounts | undefined;
      let reportedOutput = 0;
      /** Whether message_delta brought the final output count. */
      let final = false;
      let stop: Pick<CompletionResult, 'stopReason' | 'stopSequence'> = {};
      let stopped = false;
      let answered = false;
      let listenerError: unknown;
      // Output is what message_delta reported; before it (a cut stream), the larger of what
      // message_start reported and the bound of the text that arrived (one token per UTF-8 byte, at
      // most max_tokens), so a cut stream is never charged less than what reached the caller.
      // Without message_start (a look-alike server) nothing reported is trusted: the input is
      // charged at what admission reserved for it, the output at least at the bound of the text.
      const consumed = (): Usage => {
        const bound = Math.max(reportedOutput, outputTokenBound(text, req.maxTokens));
        if (!input) return { inputTokens: unreportedInputTokens(req, FRAMING.anthropic), outputTokens: bound };
        return usageOf(input, final ? reportedOutput : bound);
      };
      const stalled = (): GatewayError =>
        upstreamError({ provider: name, network: true, type: 'timeout', message: `no stream event within ${config.timeoutMs} ms`, usage: consumed() });

      try {
        // Added to params' own object, not spread onto a copy (see the OpenAI adapter's stream).
        const p = params(req) as unknown as Anthropic.MessageCreateParamsStreaming;
        p.stream = true;
        const events = await messages.stream(p, idle.signal);
        answered = true;
        idle.touch();
        for await (const event of events) {
          idle.touch();
          if (event.type === 'message_start') {
            model = event.message.model;
            // A look-alike server may leave usage out: its input is then not reported (usageOf).
            const usage: Partial<Anthropic.Usage> = event.message.usage ?? {};
            input = usage as InputCounts;
            if (typeof usage.output_tokens === 'number') reportedOutput = usage.output_tokens;
          } else if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
            // Events already buffered keep coming after an abort: their text reaches no one, their usage and stop count.
            if (idle.signal.aborted) continue;
            text += event.delta.text;
            try {
              onText(event.delta.text);
            } catch (err) {
              listenerError = err;
              throw err;
            }
          } else if (event.type === 'message_delta') {
            if (event.delta.stop_reason) stop = stopOf(event.delta.stop_reason, event.delta.stop_sequence);
            // A look-alike server may leave usage out: the output is then charged at its bound.
            if (typeof event.usage?.output_tokens === 'number') {
              reportedOutput = event.usage.output_tokens;
              final = true;
            }
            // The final event may restate input counts; a restated count wins over message_start's.
            if (input && event.usage) {
              input = {
                input_tokens: event.usage.input_tokens ?? input.input_tokens,
                cache_read_input_tokens: event.usage.cache_read_input_tokens ?? input.cache_read_input_tokens,
                cache_creation_input_tokens: event.usage.cache_creation_input_tokens ?? input.cache_creation_input_tokens,
              };
            }
          } else if (event.type === 'message_stop') {
            stopped = true;
          }
        }
      } catch (err) {
        if (err === listenerError) throw err;
        if (req.signal?.aborted && !(err instanceof GatewayError)) {
          if (stopped && input) return { text, model, usage: consumed(), ...stop };
          // What the provider reported; without message_start the pipeline charges the bound.
          throw cancelledError(name, input && consumed(), answered);
        }
        if (idle.fired) throw stalled();
        throw toGatewayError(err, req.signal, answered ? consumed() : undefined);
      } finally {
        idle.stop();
      }
      // The SDK ends the iteration quietly when its signal aborts mid-stream. A provider that had
      // finished (message_stop) answered the call, whenever the caller left; otherwise it is charged
      // what it reported (the pipeline adds the input bound when that is nothing).
      if (req.signal?.aborted) {
        if (stopped && input) return { text, model, usage: consumed(), ...stop };
        throw cancelledError(name, input && consumed(), true);
      }
      if (idle.fired) throw stalled();
      if (!input) {
        throw upstreamError({ provider: name, network: true, type: 'stream_incomplete', message: 'the stream had no message_start', usage: consumed() });
      }
      if (!stopped) {
        throw upstreamError({ provider: name, network: true, type: 'stream_incomplete', message: 'the stream ended before message_stop', usage: consumed() });
      }
      return { text, model, usage: consumed(), ...stop };
    },
  };
}

/**
 * Anthropic's stop reason in the gateway's words, which are Anthropic's own; a context window
 * reached is a cut like max_tokens, a tool or pause turn (never asked for) a finished one.
 */
function stopOf(reason: string | null | undefined, sequence: string | null | undefined): Pick<CompletionResult, 'stopReason' | 'stopSequence'> {
  switch (reason) {
    case undefined:
    case null:
      return {};
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return { stopReason: 'max_tokens' };
    case 'stop_sequence':
      return sequence ? { stopReason: 'stop_sequence', stopSequence: sequence } : { stopReason: 'stop_sequence' };
    case 'refusal':
      return { stopReason: 'refusal' };
    default:
      return { stopReason: 'end_turn' };
  }
}

interface InputCounts {
  input_tokens: number;
  cache_read_input_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
}

/** Anthropic reports cache reads and writes apart from `input_tokens`; tollgate counts them as input. */
/** Usage as Anthropic bills it: cache reads and writes are input tokens too. */
function usageOf(u: InputCounts, outputTokens: number): Usage {
  // Figures from the wire: one that is not a count makes the input not reported (chargeableUsage).
  const usage: Usage = {
    inputTokens: sumOfCounts(u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens),
    outputTokens,
  };
  const cached = u.cache_read_input_tokens;
  if (typeof cached === 'number' && cached > 0 && Number.isFinite(usage.inputTokens)) usage.cachedInputTokens = cached;
  return usage;
}
