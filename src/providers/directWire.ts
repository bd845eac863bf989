/**
 * What the direct clients (`client: direct`; openaiWire.ts, anthropicWire.ts) share: the request an
 * official Stainless-generated SDK builds, posted on the provider's own undici Agent (its connection
 * pool, through the dispatcher's `request`), and its answer read as the SDK reads it. The URL and
 * headers are the SDK's own, from its public `buildRequest`, made once per provider and retry count
 * (an Agent's idle connections close after its keep-alive, so a provider a reload dropped leaves
 * nothing open). The SDK builds a Headers object, a Request-like option bag, log details and an
 * AbortController per call, and reads the answer through a web Response and byte buffers; here a
 * stream is cut into events from the socket's text.
 *
 * Both SDKs share the rules kept here: retries on `x-should-retry`, then 408, 409, 429 and 5xx, and
 * on connection errors; the wait before a retry (`retry-after-ms`, `retry-after`, else 0.5 s doubling
 * to 8 s with up to 25 % jitter); a timeout that runs until the answer's head; an answer read as
 * JSON by its content type, else as text; server-sent events cut as their decoders cut them, an
 * abort ending the iteration quietly. What each SDK does its own way (its error classes, how it
 * reads a retry-after, its stream's events) comes in a `WireFlavour`.
 */
import { Agent, type Dispatcher } from 'undici';
import { assertEgress } from './egress.js';
import { headerRecord } from './fetchSdk.js';

type ResponseHeaders = Dispatcher.ResponseData['headers'];

/** The SDK's error classes, made as the SDK makes them. */
export interface SdkErrors {
  userAbort(): Error;
  timeout(): Error;
  connection(cause: Error | undefined): Error;
  /** A non-2xx answer: the parsed JSON body when it is JSON, else its text. */
  status(status: number, json: Record<string, unknown> | undefined, text: string | undefined, headers: ResponseHeaders): Error;
}

/** How one SDK differs from the other on the rules this module keeps. */
export interface WireFlavour {
  errors: SdkErrors;
  /**
   * Anthropic's SDK takes a server's retry-after only when it is a positive delay one timer can
   * hold (else its backoff), and wakes from the wait when the call is aborted; OpenAI's takes any
   * value and sleeps it out.
   */
  anthropicRetryWait?: boolean;
}

/** The SDK's URL and headers for a post, for each attempt (the retry count is a header). */
interface Prepared {
  /** The SDK's URL, taken apart once: the dispatcher is given them as they are. */
  origin: string;
  path: string;
  headers: Record<string, string>[];
}

/** What a Stainless SDK's `buildRequest` gives: the URL and the request init whose headers are the SDK's. */
interface Built {
  url: string;
  req: { headers?: unknown };
}

/**
 * The SDK's URL and headers for every attempt, from `build(retryCount)` (the SDK's public
 * `buildRequest`). The URL is held to the egress allowlist here, once: nothing else is ever posted.
 */
async function prepareRequests(build: (retryCount: number) => Promise<Built>, maxRetries: number, egress?: DirectClientOptions<unknown>['egress']): Promise<Prepared> {
  const built = await Promise.all(Array.from({ length: maxRetries + 1 }, (_, retryCount) => build(retryCount)));
  if (egress) assertEgress(egress.provider, built[0]!.url, egress.allow);
  const url = new URL(built[0]!.url);
  return { origin: url.origin, path: `${url.pathname}${url.search}`, headers: built.map(({ req }) => headerRecord(req.headers as HeadersInit)) };
}

/** How a direct client is made: from the SDK client the `sdk` path would use, configured the same way. */
export interface DirectClientOptions<Sdk> {
  /**
   * The SDK client. The direct client sends its URL and headers as the SDK builds them (its public
   * `buildRequest`, once per retry count), so that the request is the SDK's byte for byte
   * (test/providers/openai-wire-sdk.test.ts, anthropic-wire-sdk.test.ts).
   */
  sdk: Sdk;
  timeoutMs: number;
  maxRetries: number;
  /** The proxy's agent, when calls go through one. */
  dispatcher?: Dispatcher;
  /** The policy's egress allowlist, which the SDK's URL is held to before anything is posted. */
  egress?: { provider: string; allow: readonly string[] };
}

/** A successful answer whose head has arrived, and the controller that aborts its body. */
export interface Answer {
  res: Dispatcher.ResponseData;
  controller: AbortController;
}

export const isAbortError = (err: unknown): boolean => typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'AbortError';

/** The SDKs' rule: the server's `x-should-retry` when it says, else request timeouts, lock timeouts, rate limits and 5xx. */
function shouldRetry(status: number, headers: ResponseHeaders): boolean {
  const header = headers['x-should-retry'];
  if (header === 'true') return true;
  if (header === 'false') return false;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

export const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** The SDK's wait before a retry: what the server asked for, else exponential backoff with jitter. */
function retryDelayMs(headers: ResponseHeaders | undefined, retriesLeft: number, maxRetries: number, bounded: boolean): number {
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
  if (ms !== undefined && (!bounded || (ms > 0 && ms <= 2 ** 31 - 1))) return ms;
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

/** A body's failure as fetch reports it: the abort when aborted, else TypeError("terminated"), which the adapters read as a lost connection. */
function bodyFailure(err: unknown, signal: AbortSignal): unknown {
  if (signal.aborted || isAbortError(err)) return signal.reason ?? err;
  return new TypeError('terminated', { cause: err });
}

/** Drops a body nobody will read (undici reports the destruction as an error, which nobody hears). */
function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** A wait that ends early, without failing, when `signal` aborts (Anthropic's SDK); without a signal it runs out. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Posts a body as the SDK would and resolves with a successful answer whose head has arrived;
 * retries as the SDK does, each attempt with its own timeout until its head. `signal` aborts the
 * attempt and, after the head, the body: it stays wired to the request until the body ends.
 */
export function directPoster<Sdk>(
  opts: DirectClientOptions<Sdk>,
  build: (sdk: Sdk, retryCount: number) => Promise<Built>,
  flavour: WireFlavour,
): (body: string, signal: AbortSignal) => Promise<Answer> {
  const { errors, anthropicRetryWait = false } = flavour;
  const prepare = (): Promise<Prepared> => prepareRequests((retryCount) => build(opts.sdk, retryCount), opts.maxRetries, opts.egress);
  let prepared: Prepared | undefined;
  let preparing: Promise<Prepared> | undefined;
  // The dispatcher's own `request` rather than undici's top-level one, which parses the URL and
  // spreads the options into a new object on every call (issue 21: about 1.5 µs, and a hidden class
  // of its own each time, so that undici's reads of it missed V8's inline caches).
  const dispatcher = opts.dispatcher ?? new Agent();
  const wait = (ms: number, signal: AbortSignal): Promise<void> => sleep(ms, anthropicRetryWait ? signal : undefined);

  return async function send(body, signal) {
    const { origin, path, headers } = prepared ?? (prepared = await (preparing ??= prepare().finally(() => (preparing = undefined))));
    for (let retriesLeft = opts.maxRetries; ; retriesLeft--) {
      if (signal.aborted) throw errors.userAbort();
      const controller = new AbortController();
      const abort = (): void => controller.abort();
      signal.addEventListener('abort', abort, { once: true });
      const timer = setTimeout(abort, opts.timeoutMs);
      let res: Dispatcher.ResponseData;
      try {
        res = await dispatcher.request({ origin, path, method: 'POST', headers: headers[opts.maxRetries - retriesLeft], body, signal: controller.signal });
      } catch (err) {
        signal.removeEventListener('abort', abort);
        if (signal.aborted) throw errors.userAbort();
        const timedOut = controller.signal.aborted || /timed? ?out/i.test(String(err) + (err instanceof Error && 'cause' in err ? String(err.cause) : ''));
        if (retriesLeft > 0) {
          await wait(retryDelayMs(undefined, retriesLeft, opts.maxRetries, anthropicRetryWait), signal);
          continue;
        }
        if (timedOut) throw errors.timeout();
        throw errors.connection(err instanceof Error ? err : undefined);
      } finally {
        clearTimeout(timer);
      }
      res.body.once('close', () => signal.removeEventListener('abort', abort));
      if (res.statusCode >= 200 && res.statusCode < 300) return { res, controller };
      if (retriesLeft > 0 && shouldRetry(res.statusCode, res.headers)) {
        discard(res.body);
        await wait(retryDelayMs(res.headers, retriesLeft, opts.maxRetries, anthropicRetryWait), signal);
        continue;
      }
      const text = await res.body.text().catch((err: unknown) => (err instanceof Error ? err.message : String(err)));
      const json = safeJson(text) as Record<string, unknown> | undefined;
      throw errors.status(res.statusCode, json, json ? undefined : text, res.headers);
    }
  };
}

/** A successful answer's body as the SDKs read one that is not a stream: JSON by content type, else text; nothing for a 204. */
export async function readAnswer({ res, controller }: Answer): Promise<unknown> {
  const type = one(res.headers['content-type'])?.split(';')[0]?.trim();
  let text: string;
  try {
    if (res.statusCode === 204) {
      res.body.resume();
      return null;
    }
    text = await res.body.text();
  } catch (err) {
    throw bodyFailure(err, controller.signal);
  }
  if (type?.includes('application/json') || type?.endsWith('+json')) {
    if (one(res.headers['content-length']) === '0') return undefined;
    return JSON.parse(text);
  }
  return text;
}

export interface ServerSentEvent {
  event: string | null;
  data: string;
}

/** What an SDK makes of one event: an item to yield, nothing (skipped), or the end of the items. */
export const END = Symbol('end of the stream');

/**
 * The items of a server-sent event stream, as an SDK's `Stream` yields them: `read` turns each event
 * into an item, skips it (undefined), ends the items (END: the rest of the body is read and
 * dropped) or throws. An abort (the caller, the idle guard) ends the iteration quietly; an iteration
 * left early aborts the request.
 */
export async function* sseItems<T>(answer: Answer, read: (sse: ServerSentEvent) => T | undefined | typeof END): AsyncGenerator<T> {
  const { res, controller } = answer;
  let done = false;
  try {
    for await (const sse of sseEvents(res.body, controller.signal)) {
      if (done) continue;
      const item = read(sse);
      if (item === END) done = true;
      else if (item !== undefined) yield item;
    }
    done = true;
  } catch (err) {
    if (isAbortError(err)) return;
    throw err;
  } finally {
    if (!done) {
      controller.abort();
      discard(res.body);
    }
  }
}

/**
 * Server-sent events from a body, as the SDKs' decoders read them: lines end at \n, \r\n or \r (a
 * \r that ends the body ends its line too); a byte-order mark that starts a line is dropped; `data`
 * lines of an event are joined with \n; comments and unknown fields are skipped; an event ends at a
 * blank line, and one the body ends before is dropped.
 */
async function* sseEvents(body: Dispatcher.ResponseData['body'], signal: AbortSignal): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  let buffer = '';
  let event: string | null = null;
  let data: string[] = [];
  const line = (text: string): ServerSentEvent | undefined => {
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
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
  // The \r held back for a \n that never came ended its line; what follows the last line end is an
  // unfinished event, which the SDKs drop too.
  if (buffer.endsWith('\r')) {
    const sse = line(buffer.slice(0, -1));
    if (sse) yield sse;
  }
}
