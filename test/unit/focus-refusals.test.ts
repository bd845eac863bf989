/**
 * A refused call reached no provider and costs nothing: the usage export leaves it out even when
 * its event reports tokens and a cost (an event written by hand, or by a buggy sink).
 */
import { describe, expect, it } from 'vitest';
import type { DecisionEvent } from '../../src/metering/events.js';
import { aggregateUsage } from '../../src/metering/focus.js';

function event(id: string, outcome: DecisionEvent['outcome'], code?: string): DecisionEvent {
  return {
    event: 'tollgate.decision',
    'request.id': id,
    time: '2026-11-25T10:00:00.000Z',
    transport: 'http',
    effect: outcome === 'refused' ? 'deny' : 'allow',
    outcome,
    'error.code': code,
    'policy.version': 'v1',
    'user.id': 'alice',
    'user.teams': ['platform'],
    'gen_ai.operation.name': 'chat',
    'gen_ai.usage.input_tokens': 2,
    'gen_ai.usage.output_tokens': 4,
    'tollgate.model.served': 'demo/medium',
    'tollgate.tier.served': 'standard',
    'tollgate.estimated_input_tokens': 5,
    'tollgate.cost_usd': 0.000066,
    'tollgate.attempts': [],
    'tollgate.latency_ms': 0,
  };
}

describe('usage export and refusals', () => {
  it('leaves refused calls out, whatever their event says they consumed', () => {
    const rows = aggregateUsage([event('a', 'success'), event('b', 'refused', 'POLICY_DENIED'), event('c', 'failed', 'PROVIDER_ERROR')], {
      from: Date.parse('2026-11-25T00:00:00Z'),
      to: Date.parse('2026-11-26T00:00:00Z'),
    });
    // The served call and the failed one (whose attempt consumed tokens) are charged; the refusal is not.
    expect(rows.map((r) => [r.user, r.model, r.requests, r.inputTokens, r.outputTokens, r.costMicroUsd])).toEqual([['alice', 'demo/medium', 2, 4, 8, 132]]);
  });

  it('reads events from any iterable, once per request id', () => {
    function* events() {
      yield event('a', 'success');
      yield event('a', 'success');
    }
    expect(aggregateUsage(events(), { from: 0, to: Date.parse('2027-01-01T00:00:00Z') }).map((r) => r.requests)).toEqual([1]);
  });
});
