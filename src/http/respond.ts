/**
 * The body every HTTP refusal outside JSON-RPC carries: `{ error: { code, message, details } }`,
 * with the status the code maps to.
 */
import type { Response } from 'express';
import type { GatewayError } from '../errors.js';

export function sendError(res: Response, err: GatewayError): void {
  res.status(err.status).json({ error: err.toJSON() });
}
