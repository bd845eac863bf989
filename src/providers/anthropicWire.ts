/**
 * The Messages API without the SDK's per-call machinery (`client: direct`, the default): the
 * request @anthropic-ai/sdk builds, posted on the provider's own undici Agent, and its answer read as
 * the SDK reads it (directWire.ts, which the OpenAI direct client shares). The URL and every header
 * (`anthropic-version`, the key's `Authorization`, `User-Agent`, the `x-stainless-*` headers, those of
 * `ANTHROPIC_CUSTOM_HEADERS`) come from the SDK's public `buildRequest`, once per provider and retry
 * count; test/providers/anthropic-wire-sdk.test.ts requires the requests of both clients to be
 * identical. Besides the Headers, option bags, log details and web Response of every call, the SDK
 * opens an OpenTelemetry call span for each (its tracing is on unless turned off), which the direct
 * client does not.
 *
 * What it keeps of the SDK, so that the adapter (anthropic.ts) maps errors the same way whichever
 * client runs: the SDK's error classes (`APIError.generate` for a status, `APIConnectionError`,
 * `APIConnectionTimeoutError`, `APIUserAbortError`), its retry rule and wait (a retry-after taken
 * only when positive and within a timer's range; the wait ends when the call is aborted), its timeout
 * until the answer's head, and its reading of a stream: `ping` events and events without a name are
 * skipped, an `error` event inside a 200 stream fails it with the SDK's APIError carrying the event's
 * `error.type`, and an abort ends the iteration quietly.
 *
 * What it leaves out: an error whose body carries `details.error_code` is the SDK's class for its
 * status here, where the SDK picks a subclass of that class from a map it keeps internal (its
 * status, type and message, all the adapter reads, are the same); a message does not get the SDK's
 * hidden `_request_id`; no deprecated model is warned of on the console; nothing is logged through the SDK's logger (`ANTHROPIC_LOG`), and no trace
 * context is sent, which the SDK adds only when the application registered an OpenTelemetry
 * propagator (tollgate does not).
 */
import Anthropic from '@anthropic-ai/sdk';
import { directPoster, readAnswer, sseItems, type DirectClientOptions, type SdkErrors } from './directWire.js';
import { webHeaders } from './fetchSdk.js';

type MessageParams = Anthropic.MessageCreateParamsNonStreaming;
type StreamParams = Anthropic.MessageCreateParamsStreaming;

/** How the adapter reaches the Messages API: through the SDK or directly. */
export interface MessagesClient {
  /** One message; `onHead` runs when a successful answer's head has arrived (its body not yet read). */
  create(params: MessageParams, signal: AbortSignal, onHead: () => void): Promise<Anthropic.Message>;
  /** A stream of events; resolves once the answer's head has arrived. */
  stream(params: StreamParams, signal: AbortSignal): Promise<AsyncIterable<Anthropic.RawMessageStreamEvent>>;
}

/** The SDK as a MessagesClient. */
export function sdkMessagesClient(client: Anthropic): MessagesClient {
  return {
    async create(params, signal, onHead) {
      const pending = client.messages.create(params, { signal });
      pending.asResponse().then(onHead, () => undefined);
      return pending;
    },
    stream: (params, signal) => client.messages.create(params, { signal }),
  };
}

const errors: SdkErrors = {
  userAbort: () => new Anthropic.APIUserAbortError(),
  timeout: () => new Anthropic.APIConnectionTimeoutError(),
  connection: (cause) => new Anthropic.APIConnectionError({ cause }),
  status: (status, json, text, headers) => Anthropic.APIError.generate(status, json, text, webHeaders(headers)),
};

/** The Messages API posted directly (see the module comment). */
export function directMessagesClient(opts: DirectClientOptions<Anthropic>): MessagesClient {
  const send = directPoster(opts, (sdk, retryCount) => sdk.buildRequest({ method: 'post', path: '/v1/messages', body: {} }, { retryCount }), { errors, anthropicRetryWait: true });

  return {
    async create(params, signal, onHead) {
      const answer = await send(JSON.stringify(params), signal);
      onHead();
      return (await readAnswer(answer)) as Anthropic.Message;
    },

    async stream(params, signal) {
      const answer = await send(JSON.stringify(params), signal);
      return sseItems(answer, (sse) => {
        if (sse.event === 'ping' || sse.event === null) return undefined;
        if (sse.event === 'error') {
          let body: unknown;
          try {
            body = JSON.parse(sse.data) ?? sse.data;
          } catch {
            body = sse.data;
          }
          const type = (body as { error?: { type?: Anthropic.ErrorType } } | undefined)?.error?.type;
          throw new Anthropic.APIError(undefined, body as object, undefined, webHeaders(answer.res.headers), type);
        }
        if (!sse.data) return undefined;
        return JSON.parse(sse.data) as Anthropic.RawMessageStreamEvent;
      });
    },
  };
}
