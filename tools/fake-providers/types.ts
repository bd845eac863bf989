/**
 * What every fake provider server offers tests, benchmarks and the drills: a base URL for the real
 * SDK, a record of each request it saw (including whether the client aborted it), and faults to
 * inject on the next calls.
 *
 * Every fake answers deterministically so usage can be asserted exactly:
 * - input tokens  = whitespace-separated words in the system prompt and every message;
 * - reply         = `fake <kind> reply to: <last user message>`, one output token per word;
 * - output tokens = reply words emitted, capped at the request's max tokens.
 * `replyTokens(text, maxTokens)` and `promptTokens(...)` below compute the same numbers for tests.
 */

export type FakeFault =
  /** Answer with this HTTP status and the provider's own error body (429, 500, 503, 529...). */
  | { kind: 'status'; status: number }
  /** Accept the request and never answer, until the client aborts or the server closes. */
  | { kind: 'hang' }
  /**
   * Streamed: send `afterWords` words of the reply, then destroy the socket. Plain: send the 200
   * head (Bedrock: and half the JSON body), then destroy the socket. `earlyUsage` (streamed, OpenAI
   * and Bedrock): a usage of 1 in / 1 out comes first (OpenAI in the first chunk, Bedrock as a
   * metadata event after messageStart), as a look-alike server may, before the words.
   */
  | { kind: 'cut'; afterWords: number; earlyUsage?: boolean }
  /** Answer 200 with a body that is not valid JSON (or, streamed, a garbage event). */
  | { kind: 'malformed' }
  /**
   * Plain calls only: answer 200 with well-formed JSON that is not the API's answer, as a
   * look-alike server or a proxy may (OpenAI `{"choices":"nope"}`, Anthropic a `message` whose
   * content is a string, Bedrock a Converse answer with neither output message nor usage). No
   * usage a client could read comes with it.
   */
  | { kind: 'misshapen' }
  /**
   * Streamed, Anthropic only: the stream leaves out `message_start` (and with it the input count),
   * as a look-alike server may; every other event comes as usual, `message_stop` included.
   */
  | { kind: 'noMessageStart' }
  /**
   * Answer as usual but leave usage out, as a look-alike server may. `input`: the main input figure
   * (Anthropic `input_tokens` of a plain answer and of message_start, OpenAI `prompt_tokens`,
   * Bedrock `inputTokens`); `all`: every usage object (Anthropic's plain answer, message_start and
   * message_delta; OpenAI's plain answer and its usage chunk; Bedrock's answer and metadata event).
   */
  | { kind: 'leaveOutUsage'; what: 'input' | 'all' }
  /**
   * Answer normally but end after `afterWords` reply words as the provider ends an answer at a stop
   * sequence (`sequence`, default "###") or on a refusal, in its own words: Anthropic
   * `stop_sequence` (naming it) / `refusal`, OpenAI `stop` / `content_filter`, Bedrock
   * `stop_sequence` / `content_filtered`.
   */
  | { kind: 'stop'; reason: 'stop_sequence' | 'refusal'; afterWords: number; sequence?: string };

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** True once the client closed the connection before the fake finished answering. */
  aborted: boolean;
  /** True once the fake wrote its last byte for this request. */
  completed: boolean;
  /** Whether the fake had sent the head of a 200 answer (it had begun answering) when the exchange ended. */
  answered?: boolean;
}

/**
 * Every request a fake received, counted from its arrival (before its body is read, so a request
 * abandoned while its body was still on its way counts too): how many came, how many the fake
 * answered to their last byte, and how many the client closed before that.
 */
export interface RequestCounts {
  received: number;
  completed: number;
  aborted: number;
}

export interface FakeProviderServer {
  readonly kind: 'anthropic' | 'openai' | 'bedrock';
  /** The base URL to hand the SDK (OpenAI's ends in /v1; Anthropic's and Bedrock's do not). */
  readonly url: string;
  readonly port: number;
  readonly requests: RecordedRequest[];
  /** Applies `fault` to the next `times` requests (default 1), in order. */
  failNext(fault: FakeFault, times?: number): void;
  /** Delay before answering each request, ms (default 0). */
  setLatency(ms: number): void;
  /** Delay before each streamed word, ms (default 0): a stream that is being answered for a while. */
  setWordDelay(ms: number): void;
  /**
   * Delay before the last write of a successful answer, ms (default 0): a JSON body after its head
   * was sent, or a stream's end after its last event. The provider has answered; the bytes are late.
   */
  setEndDelay(ms: number): void;
  /** Counts of every request received so far, aborted ones included. */
  readonly counts: Readonly<RequestCounts>;
  /** Requests in flight now (arrived, exchange not ended) and the most at once since the start or the last reset (OpenAI and Anthropic fakes). */
  readonly inFlight?: Readonly<{ now: number; max: number }>;
  /** Clears recorded requests and counts, queued faults, latency and delays. */
  reset(): void;
  close(): Promise<void>;
}

/** Words in a text, the fakes' token unit. */
export function countWords(text: string): number {
  const t = text.trim();
  return t === '' ? 0 : t.split(/\s+/).length;
}

/** Input tokens a fake reports for a prompt. */
export function promptTokens(system: string | undefined, messages: { content: string }[]): number {
  return messages.reduce((n, m) => n + countWords(m.content), system ? countWords(system) : 0);
}

/** The reply words a fake of `kind` sends for `lastUserText`, capped at `maxTokens`; each ends in a space except the last. */
export function replyWords(kind: FakeProviderServer['kind'], lastUserText: string, maxTokens: number): string[] {
  const words = `fake ${kind} reply to: ${lastUserText}`.trim().split(/\s+/).slice(0, maxTokens);
  return words.map((w, i) => (i < words.length - 1 ? `${w} ` : w));
}
