import { asGatewayError } from '../../errors.js';
import { decisionEvent, type EventSink } from '../../metering/events.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';

/**
 * The outermost step: whatever happens below, exactly one decision event leaves, and anything
 * thrown reaches the transport as a GatewayError.
 */
export function meter(opts: { sink: EventSink; now: () => number }): Middleware<CallContext> {
  return async function meterCall(ctx, next) {
    try {
      await next();
    } catch (err) {
      ctx.error = asGatewayError(err);
      if (ctx.error.code === 'INTERNAL') ctx.log.error({ err }, 'internal error');
      throw ctx.error;
    } finally {
      opts.sink.emit(decisionEvent(ctx, opts.now()));
    }
  };
}
