/**
 * Dry runs over HTTP, through the same pipeline as a call up to the reservation (Gateway.estimate
 * and Gateway.countTokens), each journaled as a decision event that charges nothing:
 *
 *   POST /v1/tollgate/estimate       the `estimate` MCP tool: the complete tool's arguments in, what
 *                                    that call would get now out (tollgate's own JSON)
 *   POST /v1/messages/count_tokens   Anthropic's token count: a Messages body (max_tokens optional)
 *                                    in, `{input_tokens}` out, for the model that would serve it
 *
 * The key goes in `Authorization: Bearer` or `x-api-key`. Bodies that cannot be read are refused
 * after authentication and recorded, as on the compatible endpoints.
 */
import { randomUUID } from 'node:crypto';
import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { DEFAULT_MAX_TOKENS, type CompleteArgs } from '../call/request.js';
import { asGatewayError, type GatewayError } from '../errors.js';
import type { EdgeAuthentication, Gateway } from '../gateway/gateway.js';
import type { CallArguments, Credential, DryRun, TransportName } from '../pipeline/context.js';
import { anthropicCodec, decodeMessagesRequest } from './anthropicCompat.js';
import { bearerChallenge } from './authMetadata.js';
import { abortOnClose, bodyError, isFinal, presentedCredential, unreadBody, type WireCodec } from './compat.js';
import { markRecorded } from './edgeRefusals.js';

export const ESTIMATE_PATH = '/v1/tollgate/estimate';
export const COUNT_TOKENS_PATH = '/v1/messages/count_tokens';

/** Gives the request its id (`x-request-id`, and the codec's own header) and its cancellation signal, before anything is awaited. */
export function beginRequest(codec?: Pick<WireCodec, 'prepare'>): RequestHandler {
  return (_req, res, next) => {
    const id = randomUUID();
    res.locals.requestId = id;
    res.setHeader('x-request-id', id);
    codec?.prepare?.(res);
    res.locals.signal = abortOnClose(res);
    next();
  };
}

/** Writes a refusal in a codec's error shape, with the headers the compatible endpoints send. */
export function renderCodecError(codec: Pick<WireCodec, 'errorBody' | 'statusOf'>, gateway: Gateway, res: Response, err: GatewayError): void {
  if (res.headersSent) return;
  if (isFinal(err)) res.setHeader('x-should-retry', 'false');
  if (err.code === 'AUTH_REQUIRED' || err.code === 'AUTH_INVALID' || err.code === 'FORBIDDEN') res.setHeader('WWW-Authenticate', bearerChallenge(gateway.policy, err));
  res.status(codec.statusOf?.(err) ?? err.status).json(codec.errorBody(err, res));
}

/** tollgate's own error body (`{error: {code, message, details}}`), as a codec for renderCodecError. */
const tollgateErrors: Pick<WireCodec, 'errorBody'> = { errorBody: (err) => ({ error: err.toJSON() }) };

interface DryRunRoute {
  path: string;
  dryRun: DryRun;
  transport: TransportName;
  errors: Pick<WireCodec, 'errorBody' | 'statusOf' | 'prepare' | 'rejected'>;
  /** How the body becomes `complete` arguments (undefined: it already is them). */
  decode?: (raw: unknown) => CompleteArgs;
  run(gateway: Gateway, call: { credential: Credential; args: CallArguments; transport: TransportName; signal: AbortSignal; requestId: string }, res: Response): Promise<void>;
}

const ROUTES: DryRunRoute[] = [
  {
    path: ESTIMATE_PATH,
    dryRun: 'estimate',
    transport: 'http',
    errors: tollgateErrors,
    async run(gateway, call, res) {
      res.json(await gateway.estimate(call));
    },
  },
  {
    path: COUNT_TOKENS_PATH,
    dryRun: 'count_tokens',
    transport: 'anthropic',
    errors: anthropicCodec,
    // Anthropic's count takes no max_tokens; a call's default stands in for the rules that read it.
    decode: (raw) => decodeMessagesRequest({ max_tokens: DEFAULT_MAX_TOKENS, ...(raw as object | null) }),
    async run(gateway, call, res) {
      const count = await gateway.countTokens(call);
      res.setHeader('x-tollgate-model', count.model);
      res.setHeader('x-tollgate-token-count', count.exact ? 'exact' : 'bound');
      res.json({ input_tokens: count.inputTokens });
    },
  },
];

/** The dry-run routes, whose JSON body parser (with its size limit) is `json`. */
export function dryRunRouter(gateway: Gateway, json: RequestHandler, maxBodyBytes: number): Router {
  const router = Router();
  for (const route of ROUTES) {
    const authenticate = (req: Request, res: Response): Promise<EdgeAuthentication> => {
      return gateway.authenticate(presentedCredential(req, anthropicCodec.credentialOf), { transport: route.transport, requestId: res.locals.requestId as string, dryRun: route.dryRun });
    };
    const credentialFor = (req: Request, edge: EdgeAuthentication): Credential => ({ secret: anthropicCodec.credentialOf(req)!, verified: { policy: edge.policy, result: edge } });
    router.post(route.path, beginRequest(route.errors), json, async (req, res) => {
      markRecorded(res);
      const requestId = res.locals.requestId as string;
      try {
        const edge = await authenticate(req, res);
        const args: CallArguments = { raw: req.body, decode: route.decode, modelNamesTier: true, rejected: unreadBody(req) ?? route.errors.rejected?.(req) };
        await route.run(gateway, { credential: credentialFor(req, edge), args, transport: route.transport, signal: res.locals.signal as AbortSignal, requestId }, res);
      } catch (err) {
        renderCodecError(route.errors, gateway, res, asGatewayError(err));
      }
    });
    // A body that cannot be read: the caller is authenticated first, and the refusal recorded as theirs.
    router.use(route.path, async (err: unknown, req: Request, res: Response, next: NextFunction) => {
      if (res.headersSent) {
        next(err);
        return;
      }
      markRecorded(res);
      const requestId = res.locals.requestId as string | undefined;
      try {
        const edge = await authenticate(req, res);
        const call = { credential: credentialFor(req, edge), args: { raw: undefined, rejected: bodyError(err, maxBodyBytes) }, transport: route.transport, signal: res.locals.signal as AbortSignal, requestId: requestId! };
        await route.run(gateway, call, res);
      } catch (refusal) {
        renderCodecError(route.errors, gateway, res, asGatewayError(refusal));
      }
    });
  }
  return router;
}
