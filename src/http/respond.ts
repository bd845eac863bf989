/**
 * The body every HTTP refusal outside JSON-RPC carries: `{ error: { code, message, details } }`,
 * with the status the code maps to.
 */
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import type { GatewayError } from '../errors.js';
import type { WireCodec } from './compat.js';

/**
 * The response's request id, made now if no step made one, and sent as `x-request-id`: a refusal
 * recorded after the answer (edgeRefusals) carries the same id, so the caller can name its event.
 */
export function nameResponse(res: Response): string {
  const id = (res.locals.requestId ??= randomUUID()) as string;
  res.setHeader('x-request-id', id);
  return id;
}

export function sendError(res: Response, err: GatewayError): void {
  res.status(err.status).json({ error: err.toJSON() });
}

/**
 * A refusal made before any route, to a caller of a compatible API (`wire`): in that API's error
 * shape and status, with its request id headers, set before the answer so that the recorded refusal
 * carries the same id.
 */
export function sendWireError(res: Response, wire: Pick<WireCodec, 'errorBody' | 'prepare'>, err: GatewayError): void {
  nameResponse(res);
  wire.prepare?.(res);
  res.status(err.status).json(wire.errorBody(err, res));
}

/** A refusal before any route: in a compatible API's shape when the caller is one (`wire`), else tollgate's; named either way (nameResponse). */
export function sendRefusal(res: Response, wire: Pick<WireCodec, 'errorBody' | 'prepare'> | undefined, err: GatewayError): void {
  if (wire) return sendWireError(res, wire, err);
  nameResponse(res);
  sendError(res, err);
}
