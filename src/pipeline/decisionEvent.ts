/**
 * The decision event of a finished call context: whichever step ended the call, one event says
 * what was decided, who asked (or what they presented, when they could not be identified), what
 * was reserved and charged. Free text is scrubbed of credentials and of every secret the policy holds.
 */
import { createHash } from 'node:crypto';
import type { GatewayError } from '../errors.js';
import type { DecisionEvent } from '../metering/events.js';
import { policySecrets, scrubPrompt, scrubSecrets, withoutQuotes } from '../metering/redact.js';
import { looksLikeJwt } from '../identity/jwt.js';
import { outputCap } from '../policy/plan.js';
import { LIMIT_UNITS } from '../policy/limits.js';
import { callOutputCap, reservedInputTokens, type CallContext } from './context.js';
import type { Settlement } from './ledger.js';

/** The unit a rate limit line is charged in, by the limit's kind. */

/**
 * Builds the decision event from a finished call context and what it is settled at (settlementOf,
 * which the ledger writes the same amounts from), undefined when it is released.
 */
export function decisionEvent(ctx: CallContext, now: number, settled: Settlement | undefined): DecisionEvent {
  const secrets = policySecrets(ctx.policy);
  const d = ctx.decision;
  const requestedModel = d?.requestedModel ?? ctx.request?.model;
  const effect = d ? d.effect : 'error';
  const p = ctx.principal;
  const event: DecisionEvent = {
    event: 'tollgate.decision',
    'request.id': ctx.id,
    time: new Date(ctx.startedAt).toISOString(),
    transport: ctx.transport,
    effect,
    outcome: ctx.error ? (d?.effect === 'deny' || isRefusal(ctx.error) ? 'refused' : 'failed') : 'success',
    'error.code': ctx.error?.code,
    'policy.version': ctx.policy.version,
    'policy.rule_id': d?.ruleId,
    'policy.budget_id': d?.budgetId ?? (ctx.error?.details.budgetId as string | undefined),
    // Cut twice: before the search for quotes, whose cost grows with the text (a provider may quote
    // all of a long prompt), and after the scrub, which must see a credential whole to find it.
    reason: bounded(scrubText(unquoted(ctx, bounded(ctx.error?.message ?? d?.reason, 2 * REASON_MAX_CHARS)), secrets)),
    'user.id': p?.user,
    'user.teams': p?.teams,
    'user.cost_center': p?.costCenter,
    'user.app': p?.app,
    'user.groups': p?.groups,
    'auth.method': p?.authMethod,
    'auth.credential.id': p?.credentialId,
    'actor.chain': p?.actors,
    ...(p ? {} : credentialOf(ctx)),
    'gen_ai.operation.name': 'chat',
    'gen_ai.provider.name': ctx.served?.model.provider ?? ctx.reservation?.model.provider,
    'gen_ai.request.model': requestedModel,
    'gen_ai.response.model': ctx.served?.responseModel,
    'tollgate.provider.requested': requestedModel?.includes('/') ? requestedModel.slice(0, requestedModel.indexOf('/')) : undefined,
    'gen_ai.request.max_tokens': ctx.request?.maxTokens,
    'gen_ai.usage.input_tokens': ctx.usage?.inputTokens ?? 0,
    'gen_ai.usage.output_tokens': ctx.usage?.outputTokens ?? 0,
    'gen_ai.usage.cached_input_tokens': ctx.usage?.cachedInputTokens,
    'tollgate.tier.requested': d?.requestedTier,
    'tollgate.tier.served': d && d.effect !== 'deny' ? (ctx.reservation?.tier ?? d.tier) : undefined,
    // A call cut off after its provider began answering (the caller left, the stream broke) was
    // served in part and is charged for that model: every report puts its cost under it.
    'tollgate.model.served': ctx.served?.model.ref ?? ctx.consumed?.at(-1)?.model.ref,
    'tollgate.reserved': ctx.reservation?.amounts.length
      ? ctx.lines.map((l, i) => ({ budget: l.budget.config.id, subject: l.subject, amount: ctx.reservation!.amounts[i]! }))
      : undefined,
    'tollgate.rate_limit': ctx.rateLimited && ctx.error?.code === 'RATE_LIMITED'
      ? {
          id: ctx.rateLimited.line.limit.config.id,
          scope: ctx.rateLimited.line.limit.config.scope,
          subject: ctx.rateLimited.line.subject,
          kind: ctx.rateLimited.line.limit.kind,
          limit: ctx.rateLimited.line.limit.limit,
          retry_after_ms: ctx.error.details.retryAfterMs as number,
        }
      : undefined,
    'tollgate.output_clamp': ctx.outputClamp ? { max_tokens: ctx.outputClamp.tokens, budget: ctx.outputClamp.budgetId } : undefined,
    'tollgate.charged': settled?.budgets.map((amount, i) => ({
      budget: ctx.lines[i]!.budget.config.id,
      subject: ctx.lines[i]!.subject,
      amount,
      unit: ctx.lines[i]!.budget.unit === 'usd' ? 'micro_usd' : 'tokens',
    })),
    'tollgate.limits_charged': settled?.limits.length
      ? settled.limits.map((amount, i) => {
          const l = ctx.reservation!.limits![i]!.line;
          return { limit: l.limit.config.id, subject: l.subject, amount, unit: LIMIT_UNITS[l.limit.kind] };
        })
      : undefined,
    'tollgate.estimated_input_tokens': ctx.estimatedInputTokens,
    'tollgate.input_counted': ctx.inputTokens ? [...ctx.inputTokens].map(([model, tokens]) => ({ model, tokens, exact: ctx.inputCounted?.has(model) ?? false })) : undefined,
    'tollgate.reserved_tokens': ctx.reservation && d && d.effect !== 'deny'
      ? { input: Math.max(...d.candidates.map((m) => reservedInputTokens(ctx, m))), output: Math.max(...d.candidates.map((m) => callOutputCap(ctx, m))) }
      : undefined,
    'tollgate.overrun': ctx.overrun,
    'tollgate.cost_usd': (ctx.costMicroUsd ?? 0) / 1e6,
    'tollgate.attempts': ctx.attempts.map((a) => ({ model: a.model, provider: a.provider, ok: a.ok, error: a.errorCode, status: a.status, ms: a.ms })),
    'tollgate.latency_ms': now - ctx.startedAt,
    'tollgate.upstream_ms': ctx.upstreamMs,
    'tollgate.store_error': ctx.storeError,
    'tollgate.settled_by': settled ? 'call' : undefined,
    'tollgate.dry_run': ctx.purpose === 'estimate' || ctx.purpose === 'count_tokens' ? ctx.purpose : ctx.authenticatesFor,
    'tollgate.estimate': ctx.purpose === 'estimate' && !ctx.error && d ? estimateOf(ctx) : undefined,
    'tollgate.token_count': ctx.tokenCount ? { model: ctx.tokenCount.model.ref, tokens: ctx.tokenCount.tokens, exact: ctx.tokenCount.exact } : undefined,
  };
  if (ctx.policy.config.metering.logPrompts) {
    // Logged on request only, and even then without the credentials a prompt may carry; a message
    // sent as parts is logged as its joined text.
    if (ctx.request) event['gen_ai.prompt'] = loggedPrompt(ctx.request, secrets);
    event['gen_ai.completion'] = scrubText(ctx.served?.text, secrets);
  }
  return event;
}

/** What an estimate answered: the refusal the call would meet, or what it would reserve and cost. */
function estimateOf(ctx: CallContext): NonNullable<DecisionEvent['tollgate.estimate']> {
  const d = ctx.decision!;
  const c = ctx.prediction?.candidate;
  const cost = ctx.prediction?.costMicroUsd;
  return {
    code: d.effect === 'deny' ? d.code : undefined,
    reserve: c
      ? c.lines.map((i) => ({ budget: ctx.lines[i]!.budget.config.id, subject: ctx.lines[i]!.subject, amount: c.amounts[i]!, unit: ctx.lines[i]!.budget.unit === 'usd' ? 'micro_usd' : 'tokens' }))
      : [],
    max_tokens: c && ctx.request ? Math.max(...c.models.map((m) => outputCap(ctx.request!.maxTokens, m, c.clamp))) : undefined,
    cost_usd: cost ? { min: cost.min / 1e6, max: cost.max / 1e6 } : undefined,
  };
}

/**
 * The prompt as logged: its texts scrubbed together, so that a credential cut across two messages
 * is scrubbed as the content rules see it, whole.
 */
function loggedPrompt(request: NonNullable<CallContext['request']>, secrets: readonly string[]): DecisionEvent['gen_ai.prompt'] {
  const texts = scrubPrompt(promptTexts(request), secrets);
  const first = request.system === undefined ? 0 : 1;
  return { system: request.system === undefined ? undefined : texts[0], messages: request.messages.map(({ role }, i) => ({ role, content: texts[first + i] })) };
}

/**
 * An error's message without what it quotes of the prompt (a provider's may quote the request),
 * unless prompts are logged. A decision's own reason is tollgate's text: it is not searched.
 */
function unquoted(ctx: CallContext, reason: string | undefined): string | undefined {
  if (reason === undefined || !ctx.error || !ctx.request || ctx.policy.config.metering.logPrompts) return reason;
  return withoutQuotes(reason, promptTexts(ctx.request));
}

/** The system prompt, when there is one, then every message's text. */
function promptTexts(request: NonNullable<CallContext['request']>): string[] {
  const texts = request.messages.map((m) => m.content);
  return request.system === undefined ? texts : [request.system, ...texts];
}

/** The longest reason an event keeps: a refusal's message may name a value the caller sent, of any length, and the journal keeps it. */
const REASON_MAX_CHARS = 1000;

function bounded(reason: string | undefined, max = REASON_MAX_CHARS): string | undefined {
  return reason === undefined || reason.length <= max ? reason : `${reason.slice(0, max - 1)}…`;
}

function scrubText(text: string | undefined, secrets: readonly string[]): string | undefined {
  return text === undefined ? undefined : scrubSecrets(text, secrets);
}


/** Codes by which the gateway says no to this caller (identity, policy, budget), as opposed to a call that could not be made. */
const REFUSALS: ReadonlySet<string> = new Set(['AUTH_REQUIRED', 'AUTH_INVALID', 'FORBIDDEN', 'POLICY_DENIED', 'BUDGET_EXHAUSTED', 'RATE_LIMITED']);

function isRefusal(err: GatewayError): boolean {
  return REFUSALS.has(err.code);
}

/** What an unidentified caller presented: its kind and a short fingerprint, never the secret. */
function credentialOf(ctx: CallContext): Pick<DecisionEvent, 'auth.credential.kind' | 'auth.credential.fingerprint'> {
  const secret = ctx.credential?.secret;
  if (!secret) return { 'auth.credential.kind': 'none' };
  return {
    'auth.credential.kind': looksLikeJwt(secret) ? 'jwt' : 'api_key',
    'auth.credential.fingerprint': createHash('sha256').update(secret, 'utf8').digest('hex').slice(0, 12),
  };
}
