/**
 * List prices per million tokens, in USD. A model with no price here or in the policy is refused,
 * never served free. Every row names the provider's pricing page and the day its figures were last
 * confirmed; `tollgate check` warns when a row the policy relies on is older than 90 days, and when
 * a row's model retires within 60 days or has retired.
 */
import type { Usage } from './provider.js';

export interface Price {
  inputPerMTok: number;
  outputPerMTok: number;
  /** Price of input tokens read from the prompt cache; defaults to the input price. */
  cachedInputPerMTok?: number;
}

export interface ShippedPrice extends Price {
  /** The provider's public pricing page (absent for the offline demo). */
  source?: string;
  /** The day (YYYY-MM-DD) the figures were last confirmed (absent for the offline demo). */
  checked?: string;
  /** What they were confirmed against: the provider's own page, or secondary tables only. */
  how?: string;
  /** The day (YYYY-MM-DD) the provider stops serving the model: requests fail from that day. */
  retires?: string;
  /** Where the retirement date was read. */
  retiresSource?: string;
  /** The model id the provider recommends instead, on the same adapter. */
  successor?: string;
}

const ANTHROPIC = 'https://platform.claude.com/docs/en/about-claude/pricing';
const OPENAI = 'https://developers.openai.com/api/docs/pricing';
const BEDROCK = 'https://aws.amazon.com/bedrock/pricing/';

const ANTHROPIC_PAGE = { source: ANTHROPIC, checked: '2026-11-29', how: "a stored copy of Anthropic's pricing page" };
const ANTHROPIC_MODEL_PAGE = (page: string) => ({
  source: ANTHROPIC,
  checked: '2026-11-30',
  how: `a stored copy of Anthropic's model page (platform.claude.com/docs/zh-CN/models/${page}/overview, its Chinese edition; prices in USD)`,
});
const OPENAI_MODEL_PAGE = (model: string) => ({
  source: OPENAI,
  checked: '2026-11-29',
  how: `a stored copy of OpenAI's model page (developers.openai.com/api/docs/models/${model}), which marks the model deprecated`,
});
// Retirement dates below are Anthropic's, for its own API; Bedrock sets its own schedule, so the
// bedrock/... rows carry none.
const SONNET_4_5_RETIRES = {
  retires: '2026-11-30',
  retiresSource: "Anthropic's Claude Sonnet 4.5 model page (stored copy) and @anthropic-ai/sdk's deprecated-models list",
  successor: 'claude-sonnet-5-5',
};
const OPUS_4_5_RETIRES = {
  retires: '2027-01-22',
  retiresSource: "@anthropic-ai/sdk's deprecated-models list (Anthropic's stored Opus 4.5 model pages say legacy and predate the date)",
  successor: 'claude-opus-5-5',
};
// Claude 4.5 models on Bedrock are called through inference profiles. The global profile is priced
// like Anthropic's own API; the geographic ones (us., eu., ...) cost 10% more: declare their price.
const BEDROCK_GLOBAL = {
  source: BEDROCK,
  checked: '2026-11-29',
  how: "Anthropic's list prices (stored copy of its pricing page) and secondary Bedrock tables saying global inference profiles carry no premium; AWS's own page was not seen",
};

/**
 * Keyed by `<adapter kind>/<model id>` (a policy provider named `claude` of kind `anthropic` uses the
 * `anthropic/...` rows). Policy `models.<ref>.price` overrides a row; a model in neither is refused at
 * load.
 */
export const SHIPPED_PRICES: Readonly<Record<string, ShippedPrice>> = Object.freeze({
  'demo/large': { inputPerMTok: 15, outputPerMTok: 75 },
  'demo/medium': { inputPerMTok: 3, outputPerMTok: 15 },
  'demo/small': { inputPerMTok: 1, outputPerMTok: 5 },
  'anthropic/claude-opus-5-5': { inputPerMTok: 4, outputPerMTok: 20, cachedInputPerMTok: 0.2, ...ANTHROPIC_MODEL_PAGE('opus-5-5') },
  'anthropic/claude-sonnet-5-5': {
    inputPerMTok: 2,
    outputPerMTok: 10,
    // The official page's 0.20, not the 0.10 secondary tables report: a gateway that enforces
    // budgets in dollars must not under-price what it cannot confirm (over-charging by 0.10 per
    // million cached tokens is the safe error).
    cachedInputPerMTok: 0.2,
    source: ANTHROPIC,
    checked: '2026-11-30',
    how:
      "a stored copy of Anthropic's model page (platform.claude.com/docs/zh-CN/models/sonnet-5-5/overview, its Chinese edition; prices in USD); " +
      'secondary tables report a cut of the cached input price from 0.20 to 0.10 on 2026-10-07, not confirmed on an official page, so 0.20 is kept',
  },
  'anthropic/claude-sonnet-4-6': { inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3, ...ANTHROPIC_PAGE, checked: '2026-11-30', how: "stored copies of Anthropic's pricing page and of its Sonnet 4.6 model page, which marks the model legacy" },
  'anthropic/claude-opus-4-5': { inputPerMTok: 5, outputPerMTok: 25, cachedInputPerMTok: 0.5, ...ANTHROPIC_PAGE, ...OPUS_4_5_RETIRES },
  'anthropic/claude-opus-4-5-20251101': { inputPerMTok: 5, outputPerMTok: 25, cachedInputPerMTok: 0.5, ...ANTHROPIC_PAGE, ...OPUS_4_5_RETIRES },
  'anthropic/claude-opus-4-1': {
    inputPerMTok: 15,
    outputPerMTok: 75,
    cachedInputPerMTok: 1.5,
    ...ANTHROPIC_PAGE,
    retires: '2026-08-05',
    retiresSource: "Anthropic's pricing page (stored copy) marks it retired except on Bedrock and Google Cloud; the day is from one secondary release note",
    successor: 'claude-opus-5-5',
  },
  'anthropic/claude-sonnet-4-0': {
    inputPerMTok: 3,
    outputPerMTok: 15,
    cachedInputPerMTok: 0.3,
    ...ANTHROPIC_PAGE,
    retires: '2026-06-15',
    retiresSource: "secondary tables citing Anthropic's release notes",
    successor: 'claude-sonnet-5-5',
  },
  'anthropic/claude-sonnet-4-5': { inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3, ...ANTHROPIC_PAGE, ...SONNET_4_5_RETIRES },
  'anthropic/claude-sonnet-4-5-20250929': { inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3, ...ANTHROPIC_PAGE, ...SONNET_4_5_RETIRES },
  'anthropic/claude-haiku-4-5': { inputPerMTok: 1, outputPerMTok: 5, cachedInputPerMTok: 0.1, ...ANTHROPIC_PAGE },
  'openai/gpt-5': {
    inputPerMTok: 1.25,
    outputPerMTok: 10,
    cachedInputPerMTok: 0.125,
    source: OPENAI,
    checked: '2026-06-20',
    how: 'secondary tables only (a model card dated 2026-06-20 that says it was checked against OpenAI\'s docs); confirm on the provider\'s page',
  },
  'openai/gpt-5-mini': { inputPerMTok: 0.25, outputPerMTok: 2, cachedInputPerMTok: 0.025, ...OPENAI_MODEL_PAGE('gpt-5-mini') },
  'openai/gpt-5-nano': { inputPerMTok: 0.05, outputPerMTok: 0.4, cachedInputPerMTok: 0.005, ...OPENAI_MODEL_PAGE('gpt-5-nano') },
  'bedrock/global.anthropic.claude-opus-4-5-20251101-v1:0': { inputPerMTok: 5, outputPerMTok: 25, cachedInputPerMTok: 0.5, ...BEDROCK_GLOBAL },
  'bedrock/global.anthropic.claude-sonnet-4-5-20250929-v1:0': { inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3, ...BEDROCK_GLOBAL },
  'bedrock/global.anthropic.claude-haiku-4-5-20251001-v1:0': { inputPerMTok: 1, outputPerMTok: 5, cachedInputPerMTok: 0.1, ...BEDROCK_GLOBAL },
});

/** How many whole days before `now` a row was last confirmed; undefined for a row with no date (the demo). */
export function priceAgeDays(row: ShippedPrice, now: number): number | undefined {
  return row.checked === undefined ? undefined : Math.floor((now - Date.parse(`${row.checked}T00:00:00Z`)) / 86_400_000);
}

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
