import { asGatewayError } from '../../errors.js';
import type { EventSink } from '../../metering/events.js';
import { decisionEvent } from '../decisionEvent.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';

export interface MeterStepOptions {
  sink: EventSink;
  now: () => number;
  /** Takes work that finishes a call after its answer: the gateway waits for it before closing. */
  background: (work: Promise<void>) => void;
}

/**
 * The outermost step: whatever happens below, exactly one decision event leaves (for an edge
 * authentication, only when it is refused), and anything thrown reaches the transport as a
 * GatewayError. When the ledger write runs on after the answer
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
      // An authentication at the edge that succeeded is not a decision; the call it admits records one.
      if (ctx.purpose === 'complete' || ctx.error) record(ctx, opts);
    }
  };
}

function record(ctx: CallContext, opts: MeterStepOptions): void {
  const at = opts.now();
  if (ctx.settling) opts.background(ctx.settling.then(() => opts.sink.emit(decisionEvent(ctx, at))));
  else opts.sink.emit(decisionEvent(ctx, at));
}
