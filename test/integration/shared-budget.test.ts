import Anthropic from '@anthropic-ai/sdk';
import { Role, TaskState, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, type Client as A2AClient } from '@a2a-js/sdk/client';
import type { Client as McpClient } from '@modelcontextprotocol/sdk/client/index.js';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { keyPrincipal } from '../helpers/principal.js';

/**
 * One user, one weekly budget of 30 tokens, four ways in. Each call below asks "Hello" with
 * max_tokens 4: it reserves 10 tokens (6 estimated in + 4 out) and is charged 6 (2 in + 4 out).
 * After four calls 24 are used and the 6 left cannot cover a reservation, whichever way the
 * next call comes in.
 */
describe('one budget shared by MCP, A2A, OpenAI- and Anthropic-compatible calls', () => {
  let gw: TestGateway;
  let mcp: McpClient;
  let a2a: A2AClient;
  let openai: OpenAI;
  let anthropic: Anthropic;

  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy({ userTokens: 29 }));
    mcp = await connectHttp(gw.mcpUrl, KEYS.alice);
    const fetchImpl: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers);
      headers.set('authorization', `Bearer ${KEYS.alice}`);
      return fetch(input, { ...init, headers });
    };
    a2a = await new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] })).createFromUrl(gw.url);
    openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEYS.alice, maxRetries: 0 });
    anthropic = new Anthropic({ baseURL: gw.url, apiKey: KEYS.alice, maxRetries: 0 });
  });
  afterAll(async () => {
    await mcp.close();
    await gw.close();
  });

  const viaMcp = async () => {
    const r = await mcp.callTool({ name: 'complete', arguments: { prompt: 'Hello', max_tokens: 4 } });
    if (r.isError) return (r._meta as Record<string, { code: string }>)['io.tollgate/error']!.code;
    return (r.structuredContent as { text: string }).text;
  };
  const viaA2a = async () => {
    const message = {
      messageId: crypto.randomUUID(),
      contextId: '',
      taskId: '',
      role: Role.ROLE_USER,
      parts: [{ content: { $case: 'text' as const, value: 'Hello' }, metadata: undefined, filename: '', mediaType: 'text/plain' }],
      metadata: { max_tokens: 4 },
      extensions: [],
      referenceTaskIds: [],
    };
    const task = (await a2a.sendMessage({ tenant: '', message, configuration: undefined, metadata: undefined })) as Task;
    if (task.status?.state === TaskState.TASK_STATE_FAILED) return (task.metadata?.['io.tollgate/error'] as { code: string }).code;
    const part = task.artifacts[0]!.parts[0]!.content;
    return part?.$case === 'text' ? part.value : '';
  };
  const viaOpenai = async () => {
    try {
      const r = await openai.chat.completions.create({ model: 'standard', max_tokens: 4, messages: [{ role: 'user', content: 'Hello' }] });
      return r.choices[0]!.message.content;
    } catch (err) {
      // OpenAI's own code for a spent quota; tollgate's code rides along in error.tollgate_code.
      if (err instanceof APIError) return `${err.status} ${err.code} ${(err.error as { tollgate_code?: string } | undefined)?.tollgate_code}`;
      throw err;
    }
  };
  const viaAnthropic = async () => {
    try {
      const r = await anthropic.messages.create({ model: 'standard', max_tokens: 4, messages: [{ role: 'user', content: 'Hello' }] });
      return r.content[0]!.type === 'text' ? r.content[0]!.text : '';
    } catch (err) {
      if (err instanceof Anthropic.APIError) return `${err.status} ${err.type}`;
      throw err;
    }
  };

  it('charges every way in to the same budget, then refuses the next call on each with BUDGET_EXHAUSTED', async () => {
    expect(await viaMcp()).toBe('[medium] You said: Hello');
    expect(await viaA2a()).toBe('[medium] You said: Hello');
    expect(await viaOpenai()).toBe('[medium] You said: Hello');
    expect(await viaAnthropic()).toBe('[medium] You said: Hello');
    const [budget] = await gw.runtime.gateway.myBudget(keyPrincipal(gw.runtime.gateway, KEYS.alice));
    // 5 left: less than a call's exact cost (2 input tokens, counted because the bound does not fit, + 4 output).
    expect(budget).toMatchObject({ id: 'user-weekly', subject: 'alice', used: 24, reserved: 0, remaining: 5 });

    expect(await viaMcp()).toBe('BUDGET_EXHAUSTED');
    expect(await viaA2a()).toBe('BUDGET_EXHAUSTED');
    expect(await viaOpenai()).toBe('429 insufficient_quota BUDGET_EXHAUSTED');
    expect(await viaAnthropic()).toBe('429 rate_limit_error');

    const decisions = gw.events.map((e) => [e.transport, e.outcome, e['error.code'] ?? null]);
    expect(decisions).toEqual([
      ['http', 'success', null],
      ['a2a', 'success', null],
      ['openai', 'success', null],
      ['anthropic', 'success', null],
      ['http', 'refused', 'BUDGET_EXHAUSTED'],
      ['a2a', 'refused', 'BUDGET_EXHAUSTED'],
      ['openai', 'refused', 'BUDGET_EXHAUSTED'],
      ['anthropic', 'refused', 'BUDGET_EXHAUSTED'],
    ]);
  });
});
