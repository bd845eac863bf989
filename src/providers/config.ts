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
 * When admission counts a call's input tokens (docs/admission.md):
 * - `true`: only when the byte bound on the input does not fit a budget, instead of refusing the
 *   call on the bound;
 * - `'always'`: on every call with a budget, so the reservation holds what the call can really
 *   cost (the byte bound is about 5.6 times the tokens of English prose);
 * - `false`: never; the byte bound decides.
 * Anthropic and Bedrock count through their token-counting API (`POST /v1/messages/count_tokens`,
 * `CountTokens`): one more request to the provider per counted call (AWS documents CountTokens as
 * free of charge; both APIs have rate limits); their default is `false`. OpenAI models are counted
 * locally with their own tokenizer; with `'always'`, their default, every call takes a cheap
 * provable bound within a few percent of the count on prose, and the exact count when that does
 * not fit.
 */
const countTokens = z.union([z.boolean(), z.literal('always')]).optional();

/**
 * How an OpenAI or Anthropic provider's calls leave: `direct` (the default), the request the
 * official SDK builds (its URL and headers from the SDK's `buildRequest`) posted on undici's
 * connection pool and its answer read as the SDK reads it, with the SDK's retry rule and error
 * classes (src/providers/directWire.ts, openaiWire.ts, anthropicWire.ts), for a fraction of the CPU
 * per call; `sdk`, through the SDK's `chat.completions.create` or `messages.create`. The provider
 * contract runs against both, and test/providers/openai-wire-sdk.test.ts and
 * anthropic-wire-sdk.test.ts require both to send identical requests.
 */
const client = z.enum(['sdk', 'direct']).optional();

/** One provider entry, by kind. */
export const providerSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('demo'), latencyMs: z.number().int().min(0).default(0) }).strict(),
  z.object({ kind: z.literal('anthropic'), apiKey: z.string().min(1), countTokens, client, ...common }).strict(),
  z.object({ kind: z.literal('openai'), apiKey: z.string().min(1), organization: z.string().optional(), countTokens, client, ...common }).strict(),
  z
    .object({
      kind: z.literal('bedrock'),
      // Part of the endpoint's host name (bedrock-runtime.<region>.amazonaws.com).
      region: z.string().refine((r) => /^[a-z0-9]+(?:-[a-z0-9]+)*$/.test(r), { error: 'a region name such as us-east-1 (lower-case letters, digits and hyphens)' }),
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
