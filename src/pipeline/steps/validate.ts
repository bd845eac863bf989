import { parseCompleteArgs } from '../../call/request.js';
import type { Policy } from '../../policy/load.js';
import type { Middleware } from '../compose.js';
import type { CallArguments, CallContext } from '../context.js';

/**
 * Checks the call's arguments against the policy the call started with (its `limits`, its tiers)
 * and sets `ctx.request`. A transport's decoder runs here too, so a malformed body is a refusal
 * with an event like any other. A refusal the transport met before it could read the body
 * (too large, not JSON) is raised here, after the caller is known. A request set by a trusted
 * in-process caller passes through.
 */
export function validate(): Middleware<CallContext> {
  return async function validateRequest(ctx, next) {
    if (!ctx.request) {
      if (!ctx.args) throw new Error('validate step: the call has neither arguments nor a request');
      ctx.request = readArguments(ctx.args, ctx.policy);
    }
    await next();
  };
}

/** The validated request of one call's arguments under `policy`. */
export function readArguments(args: CallArguments, policy: Policy) {
  if (args.rejected) throw args.rejected;
  const neutral = args.decode ? args.decode(args.raw) : args.raw;
  const request = parseCompleteArgs(neutral, policy.config.limits, args.outputCapField);
  // An API whose one `model` field may name a tier: a tier name selects the tier.
  if (args.modelNamesTier && request.model !== undefined && policy.hasTier(request.model)) {
    // A copy whose existing fields change: `{ ...request, tier, model }` would be the same object,
    // but a spread followed by fields is what test/unit/hidden-classes.test.ts keeps off this path.
    const byTier = { ...request };
    byTier.tier = request.tier ?? request.model;
    byTier.model = undefined;
    return byTier;
  }
  return request;
}
