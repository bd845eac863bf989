/**
 * List prices per million tokens, in USD. A model with no price here or in the policy is refused,
 * never served free. `checked` is the day the row was compared with the provider's public price page.
 */
import type { Usage } from './provider.js';

export interface Price {
  inputPerMTok: number;
  outputPerMTok: number;
  /** Price of input tokens read from the prompt cache; defaults to the input price. */
  cachedInputPerMTok?: number;
}

export interface ShippedPrice extends Price {
  checked: string;
}

const OFFICIAL = '2026-11-26 against a stored copy of Anthropic\'s pricing page (platform.claude.com/docs/en/about-claude/pricing)';
const SECONDARY = '2026-11-26 against secondary price tables only; confirm on the provider\'s page before relying on it';

/**
 * Keyed by `<adapter kind>/<model id>` (a policy provider named `claude` of kind `anthropic` uses the
 * `anthropic/...` rows). Policy `models.<ref>.price` overrides a row; a model in neither is refused at
 * load. Only rows that could be checked are shipped: declare OpenAI and Bedrock prices in the policy.
 */
export const SHIPPED_PRICES: Readonly<Record<string, ShippedPrice>> = Object.freeze({
  'demo/large': { inputPerMTok: 15, outputPerMTok: 75, checked: 'n/a (offline demo)' },
  'demo/medium': { inputPerMTok: 3, outputPerMTok: 15, checked: 'n/a (offline demo)' },
  'demo/small': { inputPerMTok: 1, outputPerMTok: 5, checked: 'n/a (offline demo)' },
  'anthropic/claude-opus-4-5': { inputPerMTok: 5, outputPerMTok: 25, cachedInputPerMTok: 0.5, checked: OFFICIAL },
  'anthropic/claude-opus-4-1': { inputPerMTok: 15, outputPerMTok: 75, cachedInputPerMTok: 1.5, checked: OFFICIAL },
  'anthropic/claude-sonnet-4-0': { inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3, checked: OFFICIAL },
  'anthropic/claude-sonnet-4-5': { inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3, checked: SECONDARY },
  'anthropic/claude-haiku-4-5': { inputPerMTok: 1, outputPerMTok: 5, cachedInputPerMTok: 0.1, checked: SECONDARY },
});

/** The shipped price of `modelId` on an adapter of `kind`, if there is one. */
export function shippedPrice(kind: string, modelId: string): ShippedPrice | undefined {
  return SHIPPED_PRICES[`${kind}/${modelId}`];
}

/**
 * Cost of a call in micro-dollars (1e-6 USD), rounded up. A price per million tokens is exactly
 * micro-dollars per token, so the arithmetic stays in integers until the final ceiling.
 */
export function costMicroUsd(price: Price, usage: Usage): number {
  return costOfParts([{ price, usage }]);
}

/**
 * Cost of usage spread over several models (a call that failed over: each attempt's tokens at the
 * price of the model that consumed them), in micro-dollars, rounded up once over the whole.
 */
export function costOfParts(parts: readonly { price: Price; usage: Usage }[]): number {
  let raw = 0;
  for (const { price, usage } of parts) {
    const cached = Math.min(usage.cachedInputTokens ?? 0, usage.inputTokens);
    const fresh = usage.inputTokens - cached;
    raw += fresh * price.inputPerMTok + cached * (price.cachedInputPerMTok ?? price.inputPerMTok) + usage.outputTokens * price.outputPerMTok;
  }
  // Guard against float noise such as 0.1 * 3 = 0.30000000000000004 pushing a whole micro-dollar up.
  return Math.ceil(Number(raw.toFixed(6)));
}
