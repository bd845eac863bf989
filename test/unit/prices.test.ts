import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';
import { costMicroUsd, SHIPPED_PRICES } from '../../src/providers/prices.js';

const policy = (provider: string, kind: string, model: string) => `version: 1
providers:
  ${provider}: { kind: ${kind}, apiKey: k }
egress: { allow: [api.anthropic.com, api.openai.com] }
tiers:
  standard: [${provider}/${model}]
`;

describe('prices', () => {
  it('every shipped row but the demo names its pricing page, the day it was checked and against what', () => {
    for (const [ref, row] of Object.entries(SHIPPED_PRICES)) {
      expect(row.inputPerMTok, ref).toBeGreaterThan(0);
      expect(row.outputPerMTok, ref).toBeGreaterThan(0);
      if (ref.startsWith('demo/')) {
        expect(row.checked, ref).toBeUndefined();
        continue;
      }
      expect(row.source, ref).toMatch(/^https:\/\/[a-z.]+\/\S*pricing/);
      expect(row.checked, ref).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(new Date(`${row.checked!}T00:00:00Z`).toISOString().slice(0, 10), ref).toBe(row.checked);
      expect(row.how, ref).toMatch(/\S/);
    }
  });

  it('prices the OpenAI and Bedrock models the docs and library use', () => {
    const price = (ref: string) => {
      const { inputPerMTok, outputPerMTok, cachedInputPerMTok } = SHIPPED_PRICES[ref]!;
      return [inputPerMTok, outputPerMTok, cachedInputPerMTok];
    };
    expect(price('openai/gpt-5')).toEqual([1.25, 10, 0.125]);
    expect(price('openai/gpt-5-mini')).toEqual([0.25, 2, 0.025]);
    expect(price('openai/gpt-5-nano')).toEqual([0.05, 0.4, 0.005]);
    expect(price('bedrock/global.anthropic.claude-opus-4-5-20251101-v1:0')).toEqual([5, 25, 0.5]);
    expect(price('bedrock/global.anthropic.claude-sonnet-4-5-20250929-v1:0')).toEqual([3, 15, 0.3]);
    expect(price('bedrock/global.anthropic.claude-haiku-4-5-20251001-v1:0')).toEqual([1, 5, 0.1]);
  });

  it('prices the current Anthropic models the library routes to, and keeps the retiring ones priced', () => {
    const price = (ref: string) => {
      const { inputPerMTok, outputPerMTok, cachedInputPerMTok } = SHIPPED_PRICES[ref]!;
      return [inputPerMTok, outputPerMTok, cachedInputPerMTok];
    };
    expect(price('anthropic/claude-opus-5-5')).toEqual([4, 20, 0.2]);
    expect(price('anthropic/claude-sonnet-5-5')).toEqual([2, 10, 0.2]);
    expect(price('anthropic/claude-sonnet-4-6')).toEqual([3, 15, 0.3]);
    expect(price('anthropic/claude-sonnet-4-5')).toEqual([3, 15, 0.3]);
    expect(SHIPPED_PRICES['anthropic/claude-sonnet-4-5']).toMatchObject({ retires: '2026-11-30', successor: 'claude-sonnet-5-5' });
    expect(SHIPPED_PRICES['anthropic/claude-opus-4-5']).toMatchObject({ retires: '2027-01-22', successor: 'claude-opus-5-5' });
    // Priced by prompt length (two bands): a single row would misprice one of them.
    expect(SHIPPED_PRICES['anthropic/claude-haiku-5-5']).toBeUndefined();
  });

  it('finds the shipped price by adapter kind, whatever the provider is called in the policy', () => {
    const p = parsePolicy(policy('claude', 'anthropic', 'claude-sonnet-4-5'), 'p.yaml');
    expect(p.models.get('claude/claude-sonnet-4-5')!.price).toMatchObject({ inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3 });
  });

  it('refuses to load a model with no price rather than serve it free', () => {
    let err: unknown;
    try {
      parsePolicy(policy('openai', 'openai', 'gpt-4.5-preview'), 'p.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as PolicyError).issues.map((i) => i.message)).toEqual([
      'model openai/gpt-4.5-preview has no price: add models."openai/gpt-4.5-preview".price (a model is never served free)',
    ]);
  });

  it('charges cached input at the cached price and rounds the total up to a micro-dollar', () => {
    // 1,000 input of which 800 cached, 100 output at 3 / 0.3 / 15 per MTok:
    // 200 * 3 + 800 * 0.3 + 100 * 15 = 600 + 240 + 1500 = 2340 micro-dollars.
    expect(costMicroUsd({ inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3 }, { inputTokens: 1000, outputTokens: 100, cachedInputTokens: 800 })).toBe(2340);
    expect(costMicroUsd({ inputPerMTok: 0.25, outputPerMTok: 2 }, { inputTokens: 3, outputTokens: 0 })).toBe(1);
    expect(costMicroUsd({ inputPerMTok: 0.1, outputPerMTok: 0.1 }, { inputTokens: 3, outputTokens: 0 })).toBe(1);
  });
});
