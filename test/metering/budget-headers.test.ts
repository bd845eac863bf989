/**
 * Agents see their own budget: headers on MCP tool-call responses over HTTP, and the budgets in
 * every complete result.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { budgetHeaders } from '../../src/http/budgetHeaders.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const NOW = Date.parse('2026-11-25T10:00:00.000Z');

/** A bare streamable HTTP session, so the response headers can be read. */
async function session(mcpUrl: string, key: string) {
  const base = { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const init = await fetch(mcpUrl, {
    method: 'POST',
    headers: base,
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
  });
  await init.text();
  const headers = { ...base, 'mcp-session-id': init.headers.get('mcp-session-id')!, 'mcp-protocol-version': '2025-06-18' };
  await (await fetch(mcpUrl, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })).text();
  let id = 1;
  return async (method: string, params: Record<string, unknown>) => {
    const res = await fetch(mcpUrl, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }) });
    const body = await res.text();
    const budget = Object.fromEntries([...res.headers].filter(([k]) => k.startsWith('x-tollgate-budget-')));
    return { status: res.status, budget, body };
  };
}

describe('budget headers', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  const twoBudgets = () =>
    basicPolicy({
      extraBudgets: `
  - id: team-usd
    scope: team
    window: { calendar: month, timezone: UTC }
    limit: { usd: 0.01 }`,
    });
  const teamUsdAfterOneCall = {
    'x-tollgate-budget-id': 'team-usd',
    'x-tollgate-budget-remaining': '0.009934',
    'x-tollgate-budget-unit': 'usd',
    'x-tollgate-budget-limit': '0.01',
    'x-tollgate-budget-reset': '2026-12-01T00:00:00.000Z',
  };

  it('names the most constrained budget on each tool call answered as JSON, this call counted', async () => {
    gw = await startTestGateway(twoBudgets(), { now: () => NOW });
    const rpc = await session(gw.mcpUrl, KEYS.alice);
    const first = await rpc('tools/call', { name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } });
    expect(first.status).toBe(200);
    // The call cost 6 tokens (0.06% of the week) and $0.000066 (0.66% of the month): the month is tighter.
    expect(first.budget).toEqual(teamUsdAfterOneCall);
    const second = await rpc('tools/call', { name: 'my_budget', arguments: {} });
    expect(second.budget).toEqual(teamUsdAfterOneCall);
    expect(second.body).toContain('"remaining":9994');
    // A refused call still says where the caller stands.
    const refused = await rpc('tools/call', { name: 'complete', arguments: { prompt: 'hello', tier: 'no-such-tier' } });
    expect(refused.body).toContain('"isError":true');
    expect(refused.budget).toEqual(teamUsdAfterOneCall);
    const models = await rpc('tools/call', { name: 'list_models', arguments: {} });
    expect(models.budget).toEqual(teamUsdAfterOneCall);
  });

  it('on a streamed (SSE) answer, whose head goes first, gives the budgets as they stood before the call', async () => {
    gw = await startTestGateway(twoBudgets(), { now: () => NOW });
    const rpc = await session(gw.mcpUrl, KEYS.alice);
    const first = await rpc('tools/call', { name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 }, _meta: { progressToken: 1 } });
    expect(first.body).toContain('notifications/progress');
    // Nothing used yet: both budgets are whole, and the one resetting first (the week, in Paris) is named.
    expect(first.budget).toEqual({
      'x-tollgate-budget-id': 'user-weekly',
      'x-tollgate-budget-remaining': '10000',
      'x-tollgate-budget-unit': 'tokens',
      'x-tollgate-budget-limit': '10000',
      'x-tollgate-budget-reset': '2026-11-29T23:00:00.000Z',
    });
    const second = await rpc('tools/call', { name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 }, _meta: { progressToken: 2 } });
    expect(second.budget).toEqual(teamUsdAfterOneCall);
  });

  it('adds no budget headers to requests that are not tool calls', async () => {
    gw = await startTestGateway(basicPolicy(), { now: () => NOW });
    const rpc = await session(gw.mcpUrl, KEYS.alice);
    expect((await rpc('tools/list', {})).budget).toEqual({});
  });

  it('adds none for a caller no budget applies to', () => {
    expect(budgetHeaders([])).toEqual({});
  });
});
