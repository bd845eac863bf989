/**
 * The small interface every model backend implements. The pipeline never knows which SDK serves
 * a call: it hands a provider-neutral request to `complete` or `stream` and gets text and usage back.
 */
import type { ChatMessage } from '../call/request.js';

export type { ChatMessage };

/** Provider-neutral completion request; `model` is the provider's own model id. */
export interface CompletionRequest {
  model: string;
  system?: string;
  messages: ChatMessage[];
  maxTokens: number;
  temperature?: number;
  /** Aborting it must abort the upstream HTTP request. */
  signal?: AbortSignal;
  /**
   * The input tokens admission reserved for this request on this model (an exact count or the
   * bound of estimate.ts). An adapter whose provider never reported usage (a cut stream) charges
   * this; without it, the bound.
   */
  inputTokens?: number;
}

/** Token usage as the provider reported it. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  /** Input tokens served from the provider's prompt cache, already included in inputTokens. */
  cachedInputTokens?: number;
}

/**
 * Why the answer ended, in one vocabulary for every provider (Anthropic's words): `end_turn` the
 * model finished, `max_tokens` it was cut at the output cap, `stop_sequence` it hit a stop
 * sequence, `refusal` the provider's safety system stopped or withheld it.
 */
export const STOP_REASONS = ['end_turn', 'max_tokens', 'stop_sequence', 'refusal'] as const;
export type StopReason = (typeof STOP_REASONS)[number];

export interface CompletionResult {
  text: string;
  /** The model id the provider says served the call. */
  model: string;
  usage: Usage;
  /** Mapped from the provider's own finish reason; undefined when it gave none. */
  stopReason?: StopReason;
  /** The stop sequence that ended the answer, when the provider names it. */
  stopSequence?: string;
}

/** Called with each text delta as a stream arrives. */
export type TextListener = (delta: string) => void;

/**
 * A model backend. Errors are thrown as GatewayError: PROVIDER_UNAVAILABLE for what another
 * provider or a retry may fix (429, 5xx, timeout, cut stream), PROVIDER_ERROR otherwise,
 * CANCELLED when the signal aborted. When tokens were consumed before the failure, the error's
 * details carry `usage` so the pipeline charges what was used; when the provider's 2xx head had
 * arrived and it reported nothing (a plain answer's body cut, stalled or not an answer), they say
 * `answered`, and the pipeline charges the attempt its bound.
 */
export interface Provider {
  /** The provider's name in the policy (`anthropic`, `openai`, `demo`, ...). */
  readonly name: string;
  /** The adapter kind (`anthropic`, `openai`, `bedrock`, `demo`). */
  readonly kind: string;
  /** The base URL calls go to, checked against the egress allowlist; undefined for offline providers. */
  readonly baseUrl?: string;
  complete(req: CompletionRequest): Promise<CompletionResult>;
  stream(req: CompletionRequest, onText: TextListener): Promise<CompletionResult>;
  /**
   * The input tokens the provider would bill for `req` (model, system prompt, messages), counted
   * exactly: with the model's own tokenizer, or through the provider's token-counting API when the
   * policy enables it (`countTokens: true`). Undefined when this provider cannot count for this
   * model, and admission then reserves the bound (estimate.ts). Throws like `complete` when the
   * counting call fails.
   */
  countTokens?(req: CompletionRequest): Promise<number | undefined>;
  /**
   * A figure for the input tokens of `req` that admission takes on every call with a budget, when
   * the policy asks for it (`countTokens: 'always'`, OpenAI's default): an upper bound tighter
   * than the byte bound (OpenAI, local) or an exact count (Anthropic, Bedrock, one request to the
   * provider). Undefined when this provider has none for this model.
   */
  estimateInput?(req: CompletionRequest): Promise<InputFigure | undefined>;
  /**
   * Loads now what a first call on these models (the provider's own ids) would otherwise load
   * midway: the adapter with its SDK, and for OpenAI the vocabulary its admission bounds input with.
   * Each is a synchronous load of 0.1 to 0.5 s that stalls every call in flight, its client's
   * hang-up and its timers included, so the gateway does it before it serves (main.ts).
   */
  prepare?(modelIds: readonly string[]): Promise<void>;
}

/** Input tokens of a request as a provider figures them: an exact count, or a provable upper bound. */
export interface InputFigure {
  tokens: number;
  exact: boolean;
}

/** Options shared by every network adapter. */
export interface ProviderBuildOptions {
  /** Corporate proxy URL for outbound calls (HTTPS_PROXY style). */
  proxy?: string;
  /** The policy's egress.allow patterns; adapters refuse any request to another host before it leaves. */
  egressAllow?: readonly string[];
}
