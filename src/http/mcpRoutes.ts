/**
 * MCP over streamable HTTP at /mcp: sessions (see sessions.ts), each request served by a fresh SDK
 * Server and a transport for that one request (JSON answers through jsonTransport.ts, streamed
 * answers through the SDK's stateless transport), budget headers, cancellation.
 * Authentication, body parsing and the checks every route shares are the app's (app.ts).
 */
import express, { type Request, type RequestHandler, type Response } from 'express';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isJsonContentType } from '@modelcontextprotocol/sdk/shared/mediaType.js';
import { CancelledNotificationSchema, isJSONRPCErrorResponse, isJSONRPCRequest, isJSONRPCResultResponse, type CancelledNotification, type JSONRPCMessage, type MessageExtraInfo } from '@modelcontextprotocol/sdk/types.js';
import { GatewayError } from '../errors.js';
import type { BudgetView } from '../call/budget.js';
import type { EdgeAuthentication, Gateway } from '../gateway/gateway.js';
import { ownerKey, type Principal } from '../identity/principal.js';
import { createMcpServer } from '../mcp/server.js';
import { setBudgetHeaders, setHeaders, type BudgetHeaderReader } from './budgetHeaders.js';
import { credentialOf } from './authMetadata.js';
import { watchClose } from './compat.js';
import { SESSION_ENDED, type Deliver, type Session, type SessionTable } from './sessions.js';
import { markRecorded, recordUnread } from './edgeRefusals.js';
import { JsonResponseTransport, acceptPost, isInitialize, refuseProtocolVersion, writeAnswer } from './jsonTransport.js';
import { sendError } from './respond.js';

export interface McpRouteOptions {
  requireAuth: RequestHandler;
  json: RequestHandler;
  sessions: SessionTable;
  budgetReader: BudgetHeaderReader;
  version: string;
}

/** The tools/call messages that run a call through the pipeline (and so leave a decision event). */
function countCalls(messages: unknown[]): number {
  let n = 0;
  for (const m of messages) {
    const msg = m as { method?: unknown; params?: { name?: unknown } } | null;
    if (msg?.method === 'tools/call' && msg.params?.name === 'complete') n += 1;
  }
  return n;
}

const principalOf = (req: Request) => req.auth?.extra?.principal as Principal | undefined;

/** POST, GET and DELETE on /mcp. */
export function mcpRouter(gateway: Gateway, opts: McpRouteOptions): express.Router {
  const { requireAuth, json, sessions, budgetReader } = opts;
  const router = express.Router();

  const newServer = (signal: AbortSignal, onCallDone?: (budgets: BudgetView[] | undefined) => Promise<void>) =>
    createMcpServer({
      gateway,
      transport: 'http',
      version: opts.version,
      credentialFor: (extra) => {
        const edge = extra.authInfo?.extra?.edge as EdgeAuthentication | undefined;
        return extra.authInfo && edge ? { secret: extra.authInfo.token, verified: { policy: edge.policy, result: edge } } : undefined;
      },
      onCallDone,
      signal,
    });

  /**
   * Serves one HTTP request of a session with a fresh SDK Server and a transport for that request. Its
   * requests are tracked on the session, from before anything is awaited, so that a
   * notifications/cancelled sent in a later POST reaches them (one that arrives while the server is
   * set up is held until they are delivered), and a client that hangs up cancels them (`signal`,
   * watched since the request arrived). A request whose client is gone before it is delivered is
   * not served at all; a call among them (a `complete`) is recorded as CANCELLED, as on every way in.
   */
  const serve = async (req: Request, res: Response, session: Session, messages: unknown[]) => {
    const signal = res.locals.signal as AbortSignal;
    const gone = () => {
      markRecorded(res);
      for (let i = countCalls(messages); i > 0; i--) {
        void gateway.refuse(new GatewayError('CANCELLED', 'The caller disconnected before the call was delivered.'), { transport: 'http', credential: credentialOf(req) });
      }
    };
    if (signal.aborted) return gone();
    // Without a progress token nothing is sent before the answer, so it goes out as one JSON body:
    // cheaper than an SSE stream, and the spec lets the server choose either.
    const oneBody = !wantsProgress(messages);
    const principal = principalOf(req)!;
    const toolCall = messages.some((m) => (m as { method?: unknown } | null)?.method === 'tools/call');
    const ids = requestIds(messages);
    // Cancellations for these requests: passed to the server once it holds the request, held until then.
    let receive: ((msg: JSONRPCMessage) => void) | undefined;
    const delivered = new Set<string | number>();
    const held: JSONRPCMessage[] = [];
    const route: Deliver = (msg) => {
      const id = (msg as CancelledNotification).params?.requestId;
      if (receive && id !== undefined && delivered.has(id)) receive(msg);
      else held.push(msg);
    };
    const untrack = ids.map((id) => sessions.track(session, id, route));
    let server: ReturnType<typeof newServer> | undefined;
    res.once('close', () => {
      for (const u of untrack) u();
      // A finished response leaves nothing open: the pair is garbage. Closing it anyway would build
      // a "connection closed" error per request for the SDK to hand to no one.
      if (res.writableFinished) return;
      for (const requestId of ids) route({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason: 'client disconnected' } });
      void server?.close().catch(() => undefined);
    });
    // Budget headers: a JSON answer's head is written after the call, so they come from the call's
    // own result (this call counted); a stream's head goes first, so they are read before.
    if (toolCall && !oneBody) setHeaders(res, await budgetReader.read(principal));
    if (toolCall) res.once('finish', () => budgetReader.forget(principal));
    const afterCall = async (budgets: BudgetView[] | undefined) => {
      if (budgets) setBudgetHeaders(res, budgets);
      else if (!res.headersSent) setHeaders(res, await budgetReader.read(principal));
    };
    // A JSON answer skips the SDK's web Request/Response bridge (jsonTransport.ts).
    let accepted: JSONRPCMessage[] | undefined;
    if (oneBody) {
      const checked = acceptPost(req, req.body);
      if ('answer' in checked) return writeAnswer(res, checked.answer);
      accepted = checked.messages;
    }
    if (signal.aborted) return gone();
    const mcp = newServer(signal, toolCall && oneBody ? afterCall : undefined);
    server = mcp;
    const transport = accepted ? new JsonResponseTransport(Array.isArray(req.body)) : new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: oneBody });
    await mcp.connect(transport);
    if (signal.aborted) {
      void mcp.close().catch(() => undefined);
      return gone();
    }
    // A cancelled request gets no answer (MCP), so its POST must not wait for one: the JSON
    // transport answers without it; a stream whose every request is answered or cancelled is ended
    // by closing the pair, which ends the SDK transport's stream.
    const answered = new Set<string | number>();
    const cancelled = new Set<string | number>();
    const allDone = () => cancelled.size > 0 && ids.every((i) => answered.has(i) || cancelled.has(i));
    if (!(transport instanceof JsonResponseTransport)) {
      const send = transport.send.bind(transport);
      transport.send = async (msg, options) => {
        const response = (isJSONRPCResultResponse(msg) || isJSONRPCErrorResponse(msg)) && msg.id !== undefined;
        if (response) answered.add(msg.id!);
        await send(msg, options);
        // The last answer of a stream one of whose requests was cancelled before: nothing else comes.
        if (response && allDone()) void mcp.close().catch(() => undefined);
      };
    }
    const inner = transport.onmessage;
    /** Request `id` of this POST was cancelled (the server has the notification): no answer is waited for. */
    const noteCancelled = (id: string | number) => {
      if (transport instanceof JsonResponseTransport) return transport.cancelled(id);
      if (!answered.has(id)) cancelled.add(id);
      if (allDone()) void mcp.close().catch(() => undefined);
    };
    receive = (msg) => {
      inner?.(msg);
      const { requestId: id, reason } = (msg as CancelledNotification).params;
      if (id === undefined) return;
      // Ended with its session (a DELETE), not cancelled by its client, which still waits for an answer.
      if (reason === SESSION_ENDED) {
        const ended = { jsonrpc: '2.0' as const, id, error: { code: -32000, message: 'The session was ended (DELETE) before this request was answered; its call was cancelled.' } };
        if (transport instanceof JsonResponseTransport) return transport.answerInstead(ended);
        if (!answered.has(id)) void transport.send(ended).catch(() => undefined);
        return;
      }
      noteCancelled(id);
    };
    transport.onmessage = <T extends JSONRPCMessage>(msg: T, extra?: MessageExtraInfo) => {
      inner?.(msg, extra);
      // A cancellation in the same POST as its request (a batch): the same as one sent later.
      const cancelledId = cancelledIn(msg);
      if (cancelledId !== undefined && ids.includes(cancelledId)) return noteCancelled(cancelledId);
      if (!isJSONRPCRequest(msg)) return;
      delivered.add(msg.id);
      // A cancellation held for this request goes in right after it.
      for (const h of held.splice(0)) route(h);
    };
    if (transport instanceof JsonResponseTransport) {
      transport.deliver(accepted!, req, req.auth);
      const answer = await transport.answer;
      if (!res.destroyed) writeAnswer(res, answer);
    } else await transport.handleRequest(req, res, req.body);
  };

  /** The session a request names, or an answer already sent (404 unknown, 403 someone else's). */
  const sessionOf = (req: Request, res: Response, sid: string): Session | undefined => {
    const found = sessions.lookup(sid, ownerKey(principalOf(req)!));
    if ('session' in found) return found.session;
    if (found.error === 'forbidden') sendError(res, new GatewayError('FORBIDDEN', 'This session belongs to another caller.'));
    else res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found; initialize a new one.' }, id: null });
    return undefined;
  };

  // watchClose first: a client gone while its credential is checked or its body read cancels the call.
  router.post('/mcp', watchClose, requireAuth, json, recordUnread(gateway), async (req, res) => {
    // Without this, a non-JSON body reaches the session check unparsed and gets a misleading answer.
    if (!isJsonContentType(req.headers['content-type'])) {
      res.status(415).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Unsupported Media Type: Content-Type must be application/json' }, id: null });
      return;
    }
    const principal = principalOf(req)!;
    const messages: unknown[] = Array.isArray(req.body) ? req.body : [req.body];
    const sid = req.header('mcp-session-id');
    let session: Session | undefined;
    if (sid) {
      session = sessionOf(req, res, sid);
      if (!session) return;
      if (messages.some(isInitialize)) {
        res.status(400).json({ jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request: Server already initialized' }, id: null });
        return;
      }
      // Answers are matched to requests by id: two requests with one id in a batch would both run
      // (and a call be charged) while only one answer could come back.
      const own = requestIds(messages);
      const repeated = repeatedId(own);
      if (repeated !== undefined) {
        res.status(400).json({ jsonrpc: '2.0', error: { code: -32600, message: `Invalid Request: the request id ${JSON.stringify(repeated)} appears more than once in the batch` }, id: null });
        return;
      }
      // Cancellations of requests of earlier POSTs; one of a request of this POST is its own (serve).
      for (const m of messages) {
        const requestId = cancelledIn(m);
        if (requestId !== undefined && !own.includes(requestId)) sessions.cancel(session, requestId, (m as CancelledNotification).params.reason);
      }
    } else {
      if (!isInitialize(req.body)) {
        res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'No mcp-session-id header: send initialize first.' }, id: null });
        return;
      }
      session = sessions.open(ownerKey(principal));
      if (!session) {
        // A refusal like any other: one event, as the caller's (the edge's watch records only 4xx).
        markRecorded(res);
        void gateway.refuse(new GatewayError('GATEWAY_BUSY', "No MCP session could be opened: the gateway's sessions (TOLLGATE_MAX_SESSIONS), or this caller's all busy with a call (TOLLGATE_MAX_SESSIONS_PER_CALLER), are in use; initialize was refused."), { transport: 'http', credential: credentialOf(req) });
        res.status(503).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Too many open sessions; try again later.' }, id: null });
        return;
      }
      const opened = session;
      res.setHeader('mcp-session-id', opened.id);
      // An initialize the transport refused (bad params, wrong Accept) leaves no session behind.
      res.once('finish', () => {
        if (res.statusCode !== 200) sessions.close(opened.id);
      });
    }
    await serve(req, res, session, messages);
  });

  // tollgate sends nothing outside the response to a request, so it offers no standalone SSE stream:
  // the MCP transport spec's answer for that is 405 on GET.
  router.get('/mcp', requireAuth, (req, res) => {
    const sid = req.header('mcp-session-id');
    if (sid && !sessionOf(req, res, sid)) return;
    res.status(405).set('Allow', 'POST, DELETE').json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this server offers no standalone SSE stream.' }, id: null });
  });
  router.delete('/mcp', requireAuth, (req, res) => {
    const sid = req.header('mcp-session-id');
    if (!sid) {
      res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'No mcp-session-id header: nothing to end.' }, id: null });
      return;
    }
    if (!sessionOf(req, res, sid)) return;
    const refused = refuseProtocolVersion(req);
    if (refused) return writeAnswer(res, refused);
    sessions.close(sid);
    res.status(200).end();
  });

  return router;
}

/** The request id a valid notifications/cancelled names, else undefined. */
function cancelledIn(m: unknown): string | number | undefined {
  if ((m as { method?: unknown } | null)?.method !== 'notifications/cancelled' || !CancelledNotificationSchema.safeParse(m).success) return undefined;
  return (m as CancelledNotification).params.requestId;
}

/** Whether any request of a POST asked for progress notifications (params._meta.progressToken). */
function wantsProgress(messages: unknown[]): boolean {
  return messages.some((m) => {
    const meta = (m as { params?: { _meta?: { progressToken?: unknown } } } | null)?.params?._meta;
    return meta?.progressToken !== undefined;
  });
}

/** The first of a POST's request ids (requestIds) used more than once, if any. */
function repeatedId(ids: (string | number)[]): string | number | undefined {
  const seen = new Set<string | number>();
  for (const id of ids) {
    if (seen.has(id)) return id;
    seen.add(id);
  }
  return undefined;
}

/** The ids of the JSON-RPC requests (not notifications or responses) of a POST. */
function requestIds(messages: unknown[]): (string | number)[] {
  return messages.flatMap((m) => (m && typeof m === 'object' && 'id' in m && 'method' in m ? [(m as { id: string | number }).id] : []));
}
