/**
 * How the fake providers bill a prompt's input, and what their token-counting endpoints answer
 * (always the same number, as the real APIs promise).
 *
 * - `words` (the default): whitespace-separated words, the deterministic unit tests assert on
 *   (types.ts). Crude: a megabyte of CJK without a space is one "token".
 * - `bpe`: a real byte-level BPE tokenizer, so admission benchmarks measure against a realistic
 *   bill. The OpenAI fake bills as OpenAI does: o200k_base tokens of every message plus 4 per
 *   message and 3 for the reply primer, the count tollgate makes locally (src/providers/estimate.ts).
 *   Claude's tokenizer is not public, so the Anthropic and Bedrock fakes stand in with cl100k_base
 *   (a different vocabulary from the OpenAI fake's, so a count made with the wrong tokenizer shows)
 *   plus 3 tokens per message and 1 per request for the turn markers; tollgate can only learn
 *   these numbers through their count_tokens / CountTokens endpoints, like the real ones.
 */
import { countInput, type PromptParts } from '../../src/providers/estimate.js';
import { promptTokens } from './types.js';

export type FakeBilling = 'words' | 'bpe';

/** The framing the Claude-like fakes (Anthropic, Bedrock) bill in `bpe` mode. */
export const FAKE_CLAUDE_FRAMING = { perMessage: 3, perRequest: 1 } as const;

/** Input tokens a fake of `kind` bills for a prompt. */
export async function billedInputTokens(kind: 'openai' | 'anthropic' | 'bedrock', billing: FakeBilling, p: PromptParts): Promise<number> {
  if (billing === 'words') return promptTokens(p.system, [...p.messages]);
  if (kind === 'openai') return countInput(p, 'o200k_base', { perMessage: 4, perRequest: 3 });
  return countInput(p, 'cl100k_base', FAKE_CLAUDE_FRAMING);
}
