/**
 * One route for every provider-compatible endpoint (OpenAI Chat Completions, Anthropic Messages):
 * the endpoint supplies a small wire codec (decode the body, render the answer, the error and the
 * stream events); the route does the rest the same way for both: request id, cancellation on
 * disconnect (wired before anything is awaited), authentication and the call through the gateway,
 * budget headers, and body-parser failures recorded as refusals.
 */
import { randomUUID } from 'node:crypto';
import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { CompleteArgs } from '../call/request.js';
import type { BudgetView } from '../call/budget.js';
import { DEFAULT_MAX_TOKENS } from '../call/request.js';
import { asGatewayError, GatewayError } from '../errors.js';
import type { CallResult, EdgeAuthentication, Gateway } from '../gateway/gateway.js';
import type { Credential } from '../pipeline/context.js';
import { bearerChallenge, bearerCredential, secretOfHeader } from './authMetadata.js';
import { readBudgetHeaders, setBudgetHeaders, setHeaders } from './budgetHeaders.js';
import { markRecorded } from './edgeRefusals.js';

/** What a codec's renderers know about the call besides its result. */
export interface CompatCall {
  requestId: string;
  /** Seconds since the epoch when the request arrived. */
  created: number;
  /** The output tokens the caller asked for (or the default), to tell a cut answer from a finished one. */
  maxTokens: number;
  /** Codec-specific options read from the body (e.g. OpenAI's stream_options.include_usage). */
  includeUsage: boolean;
}

/** Writes one server-sent event; `event` adds an `event:` line (Anthropic's frames need one). */
export type SseSend = (data: unknown, event?: string) => void;

/** How one API's wire format maps to the call core. */
export interface WireCodec {
  transport: 'openai' | 'anthropic';
  path: string;
  /** The credential as this API's clients send it. */
  credentialOf(req: Request): string | undefined;
  /** A refusal the request's headers call for (Anthropic's `anthropic-beta`), recorded as the call's. */
  rejected?(req: Request): GatewayError | undefined;
  /** Headers every answer carries (Anthropic SDKs read `request-id`). */
  prepare?(res: Response): void;
  /** Whether the body asks for a stream, and the codec's own options. Never throws: `decode` judges the body. */
  options(body: unknown): { stream: boolean; includeUsage: boolean };
  /** The body as wire-neutral `complete` arguments; throws INVALID_REQUEST naming the field. */
  decode(body: unknown): CompleteArgs;
  /** The field of the body that holds the output cap (`max_tokens` when absent). Never throws. */
  outputCapField?(body: unknown): string;
  render(res: Response, result: CallResult, call: CompatCall): void;
  /** The error body (status set by the route). */
  errorBody(err: GatewayError, res: Response): unknown;
  /** Headers a RATE_LIMITED refusal carries in this API (src/http/rateLimitHeaders.ts). */
  rateLimitHeaders(err: GatewayError): Record<string, string>;
  /** The HTTP status of an error in this API (Anthropic answers an unknown model with 404). */
  statusOf?(err: GatewayError): number;
  stream: {
    start(send: SseSend, model: string, call: CompatCall): void;
    delta(send: SseSend, text: string, model: string, call: CompatCall): void;
    end(send: SseSend, result: CallResult, call: CompatCall): void;
    /** An error after the first byte: sent as an event, then the stream ends. */
    error(send: SseSend, err: GatewayError, call: CompatCall): void;
  };
}

/**
 * Refusals a retry cannot fix; SDKs that honour `x-should-retry` stop retrying them. A rate limit is
 * fixed by waiting. PROVIDER_ERROR is a 502 that says so too (the provider refused the request
 * itself: a 400, a 401, a 404), which an SDK would otherwise retry as a 5xx.
 */
export function isFinal(err: GatewayError): boolean {
  if (err.code === 'PROVIDER_ERROR') return true;
  return err.status < 500 && err.code !== 'CANCELLED' && err.code !== 'RATE_LIMITED';
}

/** The bearer token of an `Authorization` header, if it holds one. */
/**
 * The credential a request presents, read with `secretOf` (the codec's), marked malformed when it
 * came in an Authorization header that is not `Bearer <credential>`: the MCP and A2A routes refuse
 * such a header (the MCP SDK's bearer guard), and so do these, with AUTH_INVALID, recorded.
 */
export function presentedCredential(req: Request, secretOf: (req: Request) => string | undefined): Credential | undefined {
  const secret = secretOf(req);
  if (!secret) return undefined;
  const header = req.headers.authorization;
  if (header !== undefined && header !== '' && bearerCredential(header) === undefined) {
    return { secret, malformed: 'The Authorization header must be "Bearer <API key or token>".' };
  }
  return { secret };
}

export function bearerToken(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (!header) return undefined;
  return secretOfHeader(header);
}

/**
 * Aborted when the client goes away before the response is finished, so the call is cancelled and
 * its upstream request aborted. Attach it before anything is awaited; a response whose connection
 * closed already (while an earlier step awaited) gives a signal aborted from the start.
 */
export function abortOnClose(res: Response): AbortSignal {
  const ac = new AbortController();
  const closed = (): void => {
    if (!res.writableFinished) ac.abort();
  };
  if (res.closed) closed();
  else res.once('close', closed);
  return ac.signal;
}

/** Middleware that gives the request its `res.locals.signal` (abortOnClose), mounted before any that awaits. */
export const watchClose: RequestHandler = (_req, res, next) => {
  res.locals.signal = abortOnClose(res);
  next();
};

function renderError(codec: WireCodec, gateway: Gateway, res: Response, err: GatewayError): void {
  if (res.headersSent) return;
  if (isFinal(err)) res.setHeader('x-should-retry', 'false');
  if (err.code === 'RATE_LIMITED') setHeaders(res, codec.rateLimitHeaders(err));
  if (err.code === 'AUTH_REQUIRED' || err.code === 'AUTH_INVALID' || err.code === 'FORBIDDEN') res.setHeader('WWW-Authenticate', bearerChallenge(gateway.policy, err));
  res.status(codec.statusOf?.(err) ?? err.status).json(codec.errorBody(err, res));
}

/** Budget headers for a refusal: the caller's budgets as they stand now (bounded read, best effort). */
async function refusalHeaders(res: Response, gateway: Gateway, edge: EdgeAuthentication | undefined): Promise<void> {
  if (!edge || res.headersSent) return;
  setHeaders(res, await readBudgetHeaders(gateway, edge.principal));
}

/** The router serving one compatible endpoint, whose JSON body parser (with its size limit) is `json`. */
export function compatRouter(gateway: Gateway, codec: WireCodec, json: RequestHandler, maxBodyBytes: number): Router {
  const router = Router();
  const begin: RequestHandler = (_req, res, next) => {
    const id = randomUUID();
    res.locals.requestId = id;
    res.setHeader('x-request-id', id);
    codec.prepare?.(res);
    // Before anything is awaited, so a client gone while its body is read still cancels the call.
    res.locals.signal = abortOnClose(res);
    next();
  };

  router.post(codec.path, begin, json, async (req, res) => {
    markRecorded(res);
    const requestId = res.locals.requestId as string;
    const signal = res.locals.signal as AbortSignal;
    const presented = presentedCredential(req, codec.credentialOf);
    let edge: EdgeAuthentication | undefined;
    try {
      edge = await gateway.authenticate(presented, { transport: codec.transport, requestId });
      // None presented under --dev-anonymous: the edge's verification names the principal.
      const credential: Credential = { secret: presented?.secret as string, verified: { policy: edge.policy, result: edge } };
      const { stream, includeUsage } = codec.options(req.body);
      const call: CompatCall = { requestId, created: Math.floor(Date.now() / 1000), maxTokens: DEFAULT_MAX_TOKENS, includeUsage };
      const decode = (raw: unknown) => {
        const args = codec.decode(raw);
        call.maxTokens = args.max_tokens ?? DEFAULT_MAX_TOKENS;
        return args;
      };
      const args = { raw: req.body, decode, modelNamesTier: true, outputCapField: codec.outputCapField?.(req.body), rejected: unreadBody(req) ?? codec.rejected?.(req) };
      if (stream) {
        await streamCall(res, gateway, codec, { credential, args, signal, edge, call });
        return;
      }
      const result = await gateway.complete({ credential, args, transport: codec.transport, signal, requestId });
      setBudgetHeaders(res, result.budgets);
      res.setHeader('x-tollgate-tier', result.tier);
      res.setHeader('x-tollgate-decision', result.decision.effect);
      codec.render(res, result, call);
    } catch (err) {
      await refusalHeaders(res, gateway, edge);
      renderError(codec, gateway, res, asGatewayError(err));
    }
  });

  // Body-parser failures (too large, not JSON, bad encoding): the caller is authenticated first, as
  // for any call, and the refusal goes through the pipeline so it is recorded with its code.
  router.use(codec.path, async (err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    markRecorded(res);
    const presented = presentedCredential(req, codec.credentialOf);
    const requestId = res.locals.requestId as string | undefined;
    let edge: EdgeAuthentication | undefined;
    try {
      edge = await gateway.authenticate(presented, { transport: codec.transport, requestId });
      const rejected = bodyError(err, maxBodyBytes);
      await gateway.complete({ credential: { secret: presented?.secret as string, verified: { policy: edge.policy, result: edge } }, args: { raw: undefined, rejected }, transport: codec.transport, requestId });
    } catch (refusal) {
      await refusalHeaders(res, gateway, edge);
      renderError(codec, gateway, res, asGatewayError(refusal));
    }
  });
  return router;
}

/**
 * A body the JSON parser left unread because of its Content-Type (text/plain, a form, none): judged
 * as no body, it would be refused for a missing `model`, which hides the real fault.
 */
export function unreadBody(req: Request): GatewayError | undefined {
  if (req.body !== undefined) return undefined;
  const length = req.headers['content-length'];
  if (req.headers['transfer-encoding'] === undefined && (length === undefined || Number(length) === 0)) return undefined;
  const type = req.headers['content-type'];
  return new GatewayError('INVALID_REQUEST', `The request body must be JSON, sent with Content-Type: application/json (it was sent ${type ? `as ${type}` : 'without one'}).`);
}

/** Whether a body the parser refused is JSON all the same (`null`, a number, a string: strict mode takes objects and arrays only). */
function parsesAsJson(body: unknown): boolean {
  if (typeof body !== 'string') return false;
  try {
    JSON.parse(body);
    return true;
  } catch {
    return false;
  }
}

/** What a body-parser error means for the caller. */
export function bodyError(err: unknown, maxBodyBytes: number): GatewayError {
  const e = err as { type?: string; status?: number; expose?: boolean; message?: string; body?: unknown };
  if (e.type === 'entity.too.large') return new GatewayError('PAYLOAD_TOO_LARGE', `The request body exceeds ${maxBodyBytes} bytes.`);
  if (e.type === 'entity.parse.failed') return new GatewayError('INVALID_REQUEST', parsesAsJson(e.body) ? 'The body must be a JSON object.' : 'The body is not valid JSON.');
  if (e.type === 'encoding.invalid') return new GatewayError('INVALID_REQUEST', e.message ?? 'The request body is not valid UTF-8.');
  if (e.status && e.status >= 400 && e.status < 500) return new GatewayError('INVALID_REQUEST', `The request could not be read${e.expose && e.message ? `: ${e.message}` : ''}.`);
  return asGatewayError(err);
}

interface StreamInput {
  credential: Credential;
  args: { raw: unknown; decode: (raw: unknown) => CompleteArgs; modelNamesTier: boolean; outputCapField?: string; rejected?: GatewayError };
  signal: AbortSignal;
  edge: EdgeAuthentication;
  call: CompatCall;
}

/**
 * Streams the answer as server-sent events. The status line waits for the first text, so a refusal
 * before any output still arrives as a plain error response with its own status. Budget headers go
 * with the head: the budgets as the call's own admission read them (this call not yet counted),
 * handed over by the gateway before the first text (`onHead`), not read again.
 */
async function streamCall(res: Response, gateway: Gateway, codec: WireCodec, input: StreamInput): Promise<void> {
  const { call } = input;
  let before: readonly BudgetView[] = [];
  let model: string | undefined;
  // The events written in one turn of the event loop (the head and the first delta, the deltas of
  // one upstream read, the last events and the end) leave in one write to the socket, not one each,
  // and as one chunk of the response: they are gathered as text and written once at the end of the
  // turn (each `res.write` is a chunk of its own, four buffers in the socket's write).
  let corked = false;
  let pending = '';
  const release = (): void => {
    corked = false;
    if (pending) {
      const text = pending;
      pending = '';
      res.write(text);
    }
    res.uncork();
  };
  const hold = (): void => {
    if (corked) return;
    corked = true;
    res.cork();
    process.nextTick(release);
  };
  const send: SseSend = (data, event) => {
    hold();
    pending += `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;
  };
  /** Ends the response with the events not yet written. */
  const end = (): void => {
    const text = pending;
    pending = '';
    if (text) res.end(text);
    else res.end();
  };
  const start = (served: string) => {
    if (model) return;
    model = served;
    setBudgetHeaders(res, before);
    res.status(200).setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-cache');
    hold();
    res.flushHeaders();
    codec.stream.start(send, served, call);
  };
  let result: CallResult;
  try {
    result = await gateway.complete({
      credential: input.credential,
      args: input.args,
      transport: codec.transport,
      signal: input.signal,
      requestId: call.requestId,
      onHead: (budgets) => {
        before = budgets;
      },
      onText: (delta, served) => {
        start(served);
        codec.stream.delta(send, delta, served, call);
      },
    });
  } catch (err) {
    const ge = asGatewayError(err);
    if (!model) {
      await refusalHeaders(res, gateway, input.edge);
      renderError(codec, gateway, res, ge);
    } else if (!res.writableEnded) {
      codec.stream.error(send, ge, call);
      end();
    }
    return;
  }
  start(result.model);
  codec.stream.end(send, result, call);
  end();
}
