/**
 * Tool result schemas, and the `complete` tool's input schema (the call core's wire-neutral
 * arguments). Arguments are validated by the pipeline's validate step, not by the SDK, so a bad
 * argument comes back as an INVALID_REQUEST tool error naming each offending field.
 */
import { z } from 'zod';
import { completeArgs } from '../../call/request.js';
import { STOP_REASONS } from '../../providers/provider.js';

export { completeArgs };

const budgetView = z.object({
  id: z.string(),
  scope: z.string(),
  subject: z.string(),
  unit: z.enum(['tokens', 'usd']),
  limit: z.number(),
  used: z.number(),
  reserved: z.number(),
  remaining: z.number(),
  /** How far `used` is past the limit, when a provider billed more than was reserved. */
  overrun: z.number().optional(),
  resetsAt: z.string(),
});

export const completeResult = z.object({
  requestId: z.string(),
  text: z.string(),
  /** Why the answer ended: end_turn, max_tokens (cut at the output cap), stop_sequence or refusal. */
  stopReason: z.enum(STOP_REASONS),
  stopSequence: z.string().optional(),
  model: z.string(),
  tier: z.string(),
  provider: z.string(),
  usage: z.object({ inputTokens: z.number(), outputTokens: z.number(), cachedInputTokens: z.number().optional() }),
  costUsd: z.number(),
  decision: z.object({
    effect: z.enum(['allow', 'tier_down']),
    requestedTier: z.string(),
    tier: z.string(),
    ruleId: z.string().optional(),
    budgetId: z.string().optional(),
    reason: z.string(),
  }),
  budgets: z.array(budgetView),
});

export const listModelsResult = z.object({
  tiers: z.array(
    z.object({
      tier: z.string(),
      allowed: z.boolean(),
      note: z.string().optional(),
      models: z.array(
        z.object({ model: z.string(), provider: z.string(), inputPerMTokUsd: z.number(), outputPerMTokUsd: z.number(), maxOutputTokens: z.number() }),
      ),
    }),
  ),
});

export const myBudgetResult = z.object({ user: z.string(), budgets: z.array(budgetView) });

/** The `estimate` tool's result: what a `complete` with the same arguments would get now (src/gateway/dryRun.ts). */
export const estimateResult = z.object({
  requestId: z.string(),
  decision: z.object({
    effect: z.enum(['allow', 'tier_down', 'deny']),
    code: z.enum(['POLICY_DENIED', 'BUDGET_EXHAUSTED', 'RATE_LIMITED']).optional(),
    requestedTier: z.string(),
    tier: z.string().optional(),
    ruleId: z.string().optional(),
    budgetId: z.string().optional(),
    reason: z.string(),
    resetsAt: z.string().optional(),
  }),
  model: z.string().optional(),
  models: z.array(z.string()).optional(),
  maxTokens: z.number().optional(),
  inputTokens: z.object({ bound: z.number(), counted: z.array(z.object({ model: z.string(), tokens: z.number() })) }),
  costUsd: z.object({ min: z.number(), max: z.number() }).optional(),
  budgets: z.array(budgetView.extend({ reservation: z.number(), remainingAfter: z.number() })),
});
