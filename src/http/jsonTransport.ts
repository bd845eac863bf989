/**
 * The MCP streamable HTTP answer for a POST that wants no stream: every JSON-RPC request in it is
 * answered in one `application/json` body (the spec lets the server pick JSON or SSE). The SDK's
 * StreamableHTTPServerTransport does the same in its JSON mode, but builds a web Request, Headers
 * and Response around every call (through @hono/node-server); this transport hands the messages to
 * the SDK Server and collects its answers directly, and gives the SDK transport's checks and
 * error answers for that case. test/unit/json-transport-sdk.test.ts sends the same requests to
 * both and compares the answers, so an SDK upgrade that changes them fails a test. Streamed answers
 * (progress) still go through the SDK transport (mcpRoutes.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js';
import { isJsonContentType } from '@modelcontextprotocol/sdk/shared/mediaType.js';
import {
  JSONRPCMessageSchema,
  SUPPORTED_PROTOCOL_VERSIONS,
  isJSONRPCErrorResponse,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  isInitializeRequest,
  type JSONRPCMessage,
  type MessageExtraInfo,
  type RequestId,
} from '@modelcontextprotocol/sdk/types.js';

/** The SDK transport's limit on a batch (server/requestBody.js). */
const MAX_BATCH_SIZE = 100;

/** An HTTP answer the route writes as it is. `body` undefined means no body (202). */
export interface JsonAnswer {
  status: number;
  body?: unknown;
}

/**
 * The SDK's isInitializeRequest, asked only of messages whose method is `initialize`: the same
 * answer, without a full schema check (and its error objects) on every other message.
 */
export function isInitialize(message: unknown): boolean {
  return (message as { method?: unknown } | null)?.method === 'initialize' && isInitializeRequest(message);
}

const errorAnswer = (status: number, code: number, message: string): JsonAnswer => ({ status, body: { jsonrpc: '2.0', error: { code, message }, id: null } });

/**
 * Checks a POST the way the SDK's stateless transport does, and returns its messages, or the error
 * answer to send. An initialize must come alone; other POSTs may name a protocol version, which
 * must be one the SDK supports. (Sessions are the route's business, as with the SDK transport.)
 */
export function acceptPost(req: IncomingMessage, body: unknown): { messages: JSONRPCMessage[] } | { answer: JsonAnswer } {
  const accept = req.headers.accept;
  // A substring test, as in the SDK: Accept is a list and must name both types.
  if (!accept?.includes('application/json') || !accept.includes('text/event-stream')) {
    return { answer: errorAnswer(406, -32000, 'Not Acceptable: Client must accept both application/json and text/event-stream') };
  }
  if (!isJsonContentType(req.headers['content-type'])) {
    return { answer: errorAnswer(415, -32000, 'Unsupported Media Type: Content-Type must be application/json') };
  }
  // JSON-RPC 2.0 answers an empty array with one Invalid Request; it is not a POST of no requests.
  if (Array.isArray(body) && body.length === 0) return { answer: errorAnswer(400, -32600, 'Invalid Request: the batch is empty.') };
  if (Array.isArray(body) && body.length > MAX_BATCH_SIZE) {
    return { answer: errorAnswer(400, -32600, `Invalid Request: Batch must not exceed ${MAX_BATCH_SIZE} messages`) };
  }
  let messages: JSONRPCMessage[];
  try {
    messages = (Array.isArray(body) ? body : [body]).map((m) => JSONRPCMessageSchema.parse(m));
  } catch {
    return { answer: errorAnswer(400, -32700, 'Parse error: Invalid JSON-RPC message') };
  }
  if (messages.some(isInitialize)) {
    if (messages.length > 1) return { answer: errorAnswer(400, -32600, 'Invalid Request: Only one initialization request is allowed') };
    return { messages };
  }
  const refused = refuseProtocolVersion(req);
  return refused ? { answer: refused } : { messages };
}

/**
 * The 400 for a request after initialize whose MCP-Protocol-Version the SDK does not support (the
 * spec's MUST, for every request of a session: POST, and DELETE too), as the SDK transport words it.
 */
export function refuseProtocolVersion(req: IncomingMessage): JsonAnswer | undefined {
  const version = req.headers['mcp-protocol-version'];
  if (version === undefined || SUPPORTED_PROTOCOL_VERSIONS.includes(String(version))) return undefined;
  return errorAnswer(400, -32000, `Bad Request: Unsupported protocol version: ${String(version)} (supported versions: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`);
}

/** Writes an answer: the JSON-RPC body as the SDK transport writes it, or 202 without one. */
export function writeAnswer(res: ServerResponse, answer: JsonAnswer): void {
  res.statusCode = answer.status;
  if (answer.body === undefined) {
    res.end();
    return;
  }
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(answer.body));
}

/**
 * One POST's worth of MCP: `deliver` hands its messages to the connected SDK Server, and `answer`
 * resolves with the HTTP answer once every request in it has its response or was cancelled (202
 * if none is left to answer).
 */
export class JsonResponseTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: <T extends JSONRPCMessage>(message: T, extra?: MessageExtraInfo) => void;
  sessionId?: string;

  private readonly responses = new Map<RequestId, JSONRPCMessage | undefined>();
  /** Requests the client cancelled before their answer: MCP sends none, so none is waited for. */
  private readonly cancelledIds = new Set<RequestId>();
  private finish!: (answer: JsonAnswer) => void;
  private closed = false;
  /**
   * The answer to write: every response in request order, an array when the POST was a batch
   * (JSON-RPC answers a batch with an array, even of one), else the one response.
   */
  readonly answer = new Promise<JsonAnswer>((resolve) => (this.finish = resolve));

  /** `batch`: whether the POST's body was a JSON-RPC batch (an array). */
  constructor(private readonly batch = false) {}

  async start(): Promise<void> {}

  /** Passes the POST's messages to the server; the answer follows through `answer`. */
  deliver(messages: JSONRPCMessage[], req: IncomingMessage, authInfo: AuthInfo | undefined): void {
    for (const m of messages) if (isJSONRPCRequest(m)) this.responses.set(m.id, undefined);
    const extra: MessageExtraInfo = { authInfo, requestInfo: { headers: req.headers } };
    for (const m of messages) this.onmessage?.(m, extra);
    this.settle();
  }

  /**
   * The client cancelled request `id` (notifications/cancelled, already handed to the server):
   * its answer is no longer waited for, and the others are sent without it.
   */
  cancelled(id: RequestId): void {
    if (!this.responses.has(id) || this.responses.get(id) !== undefined) return;
    this.responses.delete(id);
    this.cancelledIds.add(id);
    this.settle();
  }

  /**
   * Request `response.id`, whose server dropped it (cancelled, so the SDK sends no answer), is
   * answered with `response` instead: its client did not cancel it and waits for one.
   */
  answerInstead(response: JSONRPCMessage & { id: RequestId }): void {
    if (!this.responses.has(response.id) || this.responses.get(response.id) !== undefined) return;
    this.responses.set(response.id, response);
    this.cancelledIds.add(response.id);
    this.settle();
  }

  /** Finishes once no response is missing: 202 when there is none to send. */
  private settle(): void {
    const all = [...this.responses.values()];
    if (all.some((r) => r === undefined)) return;
    if (all.length === 0) this.finish({ status: 202 });
    else this.finish({ status: 200, body: this.batch || all.length > 1 ? all : all[0] });
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    const isResponse = isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message);
    // Notifications and requests from the server have no place in a JSON answer: the SDK
    // transport drops them too in this mode (a caller who wants progress asks for it and gets SSE).
    if (!isResponse) return;
    const id = message.id;
    // An answer that crossed its cancellation: the client no longer reads it.
    if (id !== undefined && this.cancelledIds.has(id)) return;
    if (this.closed || id === undefined || !this.responses.has(id)) throw new Error(`No connection established for request ID: ${String(id ?? options?.relatedRequestId)}`);
    this.responses.set(id, message);
    this.settle();
  }

  /** Ends the exchange; answers still missing are not coming (a no-op once the answer is settled). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.finish(errorAnswer(503, -32000, 'The request was closed before every response was ready.'));
    this.onclose?.();
  }
}
