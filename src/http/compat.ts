/**
 * What the OpenAI- and Anthropic-compatible endpoints share: the bearer middleware re-dressed in
 * the API's own error shape, budget headers, cancellation on disconnect and the `model` field
 * read as a model or a tier. Each endpoint only translates its wire format.
 */
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { asGatewayError, GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import type { Principal } from '../identity/principal.js';
import type { Policy } from '../policy/load.js';
import { readBudgetHeaders, setHeaders } from './budgetHeaders.js';

/** Writes a GatewayError in one API's error shape (status included). */
export type ErrorRenderer = (res: Response, err: GatewayError) => void;

export interface CompatRouteOptions {
  /** The app's bearer middleware: the same verifier, and so the same identities, as /mcp. */
  requireAuth: RequestHandler;
  /** The app's JSON body parser, with its size limit. */
  json: RequestHandler;
  maxBodyBytes: number;
}

/**
 * Runs the app's bearer middleware but answers its refusals in the API's own error shape, so an
 * SDK raises its authentication error class with tollgate's reason in the message.
 */
export function authInApiShape(requireAuth: RequestHandler, render: ErrorRenderer): RequestHandler {
  return function authenticateCompat(req, res, next) {
    const json = res.json.bind(res);
    res.json = (body: unknown) => {
      res.json = json;
      const description = (body as { error_description?: unknown } | undefined)?.error_description;
      const message = typeof description === 'string' ? description : 'The credential could not be verified.';
      let code: GatewayError['code'] = 'INTERNAL';
      if (res.statusCode === 401) code = req.headers.authorization ? 'AUTH_INVALID' : 'AUTH_REQUIRED';
      else if (res.statusCode === 403) code = 'FORBIDDEN';
      else if (res.statusCode === 400) code = 'INVALID_REQUEST';
      render(res, new GatewayError(code, message));
      return res;
    };
    void requireAuth(req, res, (err?: unknown) => {
      res.json = json;
      next(err);
    });
  };
}

/** The principal the bearer middleware resolved. */
export function principalOf(req: Request): Principal {
  const principal = req.auth?.extra?.principal as Principal | undefined;
  if (!principal) throw new GatewayError('AUTH_REQUIRED', 'No credential was presented; send an API key or token.');
  return principal;
}

/** Budget headers for a refusal: the caller's budgets as they stand now (bounded read, best effort). */
export async function setBudgetHeadersFor(res: Response, gateway: Gateway, principal: Principal | undefined): Promise<void> {
  if (!principal || res.headersSent) return;
  setHeaders(res, await readBudgetHeaders(gateway, principal));
}

/** Gives the call its request id, echoed as `x-request-id` (also on auth refusals) and kept in `res.locals.requestId`. */
export function startRequest(_req: Request, res: Response, next: NextFunction): void {
  const id = randomUUID();
  res.locals.requestId = id;
  res.setHeader('x-request-id', id);
  next();
}

/** Aborted when the client goes away before the response is finished, so the call settles early. */
export function abortOnClose(res: Response): AbortSignal {
  const ac = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  return ac.signal;
}

/** Reads an API's `model` field: a tier name selects the tier, anything else names a model. */
export function modelOrTier(policy: Policy, name: string | undefined): { model?: string; tier?: string } {
  if (!name) return {};
  return policy.config.tiers[name] ? { tier: name } : { model: name };
}

/** Refusals a retry cannot fix; SDKs that honour `x-should-retry` stop retrying them. */
export function isFinal(err: GatewayError): boolean {
  return err.status < 500 && err.code !== 'CANCELLED';
}

/**
 * An error middleware for a compat router: body-parser failures (too large, not JSON) and
 * anything unexpected, in the API's own shape.
 */
export function compatErrorHandler(render: ErrorRenderer, maxBodyBytes: number) {
  return function compatErrors(err: unknown, _req: Request, res: Response, next: NextFunction): void {
    if (res.headersSent) {
      next(err);
      return;
    }
    const e = err as { type?: string; status?: number };
    if (e.type === 'entity.too.large') render(res, new GatewayError('PAYLOAD_TOO_LARGE', `The request body exceeds ${maxBodyBytes} bytes.`));
    else if (e.type === 'entity.parse.failed') render(res, new GatewayError('INVALID_REQUEST', 'The body is not valid JSON.'));
    else if (e.status && e.status >= 400 && e.status < 500) render(res, new GatewayError('INVALID_REQUEST', 'The request could not be read.'));
    else render(res, asGatewayError(err));
  };
}
