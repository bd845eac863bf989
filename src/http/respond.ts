/**
 * The body every HTTP refusal outside JSON-RPC carries: `{ error: { code, message, details } }`,
 * with the status the code maps to.
 */
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import type { GatewayError } from '../errors.js';
import type { WireCodec } from './compat.js';

export function sendError(res: Response, err: GatewayError): void {
  res.status(err.status).json({ error: err.toJSON() });
}

/**
 * A refusal made before any route, to a caller of a compatible API (`wire`): in that API's error
 * shape and status, with its request id headers, set before the answer so that the recorded refusal
 * carries the same id.
 */
export function sendWireError(res: Response, wire: Pick<WireCodec, 'errorBody' | 'prepare'>, err: GatewayError): void {
  res.locals.requestId ??= randomUUID();
  res.setHeader('x-request-id', res.locals.requestId as string);
  wire.prepare?.(res);
  res.status(err.status).json(wire.errorBody(err, res));
}
