/**
 * Raw HTTP for hostile-input tests: requests whose bytes, framing and headers a normal client
 * would refuse to send (chunked bodies, invalid UTF-8, CR/LF inside header values, no Host).
 */
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

export interface RawRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  /** Sent with a Content-Length. */
  body?: string | Buffer;
  /** Sent with Transfer-Encoding: chunked, one write per chunk. */
  chunks?: Array<string | Buffer>;
}

/** One request through node:http; resolves with the whole response, rejects after `timeoutMs`. */
export function sendRaw(baseUrl: string, req: RawRequest, timeoutMs = 10_000): Promise<RawResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...req.headers };
    if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
    const r = request(
      { host: url.hostname, port: url.port, path: req.path ?? url.pathname, method: req.method ?? 'POST', headers, timeout: timeoutMs },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(parts).toString('utf8') }));
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    r.on('error', reject);
    if (req.chunks) {
      for (const c of req.chunks) r.write(c);
      r.end();
    } else r.end(req.body);
  });
}

/** Writes bytes on a bare TCP socket and resolves with everything read until the server closes. */
export function sendOnSocket(baseUrl: string, payload: string | Buffer, timeoutMs = 10_000): Promise<string> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    const parts: Buffer[] = [];
    const done = () => resolve(Buffer.concat(parts).toString('latin1'));
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('close', done);
    // A reset after the answer was read is the server hanging up on a bad client, not a failure.
    socket.on('error', () => undefined);
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(new Error(`socket still open after ${timeoutMs} ms; read so far: ${Buffer.concat(parts).toString('latin1')}`));
    });
    socket.write(payload);
  });
}

/**
 * Writes `pieces` on one fresh connection (`gapMs` apart; the socket is never ended, so a caller
 * that stops sending stalls) and resolves with everything read, once the server closes the
 * connection (`closed`) or after `timeoutMs`, when it is destroyed. Never rejects: a test of a
 * stalled caller asserts on `closed` and `ms`.
 */
export function exchangeOnSocket(baseUrl: string, pieces: Array<string | Buffer>, opts: { gapMs?: number; timeoutMs?: number } = {}): Promise<{ text: string; closed: boolean; ms: number }> {
  const url = new URL(baseUrl);
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = connect(Number(url.port), url.hostname);
    const parts: Buffer[] = [];
    const finish = (closed: boolean) => resolve({ text: Buffer.concat(parts).toString('utf8'), closed, ms: Date.now() - started });
    const timer = setTimeout(() => {
      socket.removeAllListeners('close');
      socket.destroy();
      finish(false);
    }, opts.timeoutMs ?? 10_000);
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      finish(true);
    });
    void (async () => {
      for (const piece of pieces) {
        if (socket.destroyed) return;
        socket.write(piece);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
    })();
  });
}

/** Status and JSON body of a raw HTTP/1.1 response text. */
export function parseRawResponse(raw: string): { status: number; headers: string; body: unknown } {
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(raw)?.[1] ?? 0);
  const split = raw.indexOf('\r\n\r\n');
  const headers = split < 0 ? raw : raw.slice(0, split);
  const rest = split < 0 ? '' : raw.slice(split + 4);
  let body: unknown;
  try {
    body = rest ? JSON.parse(rest) : undefined;
  } catch {
    body = rest;
  }
  return { status, headers, body };
}

/** The JSON-RPC message(s) in a streamable HTTP answer: JSON, or the data lines of an SSE stream. */
export function rpcMessages(res: RawResponse): unknown[] {
  const type = String(res.headers['content-type'] ?? '');
  if (type.includes('text/event-stream')) {
    return res.text
      .split('\n')
      .filter((l) => l.startsWith('data: ') && l.length > 6)
      .map((l) => JSON.parse(l.slice(6)) as unknown);
  }
  return res.text ? [JSON.parse(res.text) as unknown] : [];
}
