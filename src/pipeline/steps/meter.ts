import { asGatewayError } from '../../errors.js';
import { decisionEvent, type EventSink } from '../../metering/events.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';

export interface MeterStepOptions {
  sink: EventSink;
  now: () => number;
  /** Takes work that finishes a call after its answer: the gateway waits for it before closing. */
  background: (work: Promise<void>) => void;
}

/**
 * The outermost step: whatever happens below, exactly one decision event leaves, and anything
 * thrown reaches the transport as a GatewayError. When the ledger write runs on after the answer
 * (ctx.settling), the event leaves once it is done, so it reports what the store recorded; its
 * latency is still the caller's.
 */
export function meter(opts: MeterStepOptions): Middleware<CallContext> {
  return async function meterCall(ctx, next) {
    try {
      await next();
    } catch (err) {
      ctx.error = asGatewayError(err);
      if (ctx.error.code === 'INTERNAL') ctx.log.error({ err }, 'internal error');
      throw ctx.error;
    } finally {
      const at = opts.now();
      if (ctx.settling) opts.background(ctx.settling.then(() => opts.sink.emit(decisionEvent(ctx, at))));
      else opts.sink.emit(decisionEvent(ctx, at));
    }
  };
}
