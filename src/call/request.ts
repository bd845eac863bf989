/**
 * The wire-neutral call: what every transport turns its request into, and the one place its
 * arguments are checked. The schema is also the MCP `complete` tool's published input schema, so
 * a field means the same thing on every way in. Limits come from the policy snapshot the call
 * runs under (`limits` section), never from a live policy read by a transport.
 */
import { z } from 'zod';
import { GatewayError } from '../errors.js';

/**
 * One turn of a conversation. A message the caller sent as several text parts (OpenAI content
 * parts, Anthropic text blocks) keeps them in `parts`, for providers that take parts; `content` is
 * then those parts joined with "\n", for everything that reads the message as one text (content
 * rules, the demo provider, character limits).
 */
export interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
  /** The text parts as sent, when there were two or more; `content` is them joined with "\n". */
  parts?: string[];
}

/** Separator between text parts where a provider (or a reader) has no parts. */
export const PART_SEPARATOR = '\n';

/** The texts of a message as a provider that takes parts should get them: its parts, or its content. */
export function messageParts(m: ChatMessage): string[] {
  return m.parts ?? [m.content];
}

/** A validated completion request, whatever transport it came from. */
export interface CompletionInput {
  messages: ChatMessage[];
  system?: string;
  /**
   * The pieces the system prompt was sent as, when there were two or more (several system
   * messages, text parts or blocks); `system` is them joined with "\n". Content rules read them
   * as pieces, so a value cut across two of them reads whole.
   */
  systemParts?: string[];
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

const textParts = z.array(z.object({ type: z.literal('text'), text: z.string() }).strict()).min(1);

/** The wire-neutral arguments of a completion (the MCP `complete` tool's input). */
/** The longest model or tier name a call may give (a provider/model reference, a Bedrock ARN, fit well within it). */
export const NAME_MAX = 256;

export const completeArgs = z
  .object({
    messages: z
      .array(
        z
          .object({
            role: z.enum(['user', 'assistant']),
            content: z
              .union([z.string(), textParts])
              .describe('The text, or text parts ({type: "text", text}) kept as parts for providers that take them.'),
          })
          .strict(),
      )
      .min(1)
      .optional()
      .describe('The conversation, oldest first; the last message is normally the user\'s.'),
    prompt: z.string().min(1).optional().describe('Shorthand for a single user message.'),
    system: z
      .union([z.string(), textParts])
      .optional()
      .describe('System instructions: a text, or text parts ({type: "text", text}) joined with a newline.'),
    // Bounded: a refusal names what was asked for, and its event is kept in the journal.
    model: z.string().max(NAME_MAX).optional().describe('A model as provider/model (see list_models); the default tier\'s model when omitted.'),
    tier: z.string().max(NAME_MAX).optional().describe('A tier name (e.g. premium, standard, economy) instead of a model.'),
    max_tokens: z.number().int().positive().optional().describe('Maximum output tokens; default 1024.'),
    temperature: z.number().min(0).max(2).optional(),
  })
  .strict();

/**
 * Pieces of text as a `complete` argument (`system`, a message's `content`): none is absent, one is
 * plain text, several are text parts, kept apart so content rules read each seam between them.
 */
export function textArgument(pieces: readonly string[]): string | { type: 'text'; text: string }[] | undefined {
  if (pieces.length <= 1) return pieces[0];
  return pieces.map((text) => ({ type: 'text' as const, text }));
}

/** Arguments as a transport hands them over, before validation. */
export type CompleteArgs = z.input<typeof completeArgs>;

/** A message as the schema took it: parts stay parts when there are several, one part is plain text. */
function chatMessage(m: { role: 'user' | 'assistant'; content: string | { text: string }[] }): ChatMessage {
  if (typeof m.content === 'string') return { role: m.role, content: m.content };
  const parts = m.content.map((p) => p.text);
  return parts.length === 1 ? { role: m.role, content: parts[0]! } : { role: m.role, content: parts.join(PART_SEPARATOR), parts };
}

/**
 * Validates completion arguments against the schema and the policy's limits; throws INVALID_REQUEST
 * naming each bad field. `outputCapField` is the name the caller's API gave `max_tokens`
 * (`max_completion_tokens`, `max_output_tokens`), so a cap over the ceiling is refused in the
 * caller's words.
 */
export function parseCompleteArgs(raw: unknown, limits: RequestLimits, outputCapField = 'max_tokens'): CompletionInput {
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
    throw new GatewayError('INVALID_REQUEST', `Invalid arguments: ${outputCapField} ${maxTokens} exceeds the gateway ceiling of ${limits.maxTokensCeiling}.`, {
      issues: [`${outputCapField}: at most ${limits.maxTokensCeiling}`],
    });
  }
  const messages: ChatMessage[] = a.messages?.map(chatMessage) ?? [{ role: 'user' as const, content: a.prompt! }];
  const system = a.system === undefined ? undefined : chatMessage({ role: 'user', content: a.system });
  const chars = messages.reduce((n, m) => n + m.content.length, system?.content.length ?? 0);
  if (chars > limits.maxInputChars) {
    throw new GatewayError('INVALID_REQUEST', `Invalid arguments: the input is ${chars} characters; the limit is ${limits.maxInputChars}.`, {
      issues: [`messages: at most ${limits.maxInputChars} characters in total`],
    });
  }
  return {
    messages,
    system: system?.content,
    ...(system?.parts ? { systemParts: system.parts } : {}),
    model: a.model,
    tier: a.tier,
    maxTokens,
    temperature: a.temperature,
  };
}
