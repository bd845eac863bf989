/**
 * The wire-neutral call: what every transport turns its request into, and the one place its
 * arguments are checked. The schema is also the MCP `complete` tool's published input schema, so
 * a field means the same thing on every way in. Limits come from the policy snapshot the call
 * runs under (`limits` section), never from a live policy read by a transport.
 */
import { z } from 'zod';
import { GatewayError } from '../errors.js';

/** One turn of a conversation. */
export interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
}

/** A validated completion request, whatever transport it came from. */
export interface CompletionInput {
  messages: ChatMessage[];
  system?: string;
  /** `provider/model`, or a bare model id when unambiguous. */
  model?: string;
  tier?: string;
  maxTokens: number;
  temperature?: number;
}

/** The policy limits a request is checked against (the policy's `limits` section). */
export interface RequestLimits {
  maxTokensCeiling: number;
  maxInputChars: number;
}

/** Output tokens a call may produce when the caller does not say. */
export const DEFAULT_MAX_TOKENS = 1024;

/** The wire-neutral arguments of a completion (the MCP `complete` tool's input). */
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

/** Arguments as a transport hands them over, before validation. */
export type CompleteArgs = z.input<typeof completeArgs>;

/** Validates completion arguments against the schema and the policy's limits; throws INVALID_REQUEST naming each bad field. */
export function parseCompleteArgs(raw: unknown, limits: RequestLimits): CompletionInput {
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
