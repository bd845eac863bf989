/**
 * Chat Completions without the SDK's per-call machinery (`client: direct`, the default): the
 * request the openai SDK builds, posted on the provider's own undici Agent (its connection pool,
 * through the dispatcher's `request`), and its answer read as the SDK reads it. The URL and headers
 * are the SDK's own, from its public `buildRequest`, made once per provider and retry count (an
 * Agent's idle connections close after its keep-alive, so a provider a reload dropped leaves
 * nothing open); test/providers/openai-wire-sdk.test.ts requires the requests of both clients to be
 * identical. The SDK builds a Headers object, a Request-like option bag, log details and an
 * AbortController per call, and reads the answer through a web Response and byte buffers
 * concatenated per line; here a stream is cut into events from the socket's text.
 *
 * What it keeps of the SDK, so that the adapter (openai.ts) maps errors the same way whichever
 * client runs: the SDK's own error classes (`APIError.generate` for a status, `APIConnectionError`,
 * `APIConnectionTimeoutError`, `APIUserAbortError`); its retry rule, its timeout until the answer's
 * head and its reading of an answer and of server-sent events, which the Anthropic SDK shares and
 * directWire.ts keeps for both; and what is OpenAI's own in a stream (`[DONE]`, an `error` object
 * inside a 200 stream). The provider contract (test/providers/contract.ts) runs against both clients.
 */
import OpenAI from 'openai';
import { directPoster, END, readAnswer, sseItems, type DirectClientOptions, type SdkErrors } from './directWire.js';
import { webHeaders } from './fetchSdk.js';

type ChatParams = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming;
type StreamParams = OpenAI.Chat.ChatCompletionCreateParamsStreaming;

/** How the adapter reaches Chat Completions: through the SDK or directly. */
export interface ChatClient {
  /** One answer; `onHead` runs when a successful answer's head has arrived (its body not yet read). */
  complete(params: ChatParams, signal: AbortSignal, onHead: () => void): Promise<OpenAI.Chat.ChatCompletion>;
  /** A stream of chunks; resolves once the answer's head has arrived. */
  stream(params: StreamParams, signal: AbortSignal): Promise<AsyncIterable<OpenAI.Chat.ChatCompletionChunk>>;
}

/** The SDK as a ChatClient. */
export function sdkChatClient(client: OpenAI): ChatClient {
  return {
    async complete(params, signal, onHead) {
      const pending = client.chat.completions.create(params, { signal });
      pending.asResponse().then(onHead, () => undefined);
      return pending;
    },
    stream: (params, signal) => client.chat.completions.create(params, { signal }),
  };
}

export type DirectOptions = DirectClientOptions<OpenAI>;

const errors: SdkErrors = {
  userAbort: () => new OpenAI.APIUserAbortError(),
  timeout: () => new OpenAI.APIConnectionTimeoutError(),
  // The SDK's words for it: "Connection error.", the cause attached.
  connection: (cause) => new OpenAI.APIConnectionError({ message: undefined, cause }),
  status: (status, json, text, headers) => OpenAI.APIError.generate(status, json, text, webHeaders(headers)),
};

/** Chat Completions posted directly (see the module comment). */
export function directChatClient(opts: DirectOptions): ChatClient {
  const send = directPoster(opts, (sdk, retryCount) => sdk.buildRequest({ method: 'post', path: '/chat/completions', body: {} }, { retryCount }), { errors });

  return {
    async complete(params, signal, onHead) {
      const answer = await send(JSON.stringify(params), signal);
      onHead();
      return (await readAnswer(answer)) as OpenAI.Chat.ChatCompletion;
    },

    async stream(params, signal) {
      const answer = await send(JSON.stringify(params), signal);
      let headers: Headers | undefined;
      // The SDK's reading of a chunk: `[DONE]` ends the chunks, an `error` object fails the stream.
      return sseItems(answer, (sse) => {
        if (sse.data.startsWith('[DONE]')) return END;
        const data = JSON.parse(sse.data) as OpenAI.Chat.ChatCompletionChunk & { error?: unknown };
        if (data && data.error) throw new OpenAI.APIError(undefined, data.error as object, undefined, (headers ??= webHeaders(answer.res.headers)));
        return data;
      });
    },
  };
}
