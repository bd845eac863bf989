/**
 * /metrics as Prometheus scrapes it, after a known set of calls: every counter exact.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterEach, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { createMetrics, teamLabeler } from '../../src/metering/metrics.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { startPrivateRedis, uniquePrefix } from '../helpers/redis.js';

const NOW = Date.parse('2026-11-25T10:00:00.000Z');

/** The sample lines of one metric family, without HELP/TYPE comments. */
function samples(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe('Prometheus /metrics', () => {
  let gw: TestGateway | undefined;
  const clients: Client[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    await gw?.close();
    gw = undefined;
  });
  const connect = async (key: string) => {
    const c = await connectHttp(gw!.mcpUrl, key);
    clients.push(c);
    return c;
  };

  it('counts tokens, cost, decisions and latencies of known calls exactly', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    const alice = await connect(KEYS.alice);
    const bob = await connect(KEYS.bob);
    const carol = await connect(KEYS.carol);
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } }); // demo/medium: 2 in, 4 out, $0.000066
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    await carol.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'economy' } }); // demo/small: 1 in, 4 out, $0.000021
    await bob.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'premium' } }); // denied by rule
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hi', model: 'demo/nope' } }); // UNKNOWN_MODEL

    const res = await fetch(`${gw.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await res.text();

    expect(samples(text, 'tollgate_tokens_total')).toEqual([
      'tollgate_tokens_total{cost_center="cc-1",team="platform",model="demo/medium",tier="standard",direction="input"} 4',
      'tollgate_tokens_total{cost_center="cc-1",team="platform",model="demo/medium",tier="standard",direction="output"} 8',
      'tollgate_tokens_total{cost_center="none",team="data",model="demo/small",tier="economy",direction="input"} 1',
      'tollgate_tokens_total{cost_center="none",team="data",model="demo/small",tier="economy",direction="output"} 4',
    ]);
    expect(samples(text, 'tollgate_cost_usd_total')).toEqual([
      'tollgate_cost_usd_total{cost_center="cc-1",team="platform",model="demo/medium",tier="standard"} 0.000132',
      'tollgate_cost_usd_total{cost_center="none",team="data",model="demo/small",tier="economy"} 0.000021',
    ]);
    expect(samples(text, 'tollgate_decisions_total')).toEqual([
      'tollgate_decisions_total{effect="allow",outcome="success",rule_id="",budget_id="",error_code=""} 3',
      'tollgate_decisions_total{effect="deny",outcome="refused",rule_id="contractors-no-premium",budget_id="",error_code="POLICY_DENIED"} 1',
      'tollgate_decisions_total{effect="error",outcome="failed",rule_id="",budget_id="",error_code="UNKNOWN_MODEL"} 1',
    ]);
    expect(samples(text, 'tollgate_upstream_latency_seconds_count')).toEqual([
      'tollgate_upstream_latency_seconds_count{provider="demo",model="demo/medium"} 2',
      'tollgate_upstream_latency_seconds_count{provider="demo",model="demo/small"} 1',
    ]);
    // The clock is frozen, so every call adds exactly 0 s of overhead: all five sit in the first bucket.
    expect(samples(text, 'tollgate_gateway_overhead_seconds_bucket').slice(0, 1)).toEqual(['tollgate_gateway_overhead_seconds_bucket{le="0.0005",transport="http"} 5']);
    expect(samples(text, 'tollgate_gateway_overhead_seconds_sum')).toEqual(['tollgate_gateway_overhead_seconds_sum{transport="http"} 0']);
    expect(samples(text, 'gen_ai_client_token_usage_sum')).toEqual([
      'gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="demo/medium",gen_ai_response_model="medium",gen_ai_token_type="input"} 4',
      'gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="demo/medium",gen_ai_response_model="medium",gen_ai_token_type="output"} 8',
      'gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="demo/small",gen_ai_response_model="small",gen_ai_token_type="input"} 1',
      'gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="demo/small",gen_ai_response_model="small",gen_ai_token_type="output"} 4',
    ]);
    expect(samples(text, 'gen_ai_client_token_usage_bucket').filter((l) => l.includes('token_type="output"') && l.includes('le="4"'))).toEqual([
      'gen_ai_client_token_usage_bucket{le="4",gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="demo/medium",gen_ai_response_model="medium",gen_ai_token_type="output"} 2',
      'gen_ai_client_token_usage_bucket{le="4",gen_ai_operation_name="chat",gen_ai_provider_name="demo",gen_ai_request_model="demo/small",gen_ai_response_model="small",gen_ai_token_type="output"} 1',
    ]);
    expect(samples(text, 'tollgate_store_errors_total')).toEqual([]);
  });

  it('labels spend by team, and counts the teams past TOLLGATE_METRICS_MAX_TEAMS as other', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW, env: { TOLLGATE_METRICS_MAX_TEAMS: '1' } });
    const alice = await connect(KEYS.alice); // team platform: the first team seen keeps its name
    const carol = await connect(KEYS.carol); // team data: past the cap of 1
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    await carol.callTool({ name: 'complete', arguments: { prompt: 'hi', tier: 'economy' } });
    await alice.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    expect(samples(text, 'tollgate_cost_usd_total')).toEqual([
      'tollgate_cost_usd_total{cost_center="cc-1",team="platform",model="demo/medium",tier="standard"} 0.000132',
      'tollgate_cost_usd_total{cost_center="none",team="other",model="demo/small",tier="economy"} 0.000021',
    ]);
    expect(samples(text, 'tollgate_tokens_total').filter((l) => l.includes('direction="output"'))).toEqual([
      'tollgate_tokens_total{cost_center="cc-1",team="platform",model="demo/medium",tier="standard",direction="output"} 8',
      'tollgate_tokens_total{cost_center="none",team="other",model="demo/small",tier="economy",direction="output"} 4',
    ]);
  });

  it('counts a call refused because the store is down as a store error', async () => {
    // A real Redis ledger whose server has stopped: the call fails closed.
    const redis = await startPrivateRedis();
    const store = new RedisQuotaStore({ url: redis.url, prefix: uniquePrefix('metrics'), commandTimeoutMs: 500, logger: { info() {}, warn() {}, error() {} } });
    try {
      gw = await startTestGateway(basicPolicy(), { now: () => NOW, store });
      const alice = await connect(KEYS.alice);
      await redis.stop();
      await alice.callTool({ name: 'complete', arguments: { prompt: 'hi' } });
      // The refusal is a journal entry like any other: with the store down it waits in the replay
      // queue, and the metrics (fed from the journal) count it once the store has it.
      expect(store.pendingReplays()).toBe(1);
      const before = await (await fetch(`${gw.url}/metrics`)).text();
      expect(samples(before, 'tollgate_decisions_total')).toEqual([]);
      await redis.restart();
      // The store reconnects by itself and replays what it queued; the event follows the replay.
      for (const deadline = Date.now() + 10_000; gw.events.length === 0 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
      expect(gw.events).toHaveLength(1);
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      expect(samples(text, 'tollgate_store_errors_total')).toEqual(['tollgate_store_errors_total{kind="unavailable"} 1']);
      // The budget snapshot cannot be read, so no policy decision is reached: effect "error".
      expect(samples(text, 'tollgate_decisions_total')).toEqual([
        'tollgate_decisions_total{effect="error",outcome="failed",rule_id="",budget_id="user-weekly",error_code="QUOTA_STORE_UNAVAILABLE"} 1',
      ]);
    } finally {
      await redis.stop();
    }
  });

  it('asks for the metrics token when TOLLGATE_METRICS_TOKEN is set', async () => {
    gw = await startTestGateway(basicPolicy(), { env: { TOLLGATE_METRICS_TOKEN: 'scrape-secret-1' } });
    expect((await fetch(`${gw.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const ok = await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer scrape-secret-1' } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('# TYPE tollgate_decisions_total counter');
  });
});

describe('team label', () => {
  it('keeps the first teams seen up to the cap, names later ones other, and a call without a team none', () => {
    const label = teamLabeler(2);
    expect([label(['a']), label(['b', 'a']), label(['c']), label(['a', 'c']), label(undefined), label([]), label(['c'])]).toEqual(['a', 'b', 'other', 'a', 'none', 'none', 'other']);
  });

  it('names every team other with a cap of 0', () => {
    const label = teamLabeler(0);
    expect([label(['a']), label(['b'])]).toEqual(['other', 'other']);
  });
});

describe('tollgate_event_loop_stall_seconds', () => {
  const stall = (text: string) => Number(samples(text, 'tollgate_event_loop_stall_seconds')[0]?.split(' ')[1]);

  it('reports the longest the event loop was held since the previous scrape', async () => {
    const metrics = createMetrics();
    await metrics.text(); // the scrape before: what came earlier is not this window's
    await new Promise((r) => setTimeout(r, 30));
    const until = performance.now() + 400;
    while (performance.now() < until) {
      // holds the event loop, as a synchronous load of a large module does
    }
    await new Promise((r) => setTimeout(r, 30));
    const held = stall(await metrics.text());
    expect(held).toBeGreaterThanOrEqual(0.35);
    expect(held).toBeLessThan(5);
    // The scrape started a new window: the stall is not reported twice.
    expect(stall(await metrics.text())).toBeLessThan(held);
  });
});
