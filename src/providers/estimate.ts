/**
 * How many input tokens a prompt can cost, before the call: the one estimator admission, the
 * adapters' fallbacks (a cut stream that never reported usage) and the tools use.
 *
 * The bound. Every tokenizer behind the providers tollgate speaks to is a byte-level BPE (OpenAI's
 * o200k_base and cl100k_base, Claude's, Llama 3's) or a SentencePiece model with byte fallback
 * (Mistral, Llama 2): each token of a text covers at least one of its UTF-8 bytes, so a text of b
 * bytes is at most b tokens. What the provider adds around the texts (role markers, turn
 * separators, the reply primer, a SentencePiece word-start marker) is a fixed number of tokens per
 * message and per request: `FRAMING` below, with its source. The bound is therefore
 *   sum over texts (system prompt and every message) of (UTF-8 bytes + perMessage) + perRequest,
 * cheap, and an upper bound of what the provider bills for the input. On English prose it is about
 * 5.6 times the real count (a token is ~4.5 bytes of prose). For OpenAI models a tighter bound is
 * cheap enough for every call (`boundOpenAIInput`: within a few percent of the count on prose),
 * and when that does not fit a budget the pipeline counts exactly (src/pipeline/steps/estimate.ts):
 * locally with the model's own tokenizer (`countOpenAIInput`), or through the provider's counting
 * API where the policy enables it (Anthropic, Bedrock: the adapters' `countTokens`).
 */
import { TextCache } from '../textCache.js';
import { tokenBounder, tokenCounter, type EncodingName } from './tokenizer.js';
import type { CompletionRequest, Usage } from './provider.js';

/** The prompt parts that are billed as input; a message sent as text parts has them in `parts`. */
export interface PromptParts {
  system?: string;
  messages: readonly { content: string; parts?: readonly string[] }[];
}

/** Tokens a provider adds to the prompt's own: per message (the system prompt counts as one) and once per request. */
export interface Framing {
  perMessage: number;
  perRequest: number;
}

/**
 * The framing each adapter kind is bounded with. Sources, and the margin taken:
 * - openai: OpenAI's cookbook "How to count tokens with tiktoken" (num_tokens_from_messages) counts
 *   3 tokens per message, plus the role's own token(s) (1 for system, user, assistant), plus 3 for
 *   the reply primer (`<|start|>assistant<|message|>`): 4 per message and 3 per request.
 * - anthropic: Anthropic does not publish its framing; its token-counting guide says counts may
 *   include tokens added for system optimizations, which are not billed ("billing reflects only
 *   your content"). 8 per message and 16 per request are taken, several times the turn markers
 *   of any published Claude prompt format.
 * - bedrock: the model's own chat template. Llama 3 adds `<|start_header_id|>role<|end_header_id|>`,
 *   a blank line and `<|eot_id|>` per message (5) and `<|begin_of_text|>` plus the assistant
 *   header per request (5); Mistral's `[INST] ... [/INST]` and a SentencePiece word-start marker
 *   stay under 8; Claude on Bedrock as for anthropic. 8 and 16 are taken.
 * - demo: its own rule (a quarter of the characters, at least 1 per message) fits 1 per message.
 */
export const FRAMING = {
  openai: { perMessage: 4, perRequest: 3 },
  anthropic: { perMessage: 8, perRequest: 16 },
  bedrock: { perMessage: 8, perRequest: 16 },
  demo: { perMessage: 1, perRequest: 0 },
} as const satisfies Record<string, Framing>;

/** The widest framing of all kinds: the bound that holds whichever provider serves the call. */
export const WIDEST_FRAMING: Framing = {
  perMessage: Math.max(...Object.values(FRAMING).map((f) => f.perMessage)),
  perRequest: Math.max(...Object.values(FRAMING).map((f) => f.perRequest)),
};

/** The framing of an adapter kind; the widest for a kind this build does not know. */
export function framingFor(kind: string): Framing {
  return Object.hasOwn(FRAMING, kind) ? FRAMING[kind as keyof typeof FRAMING] : WIDEST_FRAMING;
}

/**
 * The texts billed as input, system prompt first. A message sent as parts counts as one text per
 * part, each with a message's framing: more than any provider adds around a part, so the bound
 * holds whether the provider keeps the parts or joins them.
 */
export function promptTexts(p: PromptParts): string[] {
  const texts = p.messages.flatMap((m) => m.parts ?? [m.content]);
  return p.system === undefined ? texts : [p.system, ...texts];
}

/** UTF-8 bytes of a text as sent (a lone surrogate goes out as U+FFFD, 3 bytes, and is counted so). */
export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * Input tokens charged for a prompt whose count the provider never reported (a cut stream, a
 * server ignoring `stream_options`, a stream without message_start or metadata): what admission
 * reserved for it when the pipeline says so (`inputTokens`: an exact count or the bound), else the
 * bound under the provider's `framing`. Never less than the provider can have billed; a reported
 * count always wins.
 */
export function unreportedInputTokens(req: Pick<CompletionRequest, 'system' | 'messages' | 'inputTokens'>, framing: Framing): number {
  return req.inputTokens ?? inputTokenBound(req, framing);
}

/** The provable upper bound on the input tokens of `p` under `framing` (see the module comment). */
export function inputTokenBound(p: PromptParts, framing: Framing = WIDEST_FRAMING): number {
  let n = framing.perRequest;
  for (const text of promptTexts(p)) n += utf8Bytes(text) + framing.perMessage;
  return n;
}

/**
 * `usage` with its output raised to at least `bound`: what a stream cut short is charged when a
 * figure came before its end (a look-alike server's early usage): the text that arrived is charged
 * at least its bound. A new object (fields written out, not spread: one hidden class); `usage` as
 * it is when its output is not below.
 */
export function atLeastOutput(usage: Usage, bound: number): Usage {
  if (usage.outputTokens >= bound) return usage;
  const raised: Usage = { inputTokens: usage.inputTokens, outputTokens: bound };
  if (usage.cachedInputTokens !== undefined) raised.cachedInputTokens = usage.cachedInputTokens;
  return raised;
}

/**
 * The bound on output a provider did not report (no usage, or a stream cut before its usage): one
 * token per UTF-8 byte of the text that arrived, plus `moreBytes` (text that arrived but was not
 * kept), and at most `maxTokens`. Never one token per delta: a delta may carry many tokens.
 */
export function outputTokenBound(text: string, maxTokens: number, moreBytes = 0): number {
  return Math.min(maxTokens, utf8Bytes(text) + moreBytes);
}

/**
 * The most tokens one figure of a provider's usage is charged: more than any budget holds, and
 * small enough that its cost at the highest price a policy accepts ($1,000,000 per million tokens)
 * is a safe integer of micro-dollars.
 */
export const MAX_USAGE_TOKENS = 2 ** 31 - 1;

/** A figure that reads as a number of tokens: a number at least 0 (charged rounded up, at most MAX_USAGE_TOKENS). */
function isFigure(v: unknown): v is number {
  return typeof v === 'number' && v >= 0;
}

/** A figure charged as it was reported: a whole number of tokens up to MAX_USAGE_TOKENS. */
function isWholeCount(v: unknown): v is number {
  return isFigure(v) && Number.isInteger(v) && v <= MAX_USAGE_TOKENS;
}

/**
 * Usage as a provider reported it, made chargeable: a figure is a claim from the wire (an
 * OpenAI-compatible server may send any JSON), so one that is not a number of tokens at least 0
 * (negative, not a number, absent) is taken as not reported and charged at its bound (`inputBound`,
 * `outputBound`: what the call reserved, what arrived); a fraction is rounded up; a figure past
 * MAX_USAGE_TOKENS is charged that. Cached input is kept only as a valid part of the input.
 */
export function chargeableUsage(reported: Usage, inputBound: number, outputBound: number): Usage {
  const figure = (v: unknown, bound: number) => (isFigure(v) ? Math.min(MAX_USAGE_TOKENS, Math.ceil(v)) : bound);
  const { inputTokens, outputTokens, cachedInputTokens } = reported;
  if (isWholeCount(inputTokens) && isWholeCount(outputTokens) && (cachedInputTokens === undefined || (isWholeCount(cachedInputTokens) && cachedInputTokens <= inputTokens))) return reported;
  const usage: Usage = { inputTokens: figure(inputTokens, inputBound), outputTokens: figure(outputTokens, outputBound) };
  const cached = figure(cachedInputTokens, 0);
  if (cached > 0) usage.cachedInputTokens = Math.min(cached, usage.inputTokens);
  return usage;
}

/**
 * The sum of a provider's usage figures that make up one count (Anthropic's and Bedrock's input:
 * `main`, the uncached input, and `parts`, cache reads and cache writes), or NaN, which
 * `chargeableUsage` charges as not reported (its bound), when one given is not a number of tokens
 * at least 0: summed first, a negative cache figure could cancel the input out (input 1,000 and
 * cache writes -1,000 charged nothing). An absent part (undefined or null) is 0, as a provider
 * leaves out a cache it did not use; an absent `main` is not reported, as OpenAI's absent
 * `prompt_tokens` is (one predicate, `isFigure`, for both): read as 0, it charged the input nothing.
 */
export function sumOfCounts(main: unknown, ...parts: unknown[]): number {
  if (!isFigure(main)) return Number.NaN;
  let sum = main;
  for (const f of parts) {
    if (f === undefined || f === null) continue;
    if (!isFigure(f)) return Number.NaN;
    sum += f;
  }
  return sum;
}

/**
 * The encoding of an OpenAI model id, from OpenAI's model families (tiktoken's model table):
 * o200k_base for GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the o-series and gpt-oss; cl100k_base for GPT-4
 * and GPT-3.5. Undefined for any other id (an OpenAI-compatible server's Llama, an Azure deployment
 * name), whose input is then bounded, not counted.
 */
export function openAIEncoding(modelId: string): EncodingName | undefined {
  const id = modelId.toLowerCase();
  if (/^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o1|o3|o4)(\b|-|$)/.test(id)) return 'o200k_base';
  if (/^(gpt-4|gpt-3\.5)(\b|-|$)/.test(id)) return 'cl100k_base';
  return undefined;
}

/**
 * Loads the vocabularies that counting and bounding OpenAI input on these model ids use (each
 * encoding once per process; none for an id whose encoding is not known).
 */
export async function loadOpenAIVocabularies(modelIds: readonly string[]): Promise<void> {
  const encodings = new Set(modelIds.map(openAIEncoding).filter((e): e is EncodingName => e !== undefined));
  await Promise.all([...encodings].map((e) => tokenBounder(e)));
}

/**
 * The input tokens OpenAI bills for `p` on `modelId`, counted locally: each text's tokens plus the
 * framing of FRAMING.openai. Undefined when the model's encoding is not known.
 */
export async function countOpenAIInput(p: PromptParts, modelId: string): Promise<number | undefined> {
  const encoding = openAIEncoding(modelId);
  if (!encoding) return undefined;
  return countInput(p, encoding, FRAMING.openai);
}

/** Tokens of `p` in `encoding`, with `framing` added. Used by the OpenAI count and by the fake providers' billing. */
export async function countInput(p: PromptParts, encoding: EncodingName, framing: Framing): Promise<number> {
  const count = await tokenCounter(encoding);
  let n = framing.perRequest;
  for (const text of promptTexts(p)) n += count(text) + framing.perMessage;
  return n;
}

/**
 * The vocabulary bound of each text, by encoding and the text's SHA-256 (src/textCache.ts): a
 * conversation resent each turn is bounded once per message. The bound is a function of the text
 * and the encoding alone (tokenizer.ts `boundWith`), so a remembered value is the value. 20,000
 * texts at most; a value is one number, so the entry bound is what limits it.
 */
const boundCaches: Record<EncodingName, TextCache<number>> = {
  o200k_base: new TextCache<number>({ namespace: 'o200k_base-bound', maxEntries: 20_000, maxBytes: 20_000 * 128, minChars: 256, sizeOf: () => 128 }),
  cl100k_base: new TextCache<number>({ namespace: 'cl100k_base-bound', maxEntries: 20_000, maxBytes: 20_000 * 128, minChars: 256, sizeOf: () => 128 }),
};

/** The caches of the vocabulary bound, for tests and the benchmark. */
export const openAIBoundCaches: Readonly<Record<EncodingName, TextCache<number>>> = boundCaches;

/**
 * A provable upper bound on the input tokens OpenAI bills for `p` on `modelId`, at a cost linear
 * in the text (src/providers/tokenizer.ts `tokenBounder`): exact for every pre-tokenized piece that
 * is a token or a short ASCII word, the piece's bytes otherwise, plus the framing of
 * FRAMING.openai. Within a few percent of the count on prose; never above the byte bound.
 * Undefined when the model's encoding is not known. Each text's bound is remembered by its hash,
 * so a text seen before (the history a client resends) costs a hash, not a split.
 */
export async function boundOpenAIInput(p: PromptParts, modelId: string): Promise<number | undefined> {
  const encoding = openAIEncoding(modelId);
  if (!encoding) return undefined;
  const bound = await tokenBounder(encoding);
  const cache = boundCaches[encoding];
  let n = FRAMING.openai.perRequest;
  for (const text of promptTexts(p)) n += cache.get(text, () => bound(text)) + FRAMING.openai.perMessage;
  return n;
}
