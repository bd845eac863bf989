/**
 * Object.prototype's property names (`constructor`, `__proto__`, `toString`, `hasOwnProperty`, ...)
 * and `prototype`, sent wherever a caller names something: a model, a tier, a tool, an argument
 * key, an A2A metadata key, a header, a budget in `explain --usage`. Nothing is looked up by a
 * caller's name on a plain object, so each is an unknown name like any other: UNKNOWN_MODEL (400;
 * 404 not_found_error on the Anthropic endpoint, as Anthropic answers), INVALID_REQUEST for an
 * argument, JSON-RPC -32602 for a tool; never a 500, and Object.prototype is left as it was.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import type { Principal } from '../../src/identity/principal.js';
import { explainCall, explainRequest, parseUsageArg } from '../../src/policy/explain.js';
import { parsePolicy } from '../../src/policy/load.js';
import { simulate } from '../../src/policy/simulate.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startFakeOpenFga, type FakeOpenFga } from '../helpers/fakeOpenFga.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { rpcMessages, sendRaw, type RawResponse } from '../helpers/raw.js';

/** Every name Object.prototype answers to, and `prototype`. */
const NAMES = [...new Set([...Object.getOwnPropertyNames(Object.prototype), '__proto__', 'prototype'])];

const PROTOCOL = '2025-11-25';
const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const AUTH = { authorization: `Bearer ${KEYS.alice}` };
const NOW = Date.parse('2026-11-25T10:00:00Z');

/** Object.prototype as it was before any test ran: its own names and what each holds. */
const pristine = Object.getOwnPropertyDescriptors(Object.prototype);

function expectObjectPrototypeUntouched(): void {
  expect(Reflect.ownKeys(Object.prototype)).toEqual(Reflect.ownKeys(pristine));
  const now = Object.getOwnPropertyDescriptors(Object.prototype);
  for (const key of Reflect.ownKeys(pristine) as string[]) {
    const [was, is] = [pristine[key]!, now[key]!];
    expect([is.value, is.get, is.set, is.writable, is.enumerable, is.configurable], key).toEqual([was.value, was.get, was.set, was.writable, was.enumerable, was.configurable]);
  }
  expect(Object.getPrototypeOf(Object.prototype)).toBeNull();
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
}

/** A JSON object text with `key` as an own key (a literal `{__proto__: v}` would set the prototype instead). */
const withKey = (base: Record<string, unknown>, key: string, value: unknown) => {
  const head = JSON.stringify(base).slice(0, -1);
  return `${head}${head === '{' ? '' : ','}${JSON.stringify(key)}:${JSON.stringify(value)}}`;
};

let gw: TestGateway;
let fga: FakeOpenFga;
let fgaGw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway(basicPolicy({ userTokens: 10_000_000 }), { now: () => NOW });
  fga = await startFakeOpenFga();
  for (const tier of ['premium', 'standard', 'economy']) fga.grant('user:alice', 'can_use', `model_tier:${tier}`);
  fgaGw = await startTestGateway(
    `${basicPolicy({ userTokens: 10_000_000 })}
egress: { allow: ["127.0.0.1"] }
identity:
  openfga: { apiUrl: "${fga.url}", storeId: 01HZX3Q4K7M2N5P8R9S0T1V2W3 }
`,
    { now: () => NOW },
  );
});
afterAll(async () => {
  await gw?.close();
  await fgaGw?.close();
  await fga?.close();
  expectObjectPrototypeUntouched();
});

/** POSTs a JSON-RPC body to /mcp. */
function mcp(target: TestGateway, body: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  return sendRaw(target.mcpUrl, { headers: { ...JSON_HEADERS, ...AUTH, ...headers }, body });
}

async function openSession(target: TestGateway): Promise<Record<string, string>> {
  const init = await mcp(target, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'proto', version: '1' } } }));
  expect(init.status).toBe(200);
  const session = { 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': PROTOCOL };
  expect((await mcp(target, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), session)).status).toBe(202);
  return session;
}

interface ToolAnswer {
  result?: { isError?: boolean; structuredContent?: { model?: string }; _meta?: Record<string, { code: string; message: string }> };
  error?: { code: number; message: string };
}

/** Calls a tool with raw JSON arguments; returns the one JSON-RPC answer. */
async function callTool(target: TestGateway, session: Record<string, string>, name: string, argsJson: string): Promise<ToolAnswer> {
  const res = await mcp(target, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":${JSON.stringify(name)},"arguments":${argsJson}}}`, session);
  expect(res.status, res.text).toBe(200);
  const [msg] = rpcMessages(res) as ToolAnswer[];
  return msg!;
}

const refusalCode = (a: ToolAnswer) => {
  expect(a.result?.isError, JSON.stringify(a)).toBe(true);
  return a.result!._meta!['io.tollgate/error']!.code;
};

describe.each([
  ['the plain gateway', () => gw],
  ['a gateway with an OpenFGA check', () => fgaGw],
])('MCP on %s', (_what, target) => {
  let session: Record<string, string>;
  beforeAll(async () => {
    session = await openSession(target());
  });

  it.each(NAMES)('answers complete with model "%s" as UNKNOWN_MODEL', async (name) => {
    expect(refusalCode(await callTool(target(), session, 'complete', JSON.stringify({ prompt: 'hi', model: name })))).toBe('UNKNOWN_MODEL');
  });

  it.each(NAMES)('answers complete with tier "%s" as UNKNOWN_MODEL', async (name) => {
    expect(refusalCode(await callTool(target(), session, 'complete', JSON.stringify({ prompt: 'hi', tier: name })))).toBe('UNKNOWN_MODEL');
  });

  it.each(NAMES)('serves a known model asked with tier "%s" in its own tier', async (name) => {
    const a = await callTool(target(), session, 'complete', JSON.stringify({ prompt: 'hi', model: 'demo/large', tier: name, max_tokens: 5 }));
    expect(a.result?.isError, JSON.stringify(a)).toBeUndefined();
    expect(a.result?.structuredContent?.model).toBe('demo/large');
  });
});

describe('MCP tool names and argument keys', () => {
  let session: Record<string, string>;
  beforeAll(async () => {
    session = await openSession(gw);
  });

  it.each(NAMES)('answers tools/call of a tool named "%s" with JSON-RPC -32602', async (name) => {
    const a = await callTool(gw, session, name, '{}');
    expect(a.error?.code, JSON.stringify(a)).toBe(-32602);
    expect(a.error?.message).toContain(`Unknown tool: ${name}`);
  });

  it.each(NAMES.filter((n) => n !== '__proto__'))('refuses "%s" as an argument key with INVALID_REQUEST naming it', async (name) => {
    const a = await callTool(gw, session, 'complete', withKey({ prompt: 'hi' }, name, 'x'));
    expect(refusalCode(a)).toBe('INVALID_REQUEST');
    expect(a.result!._meta!['io.tollgate/error']!.message).toContain(`Unrecognized key: "${name}"`);
  });

  it('serves a call whose arguments hold a top-level __proto__ key (the SDK request schema drops it before tollgate)', async () => {
    const a = await callTool(gw, session, 'complete', withKey({ prompt: 'hi', max_tokens: 5 }, '__proto__', { max_tokens: 999_999, model: 'constructor' }));
    expect(a.result?.isError, JSON.stringify(a)).toBeUndefined();
  });

  it.each(NAMES)('refuses "%s" as a key of a message with INVALID_REQUEST naming it', async (name) => {
    const a = await callTool(gw, session, 'complete', `{"messages":[${withKey({ role: 'user', content: 'hi' }, name, 'x')}]}`);
    expect(refusalCode(a)).toBe('INVALID_REQUEST');
    expect(a.result!._meta!['io.tollgate/error']!.message).toContain(`Unrecognized key: "${name}"`);
  });

  it.each(NAMES)('answers list_models and my_budget whose arguments hold a key "%s" (they take none and read none)', async (name) => {
    for (const tool of ['list_models', 'my_budget']) {
      const a = await callTool(gw, session, tool, withKey({}, name, 'x'));
      expect(a.error, JSON.stringify(a)).toBeUndefined();
      expect(a.result?.isError, JSON.stringify(a)).toBeUndefined();
    }
  });
});

describe('OpenAI /v1/chat/completions', () => {
  const chat = (body: string, headers: Record<string, string> = {}) =>
    sendRaw(`${gw.url}/v1/chat/completions`, { headers: { 'content-type': 'application/json', ...AUTH, ...headers }, body });

  it.each(NAMES)('answers model "%s" (a model or a tier name) with 400 UNKNOWN_MODEL', async (name) => {
    const res = await chat(JSON.stringify({ model: name, messages: [{ role: 'user', content: 'hi' }] }));
    expect(res.status, res.text).toBe(400);
    expect(JSON.parse(res.text).error).toMatchObject({ code: 'UNKNOWN_MODEL', type: 'invalid_request_error', param: 'model' });
  });

  it.each(NAMES)('serves a body and a message with an extra key "%s" (unknown fields are ignored, as OpenAI does)', async (name) => {
    const message = withKey({ role: 'user', content: 'hi' }, name, { model: 'constructor' });
    const res = await chat(`{"model":"standard","max_tokens":5,"messages":[${message}],${JSON.stringify(name)}:{"tools":[1],"stream":true}}`);
    expect(res.status, res.text).toBe(200);
    expect(JSON.parse(res.text).model).toBe('demo/medium');
  });

  it.each(NAMES)('serves a request carrying a header named "%s"', async (name) => {
    const res = await chat(JSON.stringify({ model: 'economy', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }), { [name]: 'x' });
    expect(res.status, res.text).toBe(200);
  });
});

describe('Anthropic /v1/messages', () => {
  const messages = (body: string, headers: Record<string, string> = {}) =>
    sendRaw(`${gw.url}/v1/messages`, { headers: { 'content-type': 'application/json', 'x-api-key': KEYS.alice, ...headers }, body });

  it.each(NAMES)('answers model "%s" with 404 not_found_error carrying UNKNOWN_MODEL', async (name) => {
    const res = await messages(JSON.stringify({ model: name, max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }));
    expect(res.status, res.text).toBe(404);
    expect(JSON.parse(res.text)).toMatchObject({ type: 'error', error: { type: 'not_found_error', details: { error_code: 'UNKNOWN_MODEL' } } });
  });

  it.each(NAMES)('serves a request carrying a header named "%s" and a body key of that name', async (name) => {
    const res = await messages(withKey({ model: 'economy', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }, name, { tools: [1] }), { [name]: 'x' });
    expect(res.status, res.text).toBe(200);
  });
});

describe('A2A SendMessage', () => {
  interface A2AAnswer {
    result?: { task?: { status?: { state?: string }; metadata?: Record<string, { code?: string }> } } & Record<string, unknown>;
    error?: { code: number; message: string };
  }
  const send = async (metadataJson: string): Promise<{ state?: string; code?: string }> => {
    const message = `{"messageId":"${crypto.randomUUID()}","role":"ROLE_USER","parts":[{"text":"hi"}],"metadata":${metadataJson}}`;
    const res = await sendRaw(`${gw.url}/a2a`, { headers: { 'content-type': 'application/json', 'a2a-version': '1.0', ...AUTH }, body: `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":${message}}}` });
    expect(res.status, res.text).toBe(200);
    const answer = JSON.parse(res.text) as A2AAnswer;
    expect(answer.error, res.text).toBeUndefined();
    const task = answer.result!.task!;
    // A refusal is a failed task whose status update's metadata carries the error.
    const text = JSON.stringify(task);
    const code = /"io\.tollgate\/error":\{[^}]*"code":"([A-Z_]+)"/.exec(text)?.[1];
    return { state: task.status?.state, code };
  };

  it.each(NAMES)('answers metadata.model "%s" with a failed task carrying UNKNOWN_MODEL', async (name) => {
    expect(await send(JSON.stringify({ model: name }))).toEqual({ state: 'TASK_STATE_FAILED', code: 'UNKNOWN_MODEL' });
  });

  it.each(NAMES)('answers metadata.tier "%s" with a failed task carrying UNKNOWN_MODEL', async (name) => {
    expect(await send(JSON.stringify({ tier: name }))).toEqual({ state: 'TASK_STATE_FAILED', code: 'UNKNOWN_MODEL' });
  });

  it.each(NAMES)('completes a message whose metadata has a key "%s" (nothing is read from it)', async (name) => {
    expect(await send(withKey({ max_tokens: 5 }, name, { model: 'constructor', tier: 'toString', max_tokens: 999_999 }))).toEqual({ state: 'TASK_STATE_COMPLETED', code: undefined });
  });
});

describe('explain and simulate', () => {
  const policy = parsePolicy(basicPolicy(), 'basic.yaml');
  const alice: Principal = { user: 'alice', teams: ['platform'], groups: ['employees'], roles: [], authMethod: 'api_key' };
  const unknown = (f: () => unknown) => {
    let thrown: unknown;
    try {
      f();
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(GatewayError);
    return (thrown as GatewayError).code;
  };

  it.each(NAMES)('throws UNKNOWN_MODEL for model or tier "%s"', (name) => {
    for (const request of [explainRequest({ model: name }), explainRequest({ tier: name }), explainRequest({ model: name, tier: name })]) {
      expect(unknown(() => explainCall({ policy, principal: alice, request, now: NOW }))).toBe('UNKNOWN_MODEL');
      expect(unknown(() => simulate({ policy, principal: alice, request, now: NOW }))).toBe('UNKNOWN_MODEL');
    }
  });

  it.each(NAMES)('reads --usage "%s=..." as a budget of that name, which matches no budget', (name) => {
    const usage = parseUsageArg(`${name}=9999,user-weekly=100`);
    expect(Object.keys(usage)).toEqual([name, 'user-weekly']);
    const e = explainCall({ policy, principal: alice, request: explainRequest({ tier: 'standard' }), usage, now: NOW });
    expect(e.budgets.map((b) => [b.id, b.used])).toEqual([['user-weekly', 100]]);
    expect(e.decision).toMatchObject({ effect: 'allow', tier: 'standard' });
  });

  it('counts no usage for a budget named after an Object.prototype property that --usage does not name', () => {
    const named = parsePolicy(
      basicPolicy({
        extraBudgets: `  - id: toString
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 1000 }
  - id: constructor
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 1000 }`,
      }),
      'named.yaml',
    );
    const e = explainCall({ policy: named, principal: alice, request: explainRequest({ tier: 'economy', maxTokens: 10 }), usage: parseUsageArg('user-weekly=5'), now: NOW });
    expect(e.budgets.map((b) => [b.id, b.used, b.remaining])).toEqual([
      ['user-weekly', 5, 9995],
      ['toString', 0, 1000],
      ['constructor', 0, 1000],
    ]);
    expect(e.decision).toMatchObject({ effect: 'allow', tier: 'economy' });
  });
});
