/**
 * Tool argument and result schemas. Arguments are validated here, not by the SDK, so a bad
 * argument comes back as an INVALID_REQUEST tool error naming each offending field.
 */
import { z } from 'zod';
import { GatewayError } from '../../errors.js';
import type { CompletionInput } from '../../policy/decide.js';
import type { PolicyConfig } from '../../policy/schema.js';

export const completeArgs = z
  .object({
    messages: z
      .array(z.object({ role: z.enum(['user', 'assistant']), content: z.string() }).strict())
      .min(1)
      .optional()
      .describe('The conversation, oldest first; the last message is normally the user\'s.'),
    prompt: z.string().min(1).optional().describe('Shorthand for a single user message.'),
    system: z.string().optional().describe('System instructions.'),
    model: z.string().optional().describe('A model as provider/model (see list_models); the default tier\'s model when omitted.'),
    tier: z.string().optional().describe('A tier name (e.g. premium, standard, economy) instead of a model.'),
    max_tokens: z.number().int().positive().optional().describe('Maximum output tokens; default 1024.'),
    temperature: z.number().min(0).max(2).optional(),
  })
  .strict();

const budgetView = z.object({
  id: z.string(),
  scope: z.string(),
  subject: z.string(),
  unit: z.enum(['tokens', 'usd']),
  limit: z.number(),
  used: z.number(),
  reserved: z.number(),
  remaining: z.number(),
  resetsAt: z.string(),
});

export const completeResult = z.object({
  requestId: z.string(),
  text: z.string(),
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

export const DEFAULT_MAX_TOKENS = 1024;

/** Validates `complete` arguments against the schema and the policy's limits. */
export function parseCompleteArgs(raw: unknown, limits: PolicyConfig['limits']): CompletionInput {
  const parsed = completeArgs.safeParse(raw ?? {});
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `${i.path.join('.') || '(arguments)'}: ${i.message}`);
    throw new GatewayError('INVALID_REQUEST', `Invalid arguments: ${fields.join('; ')}`, { issues: fields });
  }
  const a = parsed.data;
  if (!a.messages && !a.prompt) throw new GatewayError('INVALID_REQUEST', 'Invalid arguments: give messages or prompt.', { issues: ['messages: required'] });
  if (a.messages && a.prompt) throw new GatewayError('INVALID_REQUEST', 'Invalid arguments: give messages or prompt, not both.', { issues: ['prompt: conflicts with messages'] });
  const maxTokens = a.max_tokens ?? DEFAULT_MAX_TOKENS;
  if (maxTokens > limits.maxTokensCeiling) {
    throw new GatewayError('INVALID_REQUEST', `Invalid arguments: max_tokens ${maxTokens} exceeds the gateway ceiling of ${limits.maxTokensCeiling}.`, {
      issues: [`max_tokens: at most ${limits.maxTokensCeiling}`],
    });
  }
  const messages = a.messages ?? [{ role: 'user' as const, content: a.prompt! }];
  const chars = messages.reduce((n, m) => n + m.content.length, a.system?.length ?? 0);
  if (chars > limits.maxInputChars) {
    throw new GatewayError('INVALID_REQUEST', `Invalid arguments: the input is ${chars} characters; the limit is ${limits.maxInputChars}.`, {
      issues: [`messages: at most ${limits.maxInputChars} characters in total`],
    });
  }
  return { messages, system: a.system, model: a.model, tier: a.tier, maxTokens, temperature: a.temperature };
}
