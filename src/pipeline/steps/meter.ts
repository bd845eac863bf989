import { asGatewayError } from '../../errors.js';
import type { DecisionRecord } from '../../quota/store.js';
import { decisionEvent } from '../decisionEvent.js';
import { settlementOf, type Settlement } from '../ledger.js';
import type { Middleware } from '../compose.js';
import type { CallContext } from '../context.js';

export interface MeterStepOptions {
  /** Writes the call's outcome to the journal: its charge (or release) and its decision event, together. Never rejects. */
  commit: (ctx: CallContext, event: DecisionRecord, settled: Settlement | undefined) => Promise<void>;
  now: () => number;
  /** Takes work that finishes a call after its answer: the gateway waits for it before closing. */
  background: (work: Promise<void>) => void;
}

/**
 * The outermost step: whatever happens below, exactly one decision event is committed (for an edge
 * authentication, only when it is refused), with the call's charge or release in the same journal
 * write, and anything thrown reaches the transport as a GatewayError. A call that holds a
 * reservation answers before that write when `limits.settleBeforeReply` is false (the reservation
 * covers it until then, and recovery charges it if the process dies after dispatch); a refusal
 * before any reservation is committed before the caller hears of it.
 */
export function meter(opts: MeterStepOptions): Middleware<CallContext> {
  return async function meterCall(ctx, next) {
    try {
      await next();
    } catch (err) {
      ctx.error = asGatewayError(err);
      const loggedAlready = err === ctx.args?.rejected && ctx.args?.rejectedLogged === true;
      if (ctx.error.code === 'INTERNAL' && !loggedAlready) ctx.log.error({ err }, 'internal error');
      throw ctx.error;
    } finally {
      // An authentication at the edge that succeeded is not a decision; the call it admits records one.
      if (ctx.purpose !== 'authenticate' || ctx.error) {
        // Settled at amounts made once, for the event and for the ledger's lines.
        const settled = settlementOf(ctx);
        const writing = opts.commit(ctx, decisionEvent(ctx, opts.now(), settled) as unknown as DecisionRecord, settled);
        if (ctx.reservation?.store && !ctx.policy.config.limits.settleBeforeReply) opts.background(writing);
        else await writing;
      }
    }
  };
}
