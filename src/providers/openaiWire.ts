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
 * `APIConnectionTimeoutError`, `APIUserAbortError`); its retry rule (`x-should-retry`, then 408,
 * 409, 429 and 5xx; `retry-after-ms`, `retry-after`, else 0.5 s doubling to 8 s with up to 25 %
 * jitter) and connection-error retries; its timeout, which runs until the answer's head; its reading
 * of an answer (JSON by content type, else text) and of a stream (server-sent events, `[DONE]`, an
 * `error` object inside a 200 stream, an abort ending the iteration quietly). The provider
 * contract (test/providers/contract.ts) runs against both clients.
 */
import OpenAI from 'openai';
import { Agent, type Dispatcher } from 'undici';
import { headerRecord, webHeaders } from './fetchSdk.js';

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

export interface DirectOptions {
  /**
   * The SDK client the `sdk` path would use, configured the same way. The direct client sends its
   * URL and headers as the SDK builds them (its public `buildRequest`, once per retry count), so
   * that the request is the SDK's byte for byte (test/providers/openai-wire-sdk.test.ts).
   */
  sdk: OpenAI;
  timeoutMs: number;
  maxRetries: number;
  /** The proxy's agent, when calls go through one. */
  dispatcher?: Dispatcher;
}

/** The SDK's URL and headers for a Chat Completions post, for each attempt (the retry count is a header). */
interface Prepared {
  /** The SDK's URL, taken apart once: the dispatcher is given them as they are. */
  origin: string;
  path: string;
  headers: Record<string, string>[];
}

async function prepare(sdk: OpenAI, maxRetries: number): Promise<Prepared> {
  const built = await Promise.all(
    Array.from({ length: maxRetries + 1 }, (_, retryCount) =>
      sdk.buildRequest({ method: 'post', path: '/chat/completions', body: {} }, { retryCount }),
    ),
  );
  const url = new URL(built[0]!.url);
  return { origin: url.origin, path: `${url.pathname}${url.search}`, headers: built.map(({ req }) => headerRecord(req.headers as HeadersInit)) };
}

const isAbortError = (err: unknown): boolean => typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'AbortError';

/** The SDK's rule: the server's `x-should-retry` when it says, else request timeouts, lock timeouts, rate limits and 5xx. */
function shouldRetry(status: number, headers: Dispatcher.ResponseData['headers']): boolean {
  const header = headers['x-should-retry'];
  if (header === 'true') return true;
  if (header === 'false') return false;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** The SDK's wait before a retry: what the server asked for, else exponential backoff with jitter. */
function retryDelayMs(headers: Dispatcher.ResponseData['headers'] | undefined, retriesLeft: number, maxRetries: number): number {
  let ms: number | undefined;
  const afterMs = one(headers?.['retry-after-ms']);
  if (afterMs) {
    const n = parseFloat(afterMs);
    if (!Number.isNaN(n)) ms = n;
  }
  const after = one(headers?.['retry-after']);
  if (after && !ms) {
    const seconds = parseFloat(after);
    ms = Number.isNaN(seconds) ? Date.parse(after) - Date.now() : seconds * 1000;
  }
  if (ms !== undefined) return ms;
  const sleepSeconds = Math.min(0.5 * 2 ** (maxRetries - retriesLeft), 8);
  return sleepSeconds * (1 - Math.random() * 0.25) * 1000;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A body's failure as fetch reports it: the abort when aborted, else TypeError("terminated"), which the adapter reads as a lost connection. */
function bodyFailure(err: unknown, signal: AbortSignal): unknown {
  if (signal.aborted || isAbortError(err)) return signal.reason ?? err;
  return new TypeError('terminated', { cause: err });
}

/** Chat Completions posted directly (see the module comment). */
export function directChatClient(opts: DirectOptions): ChatClient {
  let prepared: Prepared | undefined;
  let preparing: Promise<Prepared> | undefined;
  // The dispatcher's own `request` rather than undici's top-level one, which parses the URL and
  // spreads the options into a new object on every call (issue 21: about 1.5 µs, and a hidden class
  // of its own each time, so that undici's reads of it missed V8's inline caches).
  const dispatcher = opts.dispatcher ?? new Agent();

  /**
   * Posts the body and resolves with a successful answer whose head has arrived; retries as the
   * SDK does, each attempt with its own timeout until its head. `signal` aborts the attempt and,
   * after the head, the body: it stays wired to the request until the body ends.
   */
  async function send(body: string, signal: AbortSignal): Promise<{ res: Dispatcher.ResponseData; controller: AbortController }> {
    const { origin, path, headers } = prepared ?? (prepared = await (preparing ??= prepare(opts.sdk, opts.maxRetries).finally(() => (preparing = undefined))));
    for (let retriesLeft = opts.maxRetries; ; retriesLeft--) {
      if (signal.aborted) throw new OpenAI.APIUserAbortError();
      const controller = new AbortController();
      const abort = (): void => controller.abort();
      signal.addEventListener('abort', abort, { once: true });
      const timer = setTimeout(abort, opts.timeoutMs);
      let res: Dispatcher.ResponseData;
      try {
        res = await dispatcher.request({ origin, path, method: 'POST', headers: headers[opts.maxRetries - retriesLeft], body, signal: controller.signal });
      } catch (err) {
        signal.removeEventListener('abort', abort);
        if (signal.aborted) throw new OpenAI.APIUserAbortError();
        const timedOut = controller.signal.aborted || /timed? ?out/i.test(String(err) + (err instanceof Error && 'cause' in err ? String(err.cause) : ''));
        if (retriesLeft > 0) {
          await sleep(retryDelayMs(undefined, retriesLeft, opts.maxRetries));
          continue;
        }
        if (timedOut) throw new OpenAI.APIConnectionTimeoutError();
        // The SDK's words for it: "Connection error.", the cause attached.
        throw new OpenAI.APIConnectionError({ message: undefined, cause: err instanceof Error ? err : undefined });
      } finally {
        clearTimeout(timer);
      }
      res.body.once('close', () => signal.removeEventListener('abort', abort));
      if (res.statusCode >= 200 && res.statusCode < 300) return { res, controller };
      if (retriesLeft > 0 && shouldRetry(res.statusCode, res.headers)) {
        discard(res.body);
        await sleep(retryDelayMs(res.headers, retriesLeft, opts.maxRetries));
        continue;
      }
      const text = await res.body.text().catch((err: unknown) => (err instanceof Error ? err.message : String(err)));
      const json = safeJson(text) as Record<string, unknown> | undefined;
      throw OpenAI.APIError.generate(res.statusCode, json, json ? undefined : text, webHeaders(res.headers));
    }
  }

  return {
    async complete(params, signal, onHead) {
      const { res, controller } = await send(JSON.stringify(params), signal);
      onHead();
      const type = one(res.headers['content-type'])?.split(';')[0]?.trim();
      let text: string;
      try {
        if (res.statusCode === 204) {
          res.body.resume();
          return null as unknown as OpenAI.Chat.ChatCompletion;
        }
        text = await res.body.text();
      } catch (err) {
        throw bodyFailure(err, controller.signal);
      }
      if (type?.includes('application/json') || type?.endsWith('+json')) {
        if (one(res.headers['content-length']) === '0') return undefined as unknown as OpenAI.Chat.ChatCompletion;
        return JSON.parse(text) as OpenAI.Chat.ChatCompletion;
      }
      return text as unknown as OpenAI.Chat.ChatCompletion;
    },

    async stream(params, signal) {
      const { res, controller } = await send(JSON.stringify(params), signal);
      return events(res, controller);
    },
  };
}

/** Drops a body nobody will read (undici reports the destruction as an error, which nobody hears). */
function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** The chunks of a server-sent event stream, as the SDK's `Stream` yields them. */
async function* events(res: Dispatcher.ResponseData, controller: AbortController): AsyncGenerator<OpenAI.Chat.ChatCompletionChunk> {
  let done = false;
  let headers: Headers | undefined;
  try {
    for await (const sse of sseEvents(res.body, controller.signal)) {
      if (done) continue;
      if (sse.data.startsWith('[DONE]')) {
        done = true;
        continue;
      }
      const data = JSON.parse(sse.data) as OpenAI.Chat.ChatCompletionChunk & { error?: unknown };
      if (data && data.error) throw new OpenAI.APIError(undefined, data.error as object, undefined, (headers ??= webHeaders(res.headers)));
      yield data;
    }
    done = true;
  } catch (err) {
    // An abort (the caller, the idle guard) ends the iteration quietly, as the SDK's does.
    if (isAbortError(err)) return;
    throw err;
  } finally {
    if (!done) {
      controller.abort();
      discard(res.body);
    }
  }
}

interface ServerSentEvent {
  event: string | null;
  data: string;
}

/**
 * Server-sent events from a body, as the SDK's decoder reads them: lines end at \n, \r\n or \r;
 * `data` lines of an event are joined with \n; comments and unknown fields are skipped; an event
 * ends at a blank line, and one the body ends before is dropped.
 */
async function* sseEvents(body: Dispatcher.ResponseData['body'], signal: AbortSignal): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let event: string | null = null;
  let data: string[] = [];
  const line = (text: string): ServerSentEvent | undefined => {
    if (text === '') {
      if (event === null && data.length === 0) return undefined;
      const sse = { event, data: data.join('\n') };
      event = null;
      data = [];
      return sse;
    }
    if (text.startsWith(':')) return undefined;
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    return undefined;
  };
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      buffer += decoder.decode(chunk, { stream: true });
      let start = 0;
      for (;;) {
        const lf = buffer.indexOf('\n', start);
        const cr = buffer.indexOf('\r', start);
        // A \r at the very end may be the first half of \r\n: wait for the next chunk.
        if (cr !== -1 && (lf === -1 || cr < lf) && cr === buffer.length - 1) break;
        const end = cr !== -1 && (lf === -1 || cr < lf) ? cr : lf;
        if (end === -1) break;
        const sse = line(buffer.slice(start, end));
        start = end + (buffer[end] === '\r' && buffer[end + 1] === '\n' ? 2 : 1);
        // What had arrived when the request was aborted is dropped, as the SDK's web stream drops its queue.
        if (signal.aborted) throw signal.reason;
        if (sse) yield sse;
      }
      buffer = buffer.slice(start);
    }
  } catch (err) {
    throw bodyFailure(err, signal);
  }
  // What follows the last blank line is an unfinished event, which the SDK drops too.
}
