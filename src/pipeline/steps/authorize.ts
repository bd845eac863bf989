import { GatewayError } from '../../errors.js';
import type { FgaAuthorizer } from '../../identity/openfga.js';
import { findModel } from '../../policy/decide.js';
import type { Policy } from '../../policy/load.js';
import type { Middleware } from '../compose.js';
import { admitted, type CallContext } from '../context.js';

/** The tier and model a request asks for, as the decision will read them; undefined when unknown. */
function requested(policy: Policy, ctx: CallContext): { tier: string; model?: string; provider?: string } | undefined {
  const { request } = admitted(ctx);
  if (request.model) {
    const m = findModel(policy, request.model);
    if (!m) return undefined;
    return { tier: request.tier && m.tiers.includes(request.tier) ? request.tier : m.tiers[0]!, model: m.ref, provider: m.provider };
  }
  const tier = request.tier ?? policy.defaultTier;
  const first = policy.tierModels.get(tier)?.[0];
  if (!first) return undefined;
  return { tier, model: first.ref, provider: first.provider };
}

/**
 * Asks OpenFGA whether the caller may use what they asked for, when the policy configures it.
 * Runs after authenticate and validate, and before the budget decision, so a refusal reserves and charges nothing.
 * An unknown tier or model passes through: the decision reports it as UNKNOWN_MODEL.
 */
export function checkRelationships(opts: { now: () => number }): Middleware<CallContext> {
  // One authorizer (client and decision cache) per policy; a reloaded policy starts afresh.
  const authorizers = new WeakMap<Policy, FgaAuthorizer>();
  return async function authorize(ctx, next) {
    const config = ctx.policy.config.identity.openfga;
    const target = config ? requested(ctx.policy, ctx) : undefined;
    if (!config || !target) return next();
    let authz = authorizers.get(ctx.policy);
    if (!authz) {
      // The OpenFGA SDK is loaded only by a policy that uses it.
      const { FgaAuthorizer } = await import('../../identity/openfga.js');
      authz = authorizers.get(ctx.policy) ?? new FgaAuthorizer(config, { egressAllow: ctx.policy.config.egress.allow, now: opts.now });
      authorizers.set(ctx.policy, authz);
    }
    const outcome = await authz.check({ principal: admitted(ctx).principal, request: target });
    ctx.log.debug({ authz: Object.assign({}, outcome.tuple, { allowed: outcome.allowed, source: outcome.source }) }, 'openfga check');
    if (!outcome.allowed) {
      const { user, relation, object } = outcome.tuple;
      throw new GatewayError('FORBIDDEN', `Not authorized: OpenFGA does not grant ${user} ${relation} on ${object}.`, { check: outcome.tuple });
    }
    await next();
  };
}
