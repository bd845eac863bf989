/**
 * A local Amazon Bedrock runtime that the real @aws-sdk/client-bedrock-runtime talks to. It speaks
 * the Converse wire protocol (REST-JSON, errors named by the `x-amzn-errortype` header) and
 * ConverseStream's `application/vnd.amazon.eventstream` binary frames, over plain HTTP/1.1 on
 * 127.0.0.1. It checks that a SigV4 Authorization header is present but does not verify the
 * signature: the fake has no secret to verify it against.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { billedInputTokens, type FakeBilling } from './billing.js';
import { replyWords, type FakeFault, type FakeProviderServer, type RecordedRequest, type RequestCounts } from './types.js';

/** An exception event ConverseStream sends mid-stream, after `afterWords` deltas. */
export interface StreamException {
  /** The event-stream member name, e.g. `throttlingException`, `modelStreamErrorException`. */
  type: string;
  message: string;
  afterWords: number;
}

export interface FakeBedrockServer extends FakeProviderServer {
  /** The next streamed call sends `afterWords` deltas, then this exception event, then ends. */
  failNextStreamWith(exception: StreamException): void;
  /**
   * Reports this many prompt tokens as read from / written to the prompt cache. As Bedrock does,
   * they are then left out of `inputTokens`, which counts only the rest of the prompt.
   */
  setPromptCache(cache: { readTokens: number; writeTokens: number }): void;
}

/** The error Bedrock names in `x-amzn-errortype` for each status (API reference); others fall back by class. */
const ERROR_TYPES: Record<number, string> = {
  400: 'ValidationException',
  403: 'AccessDeniedException',
  404: 'ResourceNotFoundException',
  408: 'ModelTimeoutException',
  424: 'ModelErrorException',
  429: 'ThrottlingException',
  500: 'InternalServerException',
  503: 'ServiceUnavailableException',
};

function errorType(status: number): string {
  return ERROR_TYPES[status] ?? (status >= 500 ? 'InternalServerException' : 'ValidationException');
}

interface ConverseBody {
  system: string | undefined;
  messages: { role: string; content: string }[];
  maxTokens: number;
}

/** Reads the fields the fake needs from a Converse request body; undefined when it is not one. */
function parseConverse(body: unknown): ConverseBody | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as { system?: unknown; messages?: unknown; inferenceConfig?: { maxTokens?: unknown } };
  if (!Array.isArray(b.messages) || b.messages.length === 0) return undefined;
  const text = (blocks: unknown): string =>
    Array.isArray(blocks) ? blocks.map((x) => (typeof x?.text === 'string' ? x.text : '')).join(' ') : '';
  const messages = b.messages.map((m: { role?: unknown; content?: unknown }) => ({
    role: String(m?.role),
    content: text(m?.content),
  }));
  const maxTokens = b.inferenceConfig?.maxTokens;
  if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && (maxTokens as number) >= 1)) return undefined;
  return {
    system: Array.isArray(b.system) ? text(b.system) : undefined,
    messages,
    // Bedrock's own default depends on the model; the fake's is generous.
    maxTokens: typeof maxTokens === 'number' ? maxTokens : 4096,
  };
}

/**
 * Starts the fake on 127.0.0.1 (a free port). Besides Converse and ConverseStream it answers
 * CountTokens (`POST /model/{modelId}/count-tokens` with `{ "input": { "converse": { messages,
 * system } } }`) with `{ "inputTokens": n }`, n being what Converse bills for the same input.
 * `billing` chooses how input is billed and counted: whitespace words (default) or a real BPE
 * tokenizer (billing.ts).
 */
export async function startFakeBedrock(opts: { latencyMs?: number; billing?: FakeBilling } = {}): Promise<FakeBedrockServer> {
  const requests: RecordedRequest[] = [];
  const counts: RequestCounts = { received: 0, completed: 0, aborted: 0 };
  const faults: FakeFault[] = [];
  const streamExceptions: StreamException[] = [];
  let latencyMs = opts.latencyMs ?? 0;
  let wordDelayMs = 0;
  let endDelayMs = 0;
  /** Bumped by reset(): a request from before it no longer counts. */
  let generation = 0;
  let cache = { readTokens: 0, writeTokens: 0 };
  const sockets = new Set<Socket>();
  const codec = new EventStreamCodec(toUtf8, fromUtf8);
  const cutByFake = new WeakSet<ServerResponse>();

  function cut(res: ServerResponse): void {
    cutByFake.add(res);
    res.destroy();
  }

  function frame(eventType: string, payload: unknown, raw?: string): Uint8Array {
    return codec.encode({
      headers: {
        ':event-type': { type: 'string', value: eventType },
        ':content-type': { type: 'string', value: 'application/json' },
        ':message-type': { type: 'string', value: 'event' },
      },
      body: fromUtf8(raw ?? JSON.stringify(payload)),
    });
  }

  function exceptionFrame(e: StreamException): Uint8Array {
    return codec.encode({
      headers: {
        ':exception-type': { type: 'string', value: e.type },
        ':content-type': { type: 'string', value: 'application/json' },
        ':message-type': { type: 'string', value: 'exception' },
      },
      body: fromUtf8(JSON.stringify({ message: e.message })),
    });
  }

  function sendError(res: ServerResponse, rec: RecordedRequest, status: number, message: string): void {
    res.writeHead(status, {
      'content-type': 'application/json',
      // Bedrock suffixes the type with its service namespace; the SDK keeps what precedes the ':'.
      'x-amzn-errortype': `${errorType(status)}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
      'x-amzn-requestid': randomUUID(),
    });
    res.end(JSON.stringify({ message }), () => (rec.completed = true));
  }

  /** Waits `ms` (none when 0); false when the client left meanwhile. */
  function pause(res: ServerResponse, ms: number): Promise<boolean> {
    if (ms === 0 || res.destroyed) return Promise.resolve(!res.destroyed);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        res.off('close', gone);
        resolve(true);
      }, ms);
      const gone = (): void => {
        clearTimeout(timer);
        resolve(false);
      };
      res.once('close', gone);
    });
  }

  /** Writes then waits until the bytes are handed to the socket, so a cut that follows keeps them. */
  function write(res: ServerResponse, chunk: Uint8Array | string): Promise<void> {
    return new Promise((resolve) => res.write(chunk, () => resolve()));
  }

  /** CountTokens: the input tokens Converse would bill for the request's messages and system prompt. */
  async function countTokens(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, rawModelId: string): Promise<void> {
    const auth = req.headers.authorization;
    if (typeof auth !== 'string' || !auth.startsWith('AWS4-HMAC-SHA256')) {
      return sendError(res, rec, 403, 'Missing or invalid SigV4 Authorization header.');
    }
    let modelId = '';
    try {
      modelId = decodeURIComponent(rawModelId);
    } catch {
      // Left empty: rejected below.
    }
    if (modelId.trim() === '') return sendError(res, rec, 400, `The model id "${rawModelId}" is not valid.`);
    const input = (rec.body as { input?: { converse?: unknown; invokeModel?: unknown } } | undefined)?.input;
    if (input?.invokeModel !== undefined) return sendError(res, rec, 400, 'The fake counts Converse input only.');
    const call = parseConverse(input?.converse);
    if (!call) return sendError(res, rec, 400, 'The request has no input.converse with at least one message.');
    const inputTokens = await billedInputTokens('bedrock', opts.billing ?? 'words', call);
    res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-requestid': randomUUID() });
    res.end(JSON.stringify({ inputTokens }), () => (rec.completed = true));
  }

  async function answer(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, rawModelId: string, streamed: boolean): Promise<void> {
    const auth = req.headers.authorization;
    if (typeof auth !== 'string' || !auth.startsWith('AWS4-HMAC-SHA256')) {
      return sendError(res, rec, 403, 'Missing or invalid SigV4 Authorization header.');
    }
    let modelId = '';
    try {
      // The SDK percent-encodes the label: `:` in model ids, `/` in inference-profile ARNs.
      modelId = decodeURIComponent(rawModelId);
    } catch {
      // Left empty: rejected below like any invalid model id.
    }
    if (modelId.trim() === '') return sendError(res, rec, 400, `The model id "${rawModelId}" is not valid.`);
    const call = parseConverse(rec.body);
    if (!call) {
      return sendError(res, rec, 400, 'The request body is not a Converse request with at least one message and a positive maxTokens.');
    }

    const fault = faults.shift();
    const exception = streamed ? streamExceptions.shift() : undefined;
    if (latencyMs > 0) {
      await new Promise((r) => setTimeout(r, latencyMs));
      if (rec.aborted) return;
    }
    if (fault?.kind === 'hang') return;
    if (fault?.kind === 'status') return sendError(res, rec, fault.status, `Injected failure ${fault.status}.`);

    const lastUser = [...call.messages].reverse().find((m) => m.role === 'user')?.content ?? '';
    const inputTokens = await billedInputTokens('bedrock', opts.billing ?? 'words', call);
    const stop = fault?.kind === 'stop' ? fault : undefined;
    const words = replyWords('bedrock', lastUser, Math.min(call.maxTokens, stop?.afterWords ?? Number.MAX_SAFE_INTEGER));
    const stopReason = stop ? (stop.reason === 'refusal' ? 'content_filtered' : 'stop_sequence') : words.length >= call.maxTokens ? 'max_tokens' : 'end_turn';
    const cached = cache.readTokens + cache.writeTokens;
    const leftOut = fault?.kind === 'leaveOutUsage' ? fault.what : undefined;
    const usage = leftOut === 'all' ? undefined : {
      ...(leftOut ? {} : { inputTokens: inputTokens - cached }),
      outputTokens: words.length,
      totalTokens: inputTokens + words.length,
      ...(cached > 0 ? { cacheReadInputTokens: cache.readTokens, cacheWriteInputTokens: cache.writeTokens } : {}),
    };
    const metrics = { latencyMs: latencyMs + 1 };
    const requestId = randomUUID();

    if (!streamed) {
      res.writeHead(200, { 'content-type': 'application/json', 'x-amzn-requestid': requestId });
      if (fault?.kind === 'malformed') return void res.end('{"output": {"message": <html>not json', () => (rec.completed = true));
      if (fault?.kind === 'misshapen') return void res.end(JSON.stringify({ output: {}, stopReason, metrics }), () => (rec.completed = true));
      const body = JSON.stringify({
        output: { message: { role: 'assistant', content: [{ text: words.join('') }] } },
        stopReason,
        usage,
        metrics,
      });
      if (fault?.kind === 'cut') {
        await write(res, body.slice(0, Math.floor(body.length / 2)));
        return cut(res);
      }
      if (endDelayMs > 0) {
        res.flushHeaders();
        if (!(await pause(res, endDelayMs))) return;
      }
      return void res.end(body, () => (rec.completed = true));
    }

    res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-requestid': requestId });
    await write(res, frame('messageStart', { role: 'assistant' }));
    if (fault?.kind === 'cut' && fault.earlyUsage) await write(res, frame('metadata', { usage: { inputTokens: 1, outputTokens: 1, totalTokens: 2 }, metrics }));
    if (fault?.kind === 'malformed') {
      await write(res, frame('contentBlockDelta', undefined, '{"contentBlockIndex":0,"delta":{"text": not json'));
      return void res.end(() => (rec.completed = true));
    }
    const stopAfter = fault?.kind === 'cut' ? fault.afterWords : exception ? exception.afterWords : words.length;
    for (const text of words.slice(0, stopAfter)) {
      if (wordDelayMs > 0) await new Promise((r) => setTimeout(r, wordDelayMs));
      if (rec.aborted) return;
      await write(res, frame('contentBlockDelta', { contentBlockIndex: 0, delta: { text } }));
    }
    if (fault?.kind === 'cut') return cut(res);
    if (exception) {
      await write(res, exceptionFrame(exception));
      return void res.end(() => (rec.completed = true));
    }
    await write(res, frame('contentBlockStop', { contentBlockIndex: 0 }));
    await write(res, frame('messageStop', { stopReason }));
    await write(res, frame('metadata', { usage, metrics }));
    if (!(await pause(res, endDelayMs))) return;
    res.end(() => (rec.completed = true));
  }

  const server = createServer((req, res) => {
    // Counted from arrival, so a client that leaves while its body is still coming is an abort too.
    counts.received += 1;
    const born = generation;
    res.on('close', () => {
      if (born !== generation) return;
      if (res.writableFinished) counts.completed += 1;
      else if (!cutByFake.has(res)) counts.aborted += 1;
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = raw;
      try {
        body = raw === '' ? undefined : JSON.parse(raw);
      } catch {
        // Kept as text: answer() rejects it as a ValidationException.
      }
      const url = new URL(req.url ?? '/', 'http://fake');
      const rec: RecordedRequest = {
        method: req.method ?? '',
        path: url.pathname,
        headers: req.headers,
        body,
        aborted: false,
        completed: false,
      };
      requests.push(rec);
      // The connection closing before the fake wrote its last byte is an abort; a cut the fake made is not.
      res.on('close', () => {
        rec.answered = res.headersSent && res.statusCode === 200;
        if (!rec.completed && !cutByFake.has(res)) rec.aborted = true;
      });
      const match = /^\/model\/([^/]+)\/(converse|converse-stream|count-tokens)$/.exec(url.pathname);
      if (req.method !== 'POST' || !match) {
        return sendError(res, rec, 404, `No route for ${req.method} ${url.pathname}.`);
      }
      if (match[2] === 'count-tokens') return void countTokens(req, res, rec, match[1]!).catch(() => res.destroy());
      answer(req, res, rec, match[1]!, match[2] === 'converse-stream').catch(() => res.destroy());
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    kind: 'bedrock',
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    failNext(fault, times = 1) {
      for (let i = 0; i < times; i++) faults.push(fault);
    },
    failNextStreamWith(exception) {
      streamExceptions.push(exception);
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    setWordDelay(ms) {
      wordDelayMs = ms;
    },
    setEndDelay(ms) {
      endDelayMs = ms;
    },
    counts,
    setPromptCache(c) {
      cache = { ...c };
    },
    reset() {
      requests.length = 0;
      faults.length = 0;
      streamExceptions.length = 0;
      latencyMs = 0;
      wordDelayMs = 0;
      endDelayMs = 0;
      generation += 1;
      counts.received = counts.completed = counts.aborted = 0;
      cache = { readTokens: 0, writeTokens: 0 };
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
