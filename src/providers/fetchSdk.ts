/**
 * Network plumbing shared by the adapters whose SDKs take a `fetch` (Anthropic, OpenAI): how a
 * request leaves, and a guard for streams that go quiet.
 */
import { Readable } from 'node:stream';
import { getGlobalDispatcher, ProxyAgent, request, type Dispatcher } from 'undici';
import { guardedFetch } from './egress.js';
import type { ProviderBuildOptions } from './provider.js';

/**
 * How the SDK reaches the network: through the proxy when one is set, refusing hosts off the egress
 * allowlist, and never following a redirect, which would otherwise leave without the allowlist
 * seeing where it goes. The result is spread into the SDK's client options.
 */
export function sdkTransport(name: string, opts: ProviderBuildOptions): { fetch: typeof fetch; fetchOptions: RequestInit } {
  const base = requestFetch(opts.proxy ? new ProxyAgent(opts.proxy) : undefined);
  return {
    fetch: opts.egressAllow ? guardedFetch(name, opts.egressAllow, base) : base,
    fetchOptions: { redirect: 'manual' },
  };
}

const NO_BODY = new Set([101, 204, 205, 304]);

/**
 * A `fetch` for the SDKs on undici's `request`, which costs about a quarter of the CPU of the
 * WHATWG fetch for the same call (measured in the benchmark: fetch spends most of its time in spec
 * bookkeeping the SDKs do not need). It takes what the SDKs send, a URL with a string or byte body,
 * and answers a standard Response whose body streams as it arrives; anything else (a Request
 * object, a form or stream body) goes to the global fetch. It never follows a redirect.
 */
export function requestFetch(dispatcher?: Dispatcher): typeof fetch {
  return async (input, init) => {
    const body = init?.body;
    const simpleBody = body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
    if (input instanceof Request || !simpleBody || init?.redirect === 'follow') return fetch(input, init);
    const signal = init?.signal ?? undefined;
    const headers = headerRecord(init?.headers);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(String(input), {
        method: (init?.method ?? 'GET') as Dispatcher.HttpMethod,
        headers,
        body: body ?? undefined,
        signal,
        dispatcher: dispatcher ?? getGlobalDispatcher(),
      });
    } catch (err) {
      // What fetch throws: the abort reason when aborted, else TypeError("fetch failed") with a cause.
      throw signal?.aborted ? abortReason(signal) : new TypeError('fetch failed', { cause: err });
    }
    const out = webHeaders(res.headers);
    if (NO_BODY.has(res.statusCode)) {
      res.body.resume();
      return new Response(null, { status: res.statusCode, headers: out });
    }
    return new Response(webBody(res.body, signal), { status: res.statusCode, headers: out });
  };
}

/** Request headers as the plain record undici's `request` takes (names lowercased, as Headers gives them). */
export function headerRecord(given: HeadersInit | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  // The SDKs send a Headers already: read it as it is rather than copy it into a new one first.
  (given instanceof Headers ? given : new Headers(given)).forEach((value, key) => {
    headers[key] = value;
  });
  return headers;
}

/** An answer's headers from undici's record, as the web Headers the SDKs read. */
export function webHeaders(headers: Dispatcher.ResponseData['headers']): Headers {
  const out = new Headers();
  for (const [key, value] of Object.entries(headers)) {
    if (Array.isArray(value)) for (const v of value) out.append(key, v);
    else if (value !== undefined) out.append(key, value);
  }
  return out;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * The response body as a web stream that fails the way fetch's does: with the abort reason when
 * the caller aborted, else with TypeError("terminated") when the connection drops mid-body, which is
 * what the adapters recognise as a lost connection.
 */
function webBody(body: Readable, signal: AbortSignal | undefined): ReadableStream<Uint8Array> {
  // Once the stream is closed, errored or cancelled, a late event from the socket must not touch the
  // controller: enqueue or close on a finished stream throws, inside an event handler.
  let finished = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      body.on('data', (chunk: Buffer) => {
        if (finished) return;
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) body.pause();
      });
      body.once('end', () => {
        if (finished) return;
        finished = true;
        controller.close();
      });
      body.once('error', (err) => {
        if (finished) return;
        finished = true;
        controller.error(signal?.aborted ? abortReason(signal) : new TypeError('terminated', { cause: err }));
      });
    },
    pull() {
      body.resume();
    },
    cancel(reason) {
      finished = true;
      body.destroy(reason instanceof Error ? reason : undefined);
    },
  });
}

/**
 * Aborts a stream that goes quiet for `ms`. The SDK's own timeout stops counting once the response
 * headers arrive, so without this a stream stalled midway would hold its budget reservation forever.
 *
 * `touch` (every chunk) only notes the time: one timer runs, and when it fires it aborts if nothing
 * came for `ms`, else waits the rest. (A timer cleared and set again on every chunk cost a timer a
 * chunk; issue 21.) The caller's abort is forwarded to the same controller rather than joined to it
 * by a third signal. Before the first `touch` (the stream's head read), the abort waits
 * ANSWER_GRACE_MS and the next poll for I/O, as a plain request's does (headGuard): a head already
 * on the wire when the caller left is read, and the call charged as begun, not thrown away unread
 * (a busy loop, a burst or a cold start, left such calls CANCELLED at nothing while the provider
 * billed them). After it, the abort is forwarded at once.
 */
export function idleGuard(ms: number, outer: AbortSignal | undefined) {
  const controller = new AbortController();
  let fired = false;
  let last = 0;
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    const quiet = performance.now() - last;
    if (quiet < ms) {
      timer = setTimeout(check, ms - quiet);
      return;
    }
    timer = undefined;
    fired = true;
    controller.abort();
  };
  const caller = streamAbort(outer, controller);
  return {
    signal: controller.signal,
    /** Whether the stream went quiet (not whether the caller left). */
    get fired(): boolean {
      return fired;
    },
    touch(): void {
      caller.begin();
      last = performance.now();
      timer ??= setTimeout(check, ms);
    },
    stop(): void {
      clearTimeout(timer);
      timer = undefined;
      caller.stop();
    },
  };
}

/**
 * How long a caller's abort waits before it reaches a plain request: an answer already on the wire
 * when the caller left (its bytes sent, not yet read) is then read and charged rather than thrown
 * away. The provider works on for at most this long when it had not answered.
 */
export const ANSWER_GRACE_MS = 20;

/**
 * The caller's abort forwarded to a stream's request (`controller`, a new one by default; idleGuard
 * passes its own): ANSWER_GRACE_MS and a poll for I/O late until `begin()` (the stream's head read),
 * at once after, so a head already on the wire when the caller left is read, not thrown away.
 */
export function streamAbort(outer: AbortSignal | undefined, controller = new AbortController()) {
  let begun = false;
  let grace: NodeJS.Timeout | undefined;
  const forward = (): void => {
    if (begun) controller.abort(outer!.reason);
    // Timers run before the poll for I/O: the abort then waits for the turn's I/O to be read first.
    else grace = setTimeout(() => setImmediate(() => controller.abort(outer!.reason)), ANSWER_GRACE_MS);
  };
  if (outer?.aborted) controller.abort(outer.reason);
  else outer?.addEventListener('abort', forward, { once: true });
  return {
    signal: controller.signal,
    begin(): void {
      begun = true;
    },
    stop(): void {
      clearTimeout(grace);
      outer?.removeEventListener('abort', forward);
    },
  };
}

/**
 * The signal for a request answered in one body (no stream). The caller's abort reaches the
 * request (after ANSWER_GRACE_MS) unless the provider's head has arrived (`answered()`); from then
 * on the provider has done the work and bills it, so the body is read to its end even if the
 * caller has left (within `ms`), and the call is charged what the provider reports, not nothing.
 */
export function headGuard(outer: AbortSignal | undefined, ms: number) {
  const controller = new AbortController();
  let answered = false;
  let grace: NodeJS.Timeout | undefined;
  let timer: NodeJS.Timeout | undefined;
  const forward = (): void => {
    // Timers run before the poll for I/O: the abort then waits for the turn's I/O (a head that has
    // just arrived) to be read first.
    grace = setTimeout(() => setImmediate(() => answered || controller.abort(outer?.reason)), ANSWER_GRACE_MS);
  };
  outer?.addEventListener('abort', forward, { once: true });
  return {
    signal: controller.signal,
    /** Whether the provider's head had arrived. */
    get wasAnswered(): boolean {
      return answered;
    },
    answered(): void {
      if (answered) return;
      answered = true;
      outer?.removeEventListener('abort', forward);
      timer = setTimeout(() => controller.abort(), ms);
    },
    stop(): void {
      outer?.removeEventListener('abort', forward);
      clearTimeout(timer);
      clearTimeout(grace);
    },
  };
}
