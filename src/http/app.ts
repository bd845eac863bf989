/**
 * The HTTP edge: MCP over streamable HTTP at /mcp (mcpRoutes.ts), the OpenAI- and Anthropic-
 * compatible endpoints and A2A, behind bearer authentication, Host and Origin checks and a body size
 * limit, plus /healthz and /metrics. Transport concerns only; every call goes to the gateway.
 */
import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { IncomingMessage, STATUS_CODES, ServerResponse, createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { hostHeaderValidation, localhostHostValidation } from '@modelcontextprotocol/sdk/server/middleware/hostHeaderValidation.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import { A2A_PATH, a2aRouter } from '../a2a/agent.js';
import type { Principal } from '../identity/principal.js';
import { metricsAuthorized, type GatewayMetrics } from '../metering/metrics.js';
import { anthropicCodec } from './anthropicCompat.js';
import { authEdge, credentialOf } from './authMetadata.js';
import { BudgetHeaderReader } from './budgetHeaders.js';
import { bodyError, compatRouter } from './compat.js';
import { dryRunRouter } from './dryRuns.js';
import { cancelOnLeave, connectionOf, markRecorded, recordEdgeRefusals, recordRpcErrors, recordUnparseable, recordUnparseableRequest, recordUnread } from './edgeRefusals.js';
import { modelsRouter } from './models.js';
import { openaiCodec } from './openaiCompat.js';
import { responsesCodec } from './responsesCompat.js';
import { mcpRouter } from './mcpRoutes.js';
import { answerNotFound, SERVED_ENDPOINTS } from './notFound.js';
import { isLoopbackHost, isLoopbackOrigin } from './loopback.js';
import { nameResponse, sendError, sendRefusal, sendWireError } from './respond.js';
import { SessionTable } from './sessions.js';

export interface HttpOptions {
  host: string;
  port: number;
  /** Extra Host header values accepted besides localhost (DNS-rebinding protection). */
  allowedHosts?: string[];
  /** Origins allowed to call from a browser; requests with any other Origin get 403. */
  allowedOrigins?: string[];
  maxBodyBytes: number;
  maxSessions: number;
  /** Sessions one caller may hold; beyond it their least recently used idle one is ended. */
  maxSessionsPerCaller?: number;
  sessionIdleMs: number;
  /** Shared by replicas or workers so that each accepts sessions the others opened. */
  sessionSecret?: string;
  version: string;
  /** When set, GET /metrics needs `Authorization: Bearer <token>` (TOLLGATE_METRICS_TOKEN). */
  metricsToken?: string;
  /** The embedded store's data directory, where A2A tasks are kept across restarts; none keeps them in memory. */
  dataDir?: string;
}

/**
 * Builds the express app; `listen` starts it. `operatorRoutes` (the web console) are mounted after
 * the Host check and before the Origin check, which is meant for API callers: those routes serve
 * their own same-origin browser pages and check Origin and CSRF themselves.
 */
export function createHttpApp(gateway: Gateway, opts: HttpOptions, metrics?: GatewayMetrics, operatorRoutes: RequestHandler[] = []) {
  const app = express();
  app.disable('x-powered-by');
  // Answers are per call (a completion, a budget, a JSON-RPC result): an ETag would never match
  // and express would hash every JSON body to make one.
  app.set('etag', false);
  // First, so that a refusal by any middleware below (Host, Origin, JSON-RPC checks) is recorded.
  app.use(recordEdgeRefusals(gateway));
  // Under /v1 the caller is an OpenAI or Anthropic client (the Anthropic SDK sends anthropic-version).
  const wireOf = (req: Request) => (!req.path.startsWith('/v1/') || req.path.startsWith('/v1/tollgate/') ? undefined : req.headers['anthropic-version'] !== undefined ? anthropicCodec : openaiCodec);
  /** An edge refusal: in the compatible API's shape under /v1 (its SDK raises its own error), else tollgate's; with a request id either way. */
  const refuseAtEdge = (req: Request, res: Response, err: GatewayError) => sendRefusal(res, wireOf(req), err);

  const local = ['127.0.0.1', 'localhost', '::1'].includes(opts.host);
  const hostCheck = opts.allowedHosts?.length ? hostHeaderValidation([...opts.allowedHosts, ...(local ? ['127.0.0.1', 'localhost', '[::1]'] : [])]) : local ? localhostHostValidation() : undefined;
  if (hostCheck) {
    app.use((req, res, next) => {
      const wire = wireOf(req);
      if (!wire) return hostCheck(req, res, next);
      // The SDK's check answers in JSON-RPC (right for /mcp); a compatible API's caller gets its API's shape.
      const json = res.json;
      res.json = (body: unknown) => {
        res.json = json;
        sendWireError(res, wire, new GatewayError('FORBIDDEN', String((body as { error?: { message?: unknown } } | null)?.error?.message ?? 'Invalid Host')));
        return res;
      };
      hostCheck(req, res, () => {
        res.json = json;
        next();
      });
    });
  }

  // Protected resource metadata is public and CORS-enabled, so it is served before the Origin check.
  const edge = authEdge(gateway);
  app.use(edge.metadata);
  for (const routes of operatorRoutes) app.use(routes);

  const loopback = isLoopbackHost(opts.host);
  app.use((req, res, next) => {
    const origin = req.headers.origin;
    if (origin && !(opts.allowedOrigins ?? []).includes(origin) && !(loopback && isLoopbackOrigin(origin))) {
      refuseAtEdge(req, res, new GatewayError('FORBIDDEN', `Origin ${origin} is not allowed to call this gateway.`));
      return;
    }
    next();
  });

  const sessions = new SessionTable({ maxSessions: opts.maxSessions, maxPerCaller: opts.maxSessionsPerCaller, idleMs: opts.sessionIdleMs, secret: opts.sessionSecret });
  const budgetReader = new BudgetHeaderReader(gateway);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', store: gateway.store.kind, policyVersion: gateway.policy.version, sessions: sessions.size });
  });

  if (metrics) {
    app.get('/metrics', async (req, res) => {
      if (!metricsAuthorized(req.headers.authorization, opts.metricsToken)) {
        res.set('WWW-Authenticate', 'Bearer realm="tollgate-metrics"');
        sendError(res, new GatewayError(req.headers.authorization ? 'AUTH_INVALID' : 'AUTH_REQUIRED', 'GET /metrics needs the metrics bearer token.'));
        return;
      }
      res.set('Content-Type', metrics.registry.contentType).send(await metrics.text());
    });
  }

  const parseJson = express.json({ limit: opts.maxBodyBytes, type: ['application/json', 'application/*+json'], verify: checkJsonEncoding });
  // A route's body parser; a caller gone mid-body is recorded as CANCELLED, as the caller whose
  // credential `secretOf` reads (on /mcp and A2A, the one the edge verified before the body).
  const json = (secretOf?: (req: Request) => string | undefined) => cancelOnLeave(gateway, parseJson, opts.maxBodyBytes, secretOf);

  app.use(mcpRouter(gateway, { requireAuth: edge.requireAuth('http'), json: json(), sessions, budgetReader, version: opts.version }));

  // Every other way in: same credentials, same body limit, same gateway (one store, one policy).
  // Mounted after /mcp, the busiest route, so that MCP requests do not walk their routers first.
  app.use(modelsRouter(gateway));
  app.use(dryRunRouter(gateway, json(anthropicCodec.credentialOf), opts.maxBodyBytes));
  for (const codec of [openaiCodec, responsesCodec, anthropicCodec]) app.use(compatRouter(gateway, codec, json(codec.credentialOf), opts.maxBodyBytes));
  const a2a = a2aRouter(gateway, {
    requireAuth: edge.requireAuth('a2a'),
    json: json(),
    unread: recordUnread(gateway),
    rpcErrors: recordRpcErrors(gateway),
    version: opts.version,
    dataDir: opts.dataDir,
    callerOf: (req) => {
      const credential = credentialOf(req);
      const principal = req.auth?.extra?.principal as Principal | undefined;
      return credential && principal ? { credential, principal } : undefined;
    },
  });
  app.use(a2a);

  // Keep these after every route: what no route answered gets a code rather than express's HTML page.
  app.all('/mcp', (_req, res) => {
    nameResponse(res);
    res.status(405).set('Allow', 'POST, DELETE').json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null });
  });
  app.use(answerNotFound(metrics ? [...SERVED_ENDPOINTS, { methods: ['GET'], path: '/metrics' }] : SERVED_ENDPOINTS, wireOf));

  app.use(async (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string };
    const refusal = bodyError(err, opts.maxBodyBytes);
    // The bearer middleware ran before the body parser: the caller is known, so the refusal is recorded as theirs.
    const credential = credentialOf(req);
    if (credential) {
      markRecorded(res);
      const transport = req.path.startsWith(A2A_PATH) ? 'a2a' : 'http';
      await gateway.complete({ credential, args: { raw: undefined, rejected: refusal }, transport }).catch(() => undefined);
    }
    if (e.type === 'entity.parse.failed') res.status(400).json({ jsonrpc: '2.0', error: { code: -32700, message: 'Parse error: the body is not valid JSON.' }, id: null });
    else sendError(res, refusal.code === 'INTERNAL' ? new GatewayError('INTERNAL', 'Internal error in tollgate; see the gateway log.') : refusal);
  });

  return {
    app,
    sessions,
    /** Loads what the first A2A request would otherwise load midway (a2aRouter's `prepare`). */
    prepare: () => a2a.prepare(),
    /** Starts listening; resolves with the bound address. */
    listen(): Promise<{ server: HttpServer; url: string }> {
      return new Promise((resolve, reject) => {
        const server = expressServer(app);
        // An Expect other than 100-continue: Node would answer 417 itself, before any route and
        // with no event. RFC 9110 lets a server ignore it; the request is served as any other.
        server.on('checkExpectation', app);
        server.once('error', reject);
        server.listen(opts.port, opts.host, () => {
          const { port } = server.address() as AddressInfo;
          const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
          resolve({ server, url: `http://${host}:${port}` });
        });
        server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => refuseUnparseable(gateway, err, socket));
      });
    },
  };
}

/** The body parser's error type for a body that is not valid in its charset (read by bodyError in compat.ts). */
const INVALID_UTF8 = 'encoding.invalid';

/**
 * An HTTP server for `app` whose requests and responses are born with express's prototypes.
 * Express otherwise gives each request and response its methods by changing their prototype
 * (Object.setPrototypeOf in app.handle), which V8 handles badly: measured on this stack, it tripled
 * what each request allocates and made a quarter of it outlive the young generation, so every
 * scavenge copied megabytes and took 2 to 3 ms instead of 0.1 ms. Here the server builds them from
 * subclasses whose prototypes sit on express's, and `app.request` / `app.response` become those
 * prototypes, so that call changes nothing. (Subclasses rather than Reflect.construct with
 * express's objects as prototype: objects made that way measured 3.8 KB each, against 0.74 KB.)
 */
export function expressServer(app: express.Express): HttpServer {
  class ExpressRequest extends IncomingMessage {}
  Object.setPrototypeOf(ExpressRequest.prototype, app.request);
  class ExpressResponse<R extends IncomingMessage = IncomingMessage> extends ServerResponse<R> {}
  Object.setPrototypeOf(ExpressResponse.prototype, app.response);
  app.request = ExpressRequest.prototype as unknown as express.Request;
  app.response = ExpressResponse.prototype as unknown as express.Response;
  return createServer({ IncomingMessage: ExpressRequest, ServerResponse: ExpressResponse }, app);
}

/**
 * The charsets JSON text may come in: UTF-8 (RFC 8259), UTF-16 and UTF-32 (RFC 7159). The body
 * parser takes any `utf-*` its decoder knows, UTF-7 included, in which every `+` the caller wrote
 * begins a base64 run: `C++` would reach the provider as `C`.
 */
const JSON_CHARSETS = /^utf-(?:8|16|16le|16be|32|32le|32be)$/i;

/**
 * JSON text between systems must be UTF-8 (RFC 8259); the body parser would otherwise replace bad
 * bytes with U+FFFD and send a prompt the caller never wrote. Only UTF-8 bodies are checked; a
 * charset JSON does not allow is refused as the parser refuses one it cannot decode.
 */
function checkJsonEncoding(_req: unknown, _res: unknown, buf: Buffer, encoding: string): void {
  if (!JSON_CHARSETS.test(encoding)) throw Object.assign(new Error(`unsupported charset "${encoding.toUpperCase()}"`), { status: 415, type: 'charset.unsupported' });
  if (/^utf-?8$/i.test(encoding) ? !isUtf8(buf) : !validWide(buf, encoding.toLowerCase())) {
    throw Object.assign(new Error(`The request body is not valid ${encoding.toUpperCase()}.`), { status: 400, type: INVALID_UTF8 });
  }
}

/**
 * Whether a UTF-16 or UTF-32 body is whole code units, and UTF-16 without a lone surrogate: the
 * decoder would drop a stray byte and pass a lone surrogate on, as it would replace bad UTF-8.
 */
function validWide(buf: Buffer, charset: string): boolean {
  if (charset.startsWith('utf-32')) return buf.length % 4 === 0;
  if (buf.length % 2 !== 0) return false;
  // UTF-16 without a byte order mark is big-endian, as the body parser reads it.
  const big = charset === 'utf-16be' || (charset === 'utf-16' && !(buf[0] === 0xff && buf[1] === 0xfe));
  for (let i = 0; i < buf.length; i += 2) {
    const unit = big ? buf.readUInt16BE(i) : buf.readUInt16LE(i);
    if (unit < 0xd800 || unit > 0xdfff) continue;
    if (unit > 0xdbff || i + 2 >= buf.length) return false;
    const next = big ? buf.readUInt16BE(i + 2) : buf.readUInt16LE(i + 2);
    if (next < 0xdc00 || next > 0xdfff) return false;
    i += 2;
  }
  return true;
}

/**
 * Requests Node cannot parse (CR or LF inside a header, oversized headers, conflicting framing, a
 * broken chunked body) never reach express, or reach it only in part. Node's default answer is a
 * bare 400/431; this one carries a code in the usual body, and each such fault is one refusal:
 * - in the body of the connection's latest request, which a route has begun: that request's
 *   refusal, under its request id and as its caller (recordUnparseableRequest), answered now; if
 *   its response is under way or done already (an early 401), the edge hangs up and records nothing
 *   more;
 * - in the bytes after a whole request (a new request's): a refusal of its own, answered once every
 *   response of the connection has been written (the requests before it are answered first), then
 *   the connection closes.
 * A client that closed its side mid-request (HPE_INVALID_EOF_STATE, ECONNRESET) is leaving: no
 * answer, and the request, if a route had it, is recorded there (CANCELLED). Once a connection's
 * bytes were found broken, Node reports each later read of it again: those are ignored.
 */
function refuseUnparseable(gateway: Gateway, err: NodeJS.ErrnoException, socket: Duplex): void {
  const c = connectionOf(socket);
  if (c?.faulted) return;
  if (c) c.faulted = true;
  if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? ([431, 'The request headers are too large.'] as const)
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ([408, 'The request was not received in time.'] as const)
        : ([400, 'The request is not valid HTTP/1.1.'] as const);
  const answer = (requestId?: string) => {
    if (!socket.writable) return;
    const body = JSON.stringify({ error: new GatewayError('INVALID_REQUEST', message).toJSON() });
    const id = requestId ? `x-request-id: ${requestId}\r\n` : '';
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${id}Connection: close\r\n\r\n${body}`);
  };
  if (c && !c.req.complete) {
    // The latest request's body broke. Answered already (an early refusal): that was its answer.
    if (c.res.headersSent || c.res.writableFinished) {
      socket.destroy();
      return;
    }
    const requestId = (c.res.locals.requestId as string | undefined) ?? (c.res.locals.requestId = randomUUID());
    recordUnparseableRequest(gateway, c.req, c.res, status, requestId);
    // Its response is the one not begun; earlier ones of the connection still being written
    // (pipelining) must not have an answer spliced into them.
    if (c.open <= 1) answer(requestId);
    else socket.destroy();
    return;
  }
  recordUnparseable(gateway, status);
  if (!c || c.open === 0) answer();
  // After the responses of the requests before it, in order: the latest closes last.
  else c.res.once('close', () => answer());
}
