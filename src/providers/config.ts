/**
 * The shape of one `providers` entry in the policy file. It lives beside the adapters that read it,
 * so providers depend on nothing above them; the policy schema composes it.
 */
import { z } from 'zod';

const positiveInt = z.number().int().positive();

const common = {
  baseUrl: z.url().optional(),
  timeoutMs: positiveInt.default(60_000),
  maxRetries: z.number().int().min(0).max(5).default(0),
};

/**
 * Count a call's input tokens through the provider's token-counting API (Anthropic
 * `POST /v1/messages/count_tokens`, Bedrock `CountTokens`) when the bound on its input does not fit
 * a budget, instead of refusing it on the bound. One more request to the provider for such calls
 * (AWS documents CountTokens as free of charge; both APIs have their own rate limits). Off unless true.
 */
const countTokens = z.boolean().optional();

/** One provider entry, by kind. */
export const providerSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('demo'), latencyMs: z.number().int().min(0).default(0) }).strict(),
  z.object({ kind: z.literal('anthropic'), apiKey: z.string().min(1), countTokens, ...common }).strict(),
  z.object({ kind: z.literal('openai'), apiKey: z.string().min(1), organization: z.string().optional(), ...common }).strict(),
  z
    .object({
      kind: z.literal('bedrock'),
      region: z.string().min(1),
      accessKeyId: z.string().optional(),
      secretAccessKey: z.string().optional(),
      sessionToken: z.string().optional(),
      countTokens,
      ...common,
    })
    .strict()
    .refine((c) => (c.accessKeyId === undefined) === (c.secretAccessKey === undefined), {
      message: 'accessKeyId and secretAccessKey must be given together',
      path: ['secretAccessKey'],
    }),
]);
export type ProviderConfig = z.infer<typeof providerSchema>;
