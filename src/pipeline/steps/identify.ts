import { GatewayError } from '../../errors.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';

/**
 * Makes sure the transport attached a principal. Credentials are verified at the edge (HTTP bearer
 * middleware, stdio start-up), so a call without one here is a wiring fault caught before any charge.
 */
export function requirePrincipal(): Middleware<CallContext> {
  return async function identify(ctx, next) {
    if (!ctx.principal) throw new GatewayError('AUTH_REQUIRED', 'No credential was presented; send an API key or token.');
    await next();
  };
}
