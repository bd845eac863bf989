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
  it('every shipped row says when and against what it was checked', () => {
    for (const [ref, row] of Object.entries(SHIPPED_PRICES)) {
      expect(row.checked, ref).toMatch(/\S/);
      expect(row.inputPerMTok, ref).toBeGreaterThan(0);
      expect(row.outputPerMTok, ref).toBeGreaterThan(0);
    }
  });

  it('finds the shipped price by adapter kind, whatever the provider is called in the policy', () => {
    const p = parsePolicy(policy('claude', 'anthropic', 'claude-sonnet-4-5'), 'p.yaml');
    expect(p.models.get('claude/claude-sonnet-4-5')!.price).toMatchObject({ inputPerMTok: 3, outputPerMTok: 15, cachedInputPerMTok: 0.3 });
  });

  it('refuses to load a model with no price rather than serve it free', () => {
    let err: unknown;
    try {
      parsePolicy(policy('openai', 'openai', 'gpt-5-mini'), 'p.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as PolicyError).issues.map((i) => i.message)).toEqual([
      'model openai/gpt-5-mini has no price: add models."openai/gpt-5-mini".price (a model is never served free)',
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
