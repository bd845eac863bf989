/**
 * Rate limits as ledger lines (src/policy/limits.ts): which lines a caller is subject to, what a
 * call reserves and is charged on them, and the retry time a refusal carries.
 */
import { describe, expect, it } from 'vitest';
import { openaiDuration } from '../../src/http/rateLimitHeaders.js';
import type { Principal } from '../../src/identity/principal.js';
import { applicableLimits, candidateLimits, keptLimitLine, ledgerLine, limitCharge, limitLine, retryAt } from '../../src/policy/limits.js';
import { lineText } from '../../src/quota/redisJournal.js';
import { compileLimit, parsePolicy } from '../../src/policy/load.js';
import type { RateLimitConfig } from '../../src/policy/schema.js';

const NOW = Date.parse('2026-11-25T10:00:07.250Z');
const limit = (config: Partial<RateLimitConfig>) => compileLimit({ id: 'l', scope: 'user', retryAfterMs: 1000, failMode: 'closed', ...config } as RateLimitConfig);
const ada: Principal = { user: 'ada', teams: ['data', 'ml'], costCenter: 'cc-7', groups: [], roles: [], authMethod: 'api_key', credentialId: 'k-ada', app: 'nightly-agent' };

describe('rate limit lines', () => {
  it('gives one line per subject of the scope: key, user, each team, cost centre, application, everyone', () => {
    const scopes = ['key', 'user', 'team', 'costCenter', 'application', 'global'] as const;
    const applicable = applicableLimits(scopes.map((scope) => limit({ id: scope, scope, requestsPerMinute: 10 })), ada, NOW, 'tg:');
    expect(applicable.fixed.map((l) => `${l.limit.config.id}=${l.subject}`)).toEqual(['key=key:k-ada', 'user=ada', 'team=data', 'team=ml', 'costCenter=cc-7', 'application=nightly-agent', 'global=*']);
    expect(applicable.perCandidate).toEqual([]);
  });

  it('resolves tier and model scopes per candidate, and leaves out tiers a limit does not cover', () => {
    const applicable = applicableLimits([limit({ id: 'per-tier', scope: 'tier', concurrent: 3, tiers: ['premium'] }), limit({ id: 'per-model', scope: 'model', tokensPerMinute: 1000 })], ada, NOW, 'tg:');
    expect(candidateLimits(applicable, 'premium', 'anthropic/opus', NOW, 'tg:').map((l) => l.subject)).toEqual(['premium', 'anthropic/opus']);
    expect(candidateLimits(applicable, 'economy', 'openai/mini', NOW, 'tg:').map((l) => l.subject)).toEqual(['openai/mini']);
  });

  it('serves a line again while the call falls in the same bucket, and resolves a new one in the next', () => {
    const rpm = limit({ requestsPerMinute: 60 });
    const first = keptLimitLine(rpm, 'ada', NOW, 'tg:');
    expect(first).toEqual(limitLine(rpm, 'ada', NOW, 'tg:'));
    expect(keptLimitLine(rpm, 'ada', Date.parse('2026-11-25T10:00:09.999Z'), 'tg:')).toBe(first);
    expect(keptLimitLine(rpm, 'ada', NOW, 'other:')).not.toBe(first);
    expect(keptLimitLine(rpm, 'bob', NOW, 'tg:').subject).toBe('bob');
    const next = keptLimitLine(rpm, 'ada', Date.parse('2026-11-25T10:00:10Z'), 'tg:');
    expect(next).toEqual(limitLine(rpm, 'ada', Date.parse('2026-11-25T10:00:10Z'), 'tg:'));
    expect(next.line.usageKey).not.toBe(first.line.usageKey);
    const cap = limit({ concurrent: 2 });
    expect(keptLimitLine(cap, 'ada', NOW + 3_600_000, 'tg:')).toBe(keptLimitLine(cap, 'ada', NOW, 'tg:'));
  });

  it('reads 12 buckets of 5 s for a per-minute limit, and none for a cap', () => {
    const rpm = limitLine(limit({ requestsPerMinute: 60 }), 'ada', NOW, 'tg:');
    expect(rpm.readStarts).toHaveLength(12);
    expect(rpm.readStarts.at(-1)).toBe(Date.parse('2026-11-25T10:00:05Z'));
    expect(rpm.readStarts[0]).toBe(Date.parse('2026-11-25T09:59:10Z'));
    expect(rpm.line.usageKey).toBe(`tg:{l|ada}:u:${Date.parse('2026-11-25T10:00:05Z')}`);
    const cap = limitLine(limit({ concurrent: 2 }), 'ada', NOW, 'tg:');
    expect(cap.line.readKeys).toEqual([]);
    expect(cap.line.expiresAt).toBe(0);
  });

  it('charges a request once dispatched, tokens as used, and nothing to a cap', () => {
    const usage = { inputTokens: 7, outputTokens: 30 };
    expect(limitCharge(limit({ requestsPerSecond: 5 }), usage, true)).toBe(1);
    expect(limitCharge(limit({ requestsPerSecond: 5 }), undefined, false)).toBe(0);
    expect(limitCharge(limit({ tokensPerMinute: 500 }), usage, true)).toBe(37);
    expect(limitCharge(limit({ concurrent: 5 }), usage, true)).toBe(0);
  });

  it('reserves and charges 1 or 0 on ledger lines made once with the limit line, their journal text with them', () => {
    const rpm = keptLimitLine(limit({ requestsPerMinute: 60 }), 'ada', NOW, 'tg:');
    expect(ledgerLine(rpm, 1)).toBe(rpm.one);
    expect(ledgerLine(rpm, 0)).toBe(rpm.zero);
    expect(rpm.one).toEqual({ ...rpm.line, amount: 1, text: lineText({ ...rpm.line, amount: 1 }) });
    expect(JSON.parse(rpm.zero.text!)).toEqual({ budgetId: 'l', subject: 'ada', usageKey: rpm.line.usageKey, reservedKey: rpm.line.reservedKey, amount: 0, expiresAt: rpm.line.expiresAt });
    // Any other amount (a token limit's) is a line of its own, its text written per entry.
    const tpm = limitLine(limit({ tokensPerMinute: 500 }), 'ada', NOW, 'tg:');
    expect(ledgerLine(tpm, 37)).toEqual({ ...tpm.line, amount: 37 });
  });

  it('says to retry when enough of the oldest buckets have left the window', () => {
    const line = limitLine(limit({ requestsPerMinute: 10 }), 'ada', NOW, 'tg:');
    // 4 in the oldest bucket, 3 in the third, 3 now: the call fits once the oldest bucket has gone.
    const buckets = [4, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 3];
    const refusal = { ok: false as const, budgetId: 'l', subject: 'ada', used: 10, reserved: 0, limit: 10, requested: 1, buckets };
    expect(new Date(retryAt(line, refusal, NOW)).toISOString()).toBe('2026-11-25T10:00:10.000Z');
    // Calls in flight count as charged in the current bucket: with 10 of them, only its end helps.
    expect(new Date(retryAt(line, { ...refusal, used: 0, reserved: 10, buckets: new Array<number>(12).fill(0) }, NOW)).toISOString()).toBe('2026-11-25T10:01:05.000Z');
  });

  it('gives a cap the pause it names', () => {
    const line = limitLine(limit({ concurrent: 1, retryAfterMs: 250 }), 'ada', NOW, 'tg:');
    expect(retryAt(line, { ok: false, budgetId: 'l', subject: 'ada', used: 0, reserved: 1, limit: 1, requested: 1, buckets: [] }, NOW)).toBe(NOW + 250);
  });

  it('writes reset durations as OpenAI does', () => {
    expect([openaiDuration(250), openaiDuration(6000), openaiDuration(90_500), openaiDuration(1234)]).toEqual(['250ms', '6s', '1m30.5s', '1.234s']);
  });
});

describe('rate limits in the policy', () => {
  const base = `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
budgets:
  - { id: weekly, scope: user, window: { calendar: week }, limit: { tokens: 1000 } }
`;
  it('takes exactly one kind per limit and ids unique across budgets and limits', () => {
    const err = (() => {
      try {
        parsePolicy(`${base}rateLimits:\n  - { id: weekly, scope: user, concurrent: 2 }\n  - { id: both, scope: user, concurrent: 2, requestsPerMinute: 5 }\n  - { id: odd, scope: user, concurrent: 2, tiers: [gold] }\n`, 'p.yaml');
      } catch (e) {
        return e as { issues: { path: string; message: string }[] };
      }
      return undefined;
    })();
    expect(err?.issues.map((i) => `${i.path}: ${i.message}`)).toEqual(['rateLimits[1]: give exactly one of requestsPerSecond, requestsPerMinute, tokensPerMinute, concurrent']);
    const err2 = (() => {
      try {
        parsePolicy(`${base}rateLimits:\n  - { id: weekly, scope: user, concurrent: 2 }\n  - { id: odd, scope: user, concurrent: 2, tiers: [gold] }\n`, 'p.yaml');
      } catch (e) {
        return e as { issues: { path: string; message: string }[] };
      }
      return undefined;
    })();
    expect(err2?.issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      'rateLimits[0].id: duplicate id "weekly" (budgets and rate limits share ids)',
      'rateLimits[1].tiers[0]: tier "gold" is not declared under tiers',
    ]);
  });
});
