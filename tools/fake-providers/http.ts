/**
 * Plumbing every fake provider server shares: a node:http server on 127.0.0.1 (port 0), a record
 * of each request, the fault queue, an abortable latency, reset and a close that never hangs.
 * A fake only writes its wire format in a `FakeHandler`; everything provider-neutral lives here.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import type { FakeFault, RecordedRequest, RequestCounts } from './types.js';

/** One request as a fake's handler sees it. */
export interface FakeCall {
  req: IncomingMessage;
  res: ServerResponse;
  /** The entry in `requests`; its body is the parsed JSON, or the raw text when it is not JSON. */
  record: RecordedRequest;
  /** The path without its query string. */
  path: string;
  /** The fault queued for this request. `hang` is handled here and never reaches a handler. */
  fault?: Exclude<FakeFault, { kind: 'hang' }>;
  /** False once the client has gone; a handler stops writing then. */
  isOpen(): boolean;
  /** Destroys the connection on purpose (a `cut` fault), after what was written has been flushed. */
  cut(): Promise<void>;
  /** Waits the word delay before a streamed word; false when the client has gone meanwhile. */
  wordPause(): Promise<boolean>;
  /** Waits the end delay before the last write of a successful answer; false when the client has gone. */
  endPause(): Promise<boolean>;
  /** Whether an end delay is set. */
  readonly endDelayed: boolean;
}

export type FakeHandler = (call: FakeCall) => Promise<void> | void;

/** The provider-neutral half of a `FakeProviderServer`. */
export interface FakeHttpServer {
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  readonly origin: string;
  readonly port: number;
  readonly requests: RecordedRequest[];
  failNext(fault: FakeFault, times?: number): void;
  setLatency(ms: number): void;
  setWordDelay(ms: number): void;
  setEndDelay(ms: number): void;
  readonly counts: Readonly<RequestCounts>;
  /** Requests between their arrival and the end of their exchange now, and the most at once since the start or the last reset. */
  readonly inFlight: Readonly<{ now: number; max: number }>;
  reset(): void;
  close(): Promise<void>;
}

/** How long a cut waits after the last flushed write, so the client reads it before the reset. */
const CUT_GRACE_MS = 100;

/** Starts a fake on 127.0.0.1 (a free port) that records every request and hands it to `handle`. */
export async function startFakeHttpServer(handle: FakeHandler): Promise<FakeHttpServer> {
  const requests: RecordedRequest[] = [];
  const counts: RequestCounts = { received: 0, completed: 0, aborted: 0 };
  const inFlight = { now: 0, max: 0 };
  let faults: FakeFault[] = [];
  let latencyMs = 0;
  let wordDelayMs = 0;
  let endDelayMs = 0;
  let closing = false;
  /** Bumped by reset(): a request from before it no longer counts. */
  let generation = 0;

  const server = http.createServer((req, res) => {
    void serve(req, res).catch(() => {
      // A handler bug must not leave the client waiting forever.
      if (!res.headersSent) sendJson(res, 500, { error: 'fake provider handler failed' });
      else res.destroy();
    });
  });

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Counted from arrival: a client that leaves while its body is still coming is an abort too.
    counts.received += 1;
    inFlight.now += 1;
    inFlight.max = Math.max(inFlight.max, inFlight.now);
    const born = generation;
    let record: RecordedRequest | undefined;
    let cutByFake = false;
    res.on('finish', () => {
      if (born === generation) counts.completed += 1;
      if (record) record.completed = true;
    });
    res.on('close', () => {
      inFlight.now -= 1;
      if (record) record.answered = res.headersSent && res.statusCode === 200;
      if (res.writableFinished || cutByFake || closing) return;
      if (born === generation) counts.aborted += 1;
      if (record) record.aborted = true;
    });
    let raw: string;
    try {
      raw = await readBody(req);
    } catch {
      return;
    }
    record = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: { ...req.headers },
      body: parseJson(raw),
      aborted: res.closed && !res.writableFinished && !closing,
      completed: false,
    };
    requests.push(record);
    const isOpen = (): boolean => !res.destroyed && !res.writableEnded;

    const fault = faults.shift();
    if (latencyMs > 0 && !(await waitWhileOpen(res, latencyMs))) return;
    if (!isOpen()) return;
    // A hung upstream: accept and say nothing until the client gives up or the server closes.
    if (fault?.kind === 'hang') return;

    const call: FakeCall = {
      req,
      res,
      record,
      path: (req.url ?? '/').split('?')[0] ?? '/',
      fault,
      isOpen,
      async cut() {
        cutByFake = true;
        await new Promise((r) => setTimeout(r, CUT_GRACE_MS));
        res.socket?.destroy();
      },
      wordPause: () => (wordDelayMs > 0 ? waitWhileOpen(res, wordDelayMs) : Promise.resolve(isOpen())),
      endPause: () => (endDelayMs > 0 ? waitWhileOpen(res, endDelayMs) : Promise.resolve(isOpen())),
      endDelayed: endDelayMs > 0,
    };
    await handle(call);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    requests,
    failNext(fault, times = 1) {
      for (let i = 0; i < times; i++) faults.push(fault);
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
    inFlight,
    reset() {
      inFlight.max = inFlight.now;
      requests.length = 0;
      generation += 1;
      counts.received = counts.completed = counts.aborted = 0;
      faults = [];
      latencyMs = 0;
      wordDelayMs = 0;
      endDelayMs = 0;
    },
    close() {
      closing = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Hung and keep-alive connections would otherwise hold close() open forever.
        server.closeAllConnections();
      });
    },
  };
}

/** Waits `ms`, or less if the client disconnects; true when the client is still there. */
function waitWhileOpen(res: ServerResponse, ms: number): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onClose = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      res.off('close', onClose);
      resolve(true);
    }, ms);
    res.once('close', onClose);
  });
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(raw: string): unknown {
  if (raw === '') return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

/** Answers with a JSON body. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * Answers 200 with a JSON body, its head first and its bytes after the end delay (at once without
 * one); nothing more is written when the client left meanwhile.
 */
export async function sendJsonAnswer(call: FakeCall, body: unknown, headers: Record<string, string> = {}): Promise<void> {
  if (!call.endDelayed) return sendJson(call.res, 200, body, headers);
  const text = JSON.stringify(body);
  call.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  call.res.flushHeaders();
  if (await call.endPause()) call.res.end(text);
}

/**
 * Answers 200 with the head of a JSON body and the first half of its bytes, then destroys the
 * connection (a plain call's `cut` fault): the provider answered, and the body never arrived whole.
 */
export async function sendCutJson(call: FakeCall, body: unknown, headers: Record<string, string> = {}): Promise<void> {
  const text = JSON.stringify(body);
  call.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  if (await writeFlushed(call.res, text.slice(0, Math.floor(text.length / 2)))) await call.cut();
}

/** Answers 200 with a body that claims to be JSON and is not (the `malformed` fault). */
export function sendMalformedJson(res: ServerResponse, headers: Record<string, string> = {}): void {
  const text = '{"id": "truncated-by-a-misbehaving-proxy", "content": [';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Starts a Server-Sent Events answer. */
export function openEventStream(res: ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', ...headers });
  res.flushHeaders();
}

/** Writes one chunk and resolves once it was handed to the socket; false when the client has gone. */
export function writeFlushed(res: ServerResponse, chunk: string): Promise<boolean> {
  if (res.destroyed || res.writableEnded) return Promise.resolve(false);
  return new Promise((resolve) => {
    res.write(chunk, (err) => resolve(!err && !res.destroyed));
  });
}

/** The token of an `Authorization: Bearer` header, if there is one. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  return m?.[1]?.trim();
}

/** A corporate forward proxy for tests: tunnels CONNECT and forwards absolute-form requests, counting both. */
export interface FakeProxy {
  readonly url: string;
  /** `host:port` targets, one per CONNECT tunnel or forwarded request, in order. */
  readonly targets: string[];
  close(): Promise<void>;
}

/** Starts the proxy on 127.0.0.1 (a free port). */
export async function startFakeProxy(): Promise<FakeProxy> {
  const targets: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    // Absolute-form request (`GET http://host:port/path`): forward it as is.
    const target = new URL(req.url ?? '');
    targets.push(target.host);
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: target.pathname + target.search, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connect', (req: IncomingMessage, client: net.Socket, head: Buffer) => {
    const [host, port] = (req.url ?? '').split(':');
    targets.push(req.url ?? '');
    const upstream = net.connect(Number(port), host ?? '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream).add(client);
    const end = (): void => {
      upstream.destroy();
      client.destroy();
    };
    upstream.on('error', end).on('close', end);
    client.on('error', end).on('close', end);
  });
  server.on('connection', (s: net.Socket) => sockets.add(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    targets,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
