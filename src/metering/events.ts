/**
 * One structured event per decision (allow, tier_down, deny, error), for FinOps and SIEM tools.
 * Field names follow the OpenTelemetry GenAI conventions where one exists. Prompt and completion
 * bodies are never included unless the policy's `metering.logPrompts` switch is on, and free text
 * (reasons, provider error messages, logged prompts) is scrubbed of credentials and of every
 * secret the policy holds.
 */
import type { CallContext } from '../pipeline/context.js';
import { outputCap } from '../pipeline/steps/reserve.js';
import { policySecrets, scrubSecrets, scrubValue } from './redact.js';

export interface DecisionEvent {
  event: 'tollgate.decision';
  'request.id': string;
  time: string;
  transport: string;
  effect: 'allow' | 'tier_down' | 'deny' | 'error';
  outcome: 'success' | 'refused' | 'failed';
  'error.code'?: string;
  'policy.version': string;
  'policy.rule_id'?: string;
  'policy.budget_id'?: string;
  reason?: string;
  'user.id'?: string;
  'user.teams'?: string[];
  'user.cost_center'?: string;
  'user.groups'?: string[];
  'auth.method'?: string;
  'actor.chain'?: string[];
  'gen_ai.operation.name': 'chat';
  'gen_ai.provider.name'?: string;
  'gen_ai.request.model'?: string;
  'gen_ai.response.model'?: string;
  /** The provider of the model asked for (`provider/model`), when the caller named one. */
  'tollgate.provider.requested'?: string;
  'gen_ai.request.max_tokens': number;
  'gen_ai.usage.input_tokens': number;
  'gen_ai.usage.output_tokens': number;
  'gen_ai.usage.cached_input_tokens'?: number;
  'tollgate.tier.requested'?: string;
  'tollgate.tier.served'?: string;
  'tollgate.model.served'?: string;
  'tollgate.reserved'?: { budget: string; subject: string; amount: number }[];
  'tollgate.charged'?: { budget: string; subject: string; amount: number; unit: string }[];
  'tollgate.estimated_input_tokens': number;
  /** What the reservation assumed: the input estimate and the most output tokens the call could produce. */
  'tollgate.reserved_tokens'?: { input: number; output: number };
  /** Max tokens sent upstream after lowering it to what the budget named can pay for. */
  'tollgate.output_clamp'?: { max_tokens: number; budget: string };
  'tollgate.cost_usd': number;
  'tollgate.attempts': { model: string; provider: string; ok: boolean; error?: string; status?: number; ms: number }[];
  'tollgate.latency_ms': number;
  'tollgate.upstream_ms'?: number;
  /** The quota store failed during the call: refused (unavailable), served on the local ledger (fail_open), or a settlement queued. */
  'tollgate.store_error'?: 'unavailable' | 'fail_open' | 'settle_failed';
  'gen_ai.prompt'?: unknown;
  'gen_ai.completion'?: string;
}

/** Builds the decision event from a finished call context. */
export function decisionEvent(ctx: CallContext, now: number): DecisionEvent {
  const secrets = policySecrets(ctx.policy);
  const d = ctx.decision;
  const requestedModel = d?.requestedModel ?? ctx.request.model;
  const effect = d ? d.effect : 'error';
  const p = ctx.principal;
  const event: DecisionEvent = {
    event: 'tollgate.decision',
    'request.id': ctx.id,
    time: new Date(ctx.startedAt).toISOString(),
    transport: ctx.transport,
    effect,
    outcome: ctx.error ? (d?.effect === 'deny' || ctx.error.code === 'BUDGET_EXHAUSTED' || ctx.error.code === 'FORBIDDEN' ? 'refused' : 'failed') : 'success',
    'error.code': ctx.error?.code,
    'policy.version': ctx.policy.version,
    'policy.rule_id': d?.ruleId,
    'policy.budget_id': d?.budgetId ?? (ctx.error?.details.budgetId as string | undefined),
    reason: scrubText(ctx.error?.message ?? d?.reason, secrets),
    'user.id': p?.user,
    'user.teams': p?.teams,
    'user.cost_center': p?.costCenter,
    'user.groups': p?.groups,
    'auth.method': p?.authMethod,
    'actor.chain': p?.actors,
    'gen_ai.operation.name': 'chat',
    'gen_ai.provider.name': ctx.served?.model.provider ?? ctx.reservation?.model.provider,
    'gen_ai.request.model': requestedModel,
    'gen_ai.response.model': ctx.served?.responseModel,
    'tollgate.provider.requested': requestedModel?.includes('/') ? requestedModel.slice(0, requestedModel.indexOf('/')) : undefined,
    'gen_ai.request.max_tokens': ctx.request.maxTokens,
    'gen_ai.usage.input_tokens': ctx.usage?.inputTokens ?? 0,
    'gen_ai.usage.output_tokens': ctx.usage?.outputTokens ?? 0,
    'gen_ai.usage.cached_input_tokens': ctx.usage?.cachedInputTokens,
    'tollgate.tier.requested': d?.requestedTier,
    'tollgate.tier.served': d && d.effect !== 'deny' ? (ctx.reservation?.tier ?? d.tier) : undefined,
    'tollgate.model.served': ctx.served?.model.ref,
    'tollgate.reserved': ctx.reservation?.amounts.length
      ? ctx.lines.map((l, i) => ({ budget: l.budget.config.id, subject: l.subject, amount: ctx.reservation!.amounts[i]! }))
      : undefined,
    'tollgate.output_clamp': ctx.outputClamp ? { max_tokens: ctx.outputClamp.tokens, budget: ctx.outputClamp.budgetId } : undefined,
    'tollgate.charged': ctx.charged?.map((amount, i) => ({
      budget: ctx.lines[i]!.budget.config.id,
      subject: ctx.lines[i]!.subject,
      amount,
      unit: ctx.lines[i]!.budget.unit === 'usd' ? 'micro_usd' : 'tokens',
    })),
    'tollgate.estimated_input_tokens': ctx.estimatedInputTokens,
    'tollgate.reserved_tokens': ctx.reservation && d && d.effect !== 'deny'
      ? { input: ctx.estimatedInputTokens, output: Math.max(...d.candidates.map((m) => outputCap(ctx, m))) }
      : undefined,
    'tollgate.cost_usd': (ctx.costMicroUsd ?? 0) / 1e6,
    'tollgate.attempts': ctx.attempts.map((a) => ({ model: a.model, provider: a.provider, ok: a.ok, error: a.errorCode, status: a.status, ms: a.ms })),
    'tollgate.latency_ms': now - ctx.startedAt,
    'tollgate.upstream_ms': ctx.upstreamMs,
    'tollgate.store_error': ctx.storeError,
  };
  if (ctx.policy.config.metering.logPrompts) {
    // Logged on request only, and even then without the credentials a prompt may carry.
    event['gen_ai.prompt'] = scrubValue({ system: ctx.request.system, messages: ctx.request.messages }, secrets);
    event['gen_ai.completion'] = scrubText(ctx.served?.text, secrets);
  }
  return event;
}

function scrubText(text: string | undefined, secrets: readonly string[]): string | undefined {
  return text === undefined ? undefined : scrubSecrets(text, secrets);
}

/**
 * Where decision events go. `emit` runs on the call path: it must not block, throw or wait on I/O.
 * `close` flushes what is buffered, on shutdown.
 */
export interface EventSink {
  emit(event: DecisionEvent): void;
  close?(): Promise<void>;
}
