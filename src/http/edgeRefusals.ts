/**
 * Refusals the HTTP edge makes on its own (a body that is not JSON-RPC, a request before
 * initialize, an unknown session, a refused Host or Origin, an unknown path, unparseable HTTP, a
 * JSON-RPC error from the A2A SDK, in its answer or as the SSE error event that ends its stream):
 * each is recorded through the gateway as one decision event with its code, so the audit trail
 * holds every refused request, not only refused calls. Refusals the pipeline already recorded
 * (authentication, calls, bodies read after authentication) are marked and not recorded twice.
 */
import { STATUS_CODES } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { GatewayError, type ErrorCode } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import type { TransportName } from '../pipeline/context.js';
import { credentialOf, secretOfHeader } from './authMetadata.js';

/** Marks a response whose refusal, if any, the gateway records itself. */
export function markRecorded(res: Response): void {
  res.locals.refusalRecorded = true;
}

/** The code of an edge refusal, from the status the edge answered with. */
export function edgeCode(status: number, credentialSent: boolean): ErrorCode {
  if (status === 401) return credentialSent ? 'AUTH_INVALID' : 'AUTH_REQUIRED';
  if (status === 403) return 'FORBIDDEN';
  if (status === 404) return 'NOT_FOUND';
  if (status === 413) return 'PAYLOAD_TOO_LARGE';
  return 'INVALID_REQUEST';
}

/** The credential an edge refusal records: its caller when it proves one (Gateway.refuse), else fingerprinted; never stored. */
function presented(req: Request): { secret: string } | undefined {
  const secret = presentedSecret(req);
  return secret === undefined ? undefined : { secret };
}


function transportOf(path: string): TransportName {
  if (path.startsWith('/v1/chat/completions') || path.startsWith('/v1/responses')) return 'openai';
  if (path.startsWith('/v1/messages')) return 'anthropic';
  if (path.startsWith('/a2a')) return 'a2a';
  return 'http';
}

/** A short, single-line description of the request for the event's reason. */
function describe(status: number, method: string, path: string): string {
  const shown = path.length > 120 ? `${path.slice(0, 120)}...` : path;
  return `Refused at the HTTP edge: ${status} ${STATUS_CODES[status] ?? ''} for ${method} ${shown}.`;
}

/**
 * Mounted first: when a response finishes with a 4xx that no step recorded, records it. A GET on
 * /mcp answered 405 is the transport's normal answer to a client probing for an SSE stream, not a
 * refusal, and is not recorded.
 */
export function recordEdgeRefusals(gateway: Gateway): RequestHandler {
  return function edgeRefusals(req: Request, res: Response, next: NextFunction) {
    const c = connections.get(req.socket);
    // Behind a response that closes the connection: never answered, so not run (closeAfter).
    if (c?.closedBy) return;
    if (c) {
      c.req = req;
      c.res = res;
      c.open += 1;
    } else connections.set(req.socket, { req, res, open: 1 });
    res.once('close', () => {
      connections.get(req.socket)!.open -= 1;
    });
    res.once('finish', () => {
      const status = res.statusCode;
      if (status < 400 || status >= 500 || res.locals.refusalRecorded) return;
      if (status === 405 && req.method === 'GET' && req.path === '/mcp') return;
      const credential = credentialOf(req) ?? presented(req);
      const refusal = new GatewayError(edgeCode(status, credential !== undefined), describe(status, req.method, req.path), { status });
      void gateway.refuse(refusal, { transport: transportOf(req.path), credential, requestId: res.locals.requestId as string | undefined });
    });
    next();
  };
}

/** Why the edge refused a request Node could not parse, by the status it answered. */
function unparseableWhy(status: number): string {
  if (status === 408) return 'the request did not arrive in time';
  if (status === 431) return 'its headers are too large';
  return 'the request is not valid HTTP/1.1';
}

/** Records a request Node could not parse as HTTP (it never reaches express), answered with `status`. */
export function recordUnparseable(gateway: Gateway, status: number): void {
  const refusal = new GatewayError(edgeCode(status, false), `Refused at the HTTP edge: ${status} ${STATUS_CODES[status] ?? ''} (${unparseableWhy(status)}).`, { status });
  void gateway.refuse(refusal, { transport: 'http' });
}

/** A connection's state at the edge, set before any route runs. */
interface Connection {
  /** The latest request it carried, and its response. */
  req: Request;
  res: Response;
  /** Its responses not yet closed. */
  open: number;
  /** The response after which it closes (`closeAfter`): requests pipelined behind it are not run. */
  closedBy?: Response;
  /** Node found bytes on it that are not HTTP: the edge has dealt with it, and ignores more. */
  faulted?: boolean;
}

const connections = new WeakMap<object, Connection>();

/** The edge's state of a connection that has carried a request. */
export function connectionOf(socket: object): Connection | undefined {
  return connections.get(socket);
}

/**
 * Closes the connection once `res` is written (`Connection: close`), and runs no request pipelined
 * behind it: it would be served and charged, and its answer never sent (a client may then retry it,
 * RFC 9112 9.3.2, and pay twice).
 */
export function closeAfter(req: Request, res: Response): void {
  res.setHeader('Connection', 'close');
  const c = connections.get(req.socket);
  if (c && !c.closedBy) c.closedBy = res;
}

/** Whether this request came on its connection behind a response that closes it. */
function behindClose(req: Request, res: Response): boolean {
  const closedBy = connections.get(req.socket)?.closedBy;
  return closedBy !== undefined && closedBy !== res;
}

/**
 * Records a refusal the edge made of a request a route had begun (its headers were read; its body
 * breaks HTTP/1.1 framing, or did not arrive in time): one event, as whatever credential it
 * presented, under the request id its answer names. The route, which sees its caller "leave",
 * records nothing more (`res.locals.edgeFault`); it recorded a CANCELLED that did not happen too.
 */
export function recordUnparseableRequest(gateway: Gateway, req: Request, res: Response, status: number, requestId: string): void {
  markRecorded(res);
  res.locals.edgeFault = status;
  const path = req.originalUrl.split('?')[0]!;
  const to = path.length > 120 ? `${path.slice(0, 120)}...` : path;
  const refusal = new GatewayError(edgeCode(status, req.headers.authorization !== undefined || req.headers['x-api-key'] !== undefined), `Refused at the HTTP edge while its request to ${to} was read: ${status} ${STATUS_CODES[status] ?? ''} (${unparseableWhy(status)}).`, { status });
  void recordAsCaller(gateway, req, requestId, presentedSecret, refusal);
}

/** The secret a request presents on any way in: `x-api-key` when it sends no Authorization, else the header's bearer token. */
function presentedSecret(req: Request): string | undefined {
  const key = req.headers['x-api-key'];
  if (!req.headers.authorization && typeof key === 'string' && key) return key;
  const header = req.headers.authorization;
  return typeof header === 'string' && header ? secretOfHeader(header) : undefined;
}

/**
 * Mounted after the body parser of /mcp and the A2A endpoint: a client that left before its body
 * could be read (while its credential was checked, say) leaves a request no route can judge, which
 * may have been a call. It is recorded as one CANCELLED event and not served. (A body that was read
 * goes on: the route records the calls in it.)
 */
export function recordUnread(gateway: Gateway): RequestHandler {
  return function unread(req: Request, res: Response, next: NextFunction) {
    const signal = res.locals.signal as AbortSignal | undefined;
    if (!signal?.aborted || req.body != null || res.locals.refusalRecorded) return next();
    markRecorded(res);
    const refusal = new GatewayError('CANCELLED', `The caller disconnected before its request to ${req.path} was read.`);
    void gateway.refuse(refusal, { transport: transportOf(req.originalUrl), credential: credentialOf(req) ?? presented(req), requestId: res.locals.requestId as string | undefined });
  };
}

/**
 * Wraps a route's JSON body parser. A client that leaves while its body is read (the parser's
 * `request.aborted`) leaves a request no route can judge, which may have been a call: it is
 * recorded as one CANCELLED event and not answered (no one is there to read it). Without this the
 * route would refuse it as a body that could not be read, an INVALID_REQUEST that blames the
 * caller's bytes. It is recorded as the caller's: the credential the edge verified (/mcp, A2A),
 * else the one `secretOf` reads, authenticated here as the route would have (a bad one is then
 * recorded as that refusal instead). Every other outcome of the parser goes on to the route.
 */
export function cancelOnLeave(gateway: Gateway, parse: RequestHandler, maxBodyBytes: number, secretOf?: (req: Request) => string | undefined): RequestHandler {
  return function readBody(req: Request, res: Response, next: NextFunction) {
    let done = false;
    let seen = 0;
    // Refused at the edge already (its body broke HTTP framing before this route reached it), or
    // behind a response that closes the connection (pipelined after a 413): over, not run.
    if (res.locals.edgeFault !== undefined || behindClose(req, res)) return;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      req.off('data', count);
      next(err);
    };
    // A body over the limit is refused as soon as that shows (its Content-Length, or the bytes that
    // came), not once the rest has come: the parser reads a refused body to its end before it
    // answers, and a caller that stops sending would hold the connection until the server's request
    // timeout. The rest is not read: the connection closes after the answer.
    const tooLarge = () => {
      closeAfter(req, res);
      finish(Object.assign(new Error('request entity too large'), { type: 'entity.too.large', status: 413 }));
    };
    function count(chunk: Buffer): void {
      seen += chunk.length;
      if (seen > maxBodyBytes) tooLarge();
    }
    if (Number(req.headers['content-length']) > maxBodyBytes) {
      tooLarge();
      return;
    }
    // A compressed body is limited by what it inflates to, which the parser counts on the stream it
    // pipes the body into; it too reads the rest before answering. The inflated bytes are counted
    // here as well, on that stream: past the limit, refused at once. (Only for a compressed body:
    // a property set on every request would cost each a hidden class of its own.)
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding !== 'identity') {
      let inflated = 0;
      const pipe = req.pipe;
      req.pipe = function <T extends NodeJS.WritableStream>(this: Request, dest: T, options?: { end?: boolean }): T {
        (dest as unknown as NodeJS.ReadableStream).on('data', (chunk: Buffer) => {
          inflated += chunk.length;
          if (inflated > maxBodyBytes) tooLarge();
        });
        return pipe.call(this, dest, options) as T;
      };
    }
    void parse(req, res, (err?: unknown) => {
      if (done) return;
      if (res.locals.edgeFault !== undefined) {
        // The edge answered and recorded it while the body was read.
        done = true;
        req.off('data', count);
        return;
      }
      if ((err as { type?: unknown } | undefined)?.type !== 'request.aborted' || res.locals.refusalRecorded) return finish(err);
      done = true;
      req.off('data', count);
      markRecorded(res);
      res.destroy();
      void recordLeft(gateway, req, res.locals.requestId as string | undefined, secretOf);
    });
    // Counted beside the parser's own reading (which it began in `parse`): a parser that took no
    // body (another content type, none sent) has called back already.
    if (!done) req.on('data', count);
  };
}

async function recordLeft(gateway: Gateway, req: Request, requestId: string | undefined, secretOf?: (req: Request) => string | undefined): Promise<void> {
  const path = req.originalUrl.split('?')[0]!;
  const refusal = new GatewayError('CANCELLED', `The caller disconnected while its request to ${path.length > 120 ? `${path.slice(0, 120)}...` : path} was read.`);
  await recordAsCaller(gateway, req, requestId, secretOf, refusal);
}

/**
 * Records `refusal` of a request no route will judge as the caller it presents: verified at the
 * edge already (/mcp, /a2a), else authenticated now with what `secretOf` reads (a credential that
 * is refused is recorded by that authentication instead: one event either way).
 */
async function recordAsCaller(gateway: Gateway, req: Request, requestId: string | undefined, secretOf: ((req: Request) => string | undefined) | undefined, refusal: GatewayError): Promise<void> {
  const transport = transportOf(req.originalUrl);
  let credential = credentialOf(req);
  if (!credential && secretOf) {
    const secret = secretOf(req);
    try {
      const edge = await gateway.authenticate(secret ? { secret } : undefined, { transport, requestId });
      credential = { secret: secret!, verified: { policy: edge.policy, result: edge } };
    } catch {
      // Refused: authentication recorded it.
      return;
    }
  }
  await gateway.refuse(refusal, { transport, credential: credential ?? presented(req), requestId });
}

/** The tollgate code of a JSON-RPC error the A2A SDK answers (its -32001 is an unknown task). */
function rpcErrorCode(rpcCode: number): ErrorCode {
  if (rpcCode === -32001) return 'NOT_FOUND';
  if (rpcCode === -32603) return 'INTERNAL';
  return 'INVALID_REQUEST';
}

/** A JSON-RPC error as an answer carries it. */
interface RpcError {
  code: number;
  message: unknown;
}

/** The error of a JSON-RPC answer, if it is one. */
function rpcErrorOf(body: unknown): RpcError | undefined {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  return error && typeof error.code === 'number' ? (error as RpcError) : undefined;
}

/**
 * The JSON-RPC error an SSE event written as one chunk carries, when the event is named `error`
 * (the form the A2A SDK writes a stream's fault in: `event: error`, then `data:` with the JSON-RPC
 * error envelope). Any other chunk is not an error event; only one that starts with `event:` is read.
 */
function sseRpcError(chunk: unknown): RpcError | undefined {
  if (typeof chunk !== 'string' || !chunk.startsWith('event:')) return undefined;
  let event = '';
  let data: string | undefined;
  for (const line of chunk.split(/\r\n|\r|\n/)) {
    if (!line) break;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(line[colon + 1] === ' ' ? colon + 2 : colon + 1);
    if (field === 'event') event = value;
    else if (field === 'data') data = data === undefined ? value : `${data}\n${value}`;
  }
  if (event !== 'error' || data === undefined) return undefined;
  try {
    return rpcErrorOf(JSON.parse(data));
  } catch {
    return undefined;
  }
}

/** Records a JSON-RPC error the A2A SDK answered for `req` as one decision event, as the caller's; `what` begins its reason. */
function recordRpcError(gateway: Gateway, req: Request, res: Response, error: RpcError, what: string): void {
  markRecorded(res);
  const refusal = new GatewayError(rpcErrorCode(error.code), `${what}: JSON-RPC ${error.code}: ${String(error.message)}`);
  const logged = res.locals.faultLogged === true;
  void gateway.refuse(refusal, { transport: 'a2a', credential: credentialOf(req) ?? presented(req), requestId: res.locals.requestId as string | undefined, logged });
}

/**
 * Mounted before the A2A SDK's JSON-RPC handler, which refuses a request it cannot serve (params
 * that are not A2A, an unknown method, a missing or unsupported A2A-Version, a Content-Type other
 * than JSON, an unknown task) with a JSON-RPC error in a 200 (a 500 for its internal errors) that
 * the 4xx watch above does not see. Each such answer is recorded as one decision event, as the
 * caller's, with the JSON-RPC code and message in its reason. (A call the gateway refuses is a
 * failed task, not a JSON-RPC error, and the pipeline records it.) An internal error the SDK logged
 * with its stack before answering (`faultLogged`, agent.ts) is not logged again.
 *
 * A stream that fails after it began (SendStreamingMessage, SubscribeToTask: its headers and
 * first event are sent) cannot be answered with a JSON-RPC error body any more: the SDK writes
 * the error as an SSE event named `error`, whose data is the JSON-RPC error envelope, and ends
 * the stream. That event, read from what is written, is recorded the same way, once per response,
 * with no charge: a call the request made was charged and recorded by the pipeline, in its own
 * event. Each chunk of a stream is only checked for starting with `event:`.
 */
export function recordRpcErrors(gateway: Gateway): RequestHandler {
  return function rpcErrors(req: Request, res: Response, next: NextFunction) {
    const json = res.json.bind(res);
    res.json = (body: unknown) => {
      const error = rpcErrorOf(body);
      if (error && !res.locals.refusalRecorded) recordRpcError(gateway, req, res, error, 'Refused by the A2A endpoint');
      return json(body);
    };
    const write = res.write as (chunk: unknown, encoding?: unknown, callback?: unknown) => boolean;
    res.write = function sseErrors(this: Response, chunk: unknown, encoding?: unknown, callback?: unknown) {
      const error = sseRpcError(chunk);
      if (error && !res.locals.refusalRecorded) recordRpcError(gateway, req, res, error, 'The A2A stream failed after it began');
      return write.call(this, chunk, encoding, callback);
    } as Response['write'];
    next();
  };
}
