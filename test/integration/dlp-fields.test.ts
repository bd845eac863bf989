/**
 * Every text-bearing field of every way in, with an AWS access key id placed in that field alone,
 * through the real gateway and the fake providers. A field either reaches the content rules (the
 * call is refused with POLICY_DENIED, journaled as a refusal by the credential rule, and no
 * provider receives a byte), or tollgate does not forward it: the call is refused as invalid, or
 * served without the field, and no provider request holds the key. What no field may do is reach
 * a provider unseen.
 */
import { Role, type Message, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, type Client as A2AClient } from '@a2a-js/sdk/client';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeAnthropic } from '../../tools/fake-providers/anthropic.js';
import { startFakeBedrock } from '../../tools/fake-providers/bedrock.js';
import { startFakeOpenAI } from '../../tools/fake-providers/openai.js';
import type { FakeProviderServer } from '../../tools/fake-providers/types.js';
import { fakeProvidersYaml, sha } from '../fixtures/policies.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** Not AWS's documentation example (AKIAIOSFODNN7EXAMPLE), which secretlint ignores. */
const AKEY = 'AKIAZ3MBRXQ7TLWUVY2P';
const KEY = 'key-dlp';
const RULE = 'no-credentials-in-prompts';

const policy = (a: FakeProviderServer, o: FakeProviderServer, b: FakeProviderServer) => `
version: 1
${fakeProvidersYaml({ anthropic: a.url, openai: o.url, bedrock: b.url }, { timeoutMs: 1500, countTokens: true })}tiers:
  standard: [openai/gpt-5-mini]
  claude: [anthropic/claude-sonnet-4-5]
  bedrock: [bedrock/anthropic.claude-sonnet-4-5-v1:0]
apiKeys:
  - { id: dlp, sha256: ${sha(KEY)}, user: dana, teams: [research] }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 1000000 }
rules:
  - id: ${RULE}
    when: "size(request.secrets) > 0"
    effect: deny
    message: The prompt contains what looks like a credential.
`;

let anthropic: FakeProviderServer;
let openai: FakeProviderServer;
let bedrock: FakeProviderServer;
let gw: TestGateway;
const fakes = () => [anthropic, openai, bedrock];

beforeAll(async () => {
  [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeBedrock()]);
  gw = await startTestGateway(policy(anthropic, openai, bedrock));
});
afterAll(async () => {
  await gw.close();
  await Promise.all(fakes().map((f) => f.close()));
});
beforeEach(() => {
  for (const f of fakes()) f.reset();
});

/** Every byte the fakes received, bodies and paths. */
const received = () => JSON.stringify(fakes().flatMap((f) => f.requests.map((r) => [r.path, r.body])));

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${gw.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

/** The call was refused by the credential rule, journaled so, and no provider was asked anything. */
async function expectRefusedByRule(res: { status: number; text: string }): Promise<void> {
  expect(res.status, res.text).toBe(403);
  expect(res.text).toContain('POLICY_DENIED');
  await gw.idle();
  expect(gw.events.at(-1)).toMatchObject({ effect: 'deny', 'error.code': 'POLICY_DENIED', 'policy.rule_id': RULE });
  expect(fakes().map((f) => f.requests.length)).toEqual([0, 0, 0]);
}

/** The field did not reach a provider: refused as invalid, or served without it. */
async function expectNotForwarded(res: { status: number; text: string }): Promise<void> {
  expect([200, 400], res.text).toContain(res.status);
  if (res.status === 400) expect(res.text).toContain('INVALID_REQUEST');
  await gw.idle();
  expect(received()).not.toContain(AKEY);
  expect(received()).not.toContain(AKEY.slice(4));
}

const user = (content: unknown) => ({ role: 'user', content });

describe('OpenAI Chat Completions: every text field is seen or not forwarded', () => {
  const chat = (body: Record<string, unknown>) => post('/v1/chat/completions', { model: 'gpt-5-mini', ...body });
  it.each([
    ['user content as a string', { messages: [user(`deploy with ${AKEY}`)] }],
    ['user content as text parts', { messages: [user([{ type: 'text', text: 'hello' }, { type: 'text', text: `key ${AKEY}` }])] }],
    ['assistant content', { messages: [user('hi'), { role: 'assistant', content: `here: ${AKEY}` }, user('thanks')] }],
    ['system message', { messages: [{ role: 'system', content: `use ${AKEY}` }, user('hi')] }],
    ['developer message as parts', { messages: [{ role: 'developer', content: [{ type: 'text', text: `use ${AKEY}` }] }, user('hi')] }],
    ['a key cut across two text parts', { messages: [user([{ type: 'text', text: `key ${AKEY.slice(0, 9)}` }, { type: 'text', text: `${AKEY.slice(9)} ok` }])] }],
    ['a key cut across two system messages', { messages: [{ role: 'system', content: `key ${AKEY.slice(0, 10)}` }, { role: 'system', content: `${AKEY.slice(10)} ok` }, user('hi')] }],
    ['a key cut across two system parts', { messages: [{ role: 'system', content: [{ type: 'text', text: `key ${AKEY.slice(0, 10)}` }, { type: 'text', text: `${AKEY.slice(10)} ok` }] }, user('hi')] }],
    ['a key cut across system and user', { messages: [{ role: 'system', content: `key ${AKEY.slice(0, 12)}` }, user(`${AKEY.slice(12)} ok`)] }],
    // The pieces alone, a message after them: glued to it, the key's end ran into its first word.
    ['a key cut across two bare system messages', { messages: [{ role: 'system', content: AKEY.slice(0, 10) }, { role: 'system', content: AKEY.slice(10) }, user('hi')] }],
    ['a key with a NUL inside', { messages: [user(`deploy with ${AKEY.slice(0, 4)}\u0000${AKEY.slice(4)} please`)] }],
    ['a key with an escape character inside', { messages: [user(`deploy with ${AKEY.slice(0, 8)}\u001b${AKEY.slice(8)} please`)] }],
  ])('refuses a key in %s', async (_field, body) => {
    await expectRefusedByRule(await chat(body));
  });

  it.each([
    ['message name', { messages: [{ role: 'user', content: 'hi', name: AKEY }] }],
    ['assistant tool_calls arguments', { messages: [user('hi'), { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: JSON.stringify({ k: AKEY }) } }] }, user('go on')] }],
    ['a tool role message', { messages: [user('hi'), { role: 'tool', tool_call_id: 'c1', content: AKEY }] }],
    ['a function role message', { messages: [user('hi'), { role: 'function', name: 'f', content: AKEY }] }],
    ['tools[].function.description', { messages: [user('hi')], tools: [{ type: 'function', function: { name: 'f', description: AKEY, parameters: { type: 'object' } } }] }],
    ['tools[].function.parameters', { messages: [user('hi')], tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', description: AKEY } } }] }],
    ['response_format json_schema', { messages: [user('hi')], response_format: { type: 'json_schema', json_schema: { name: 's', schema: { type: 'object', description: AKEY } } } }],
    ['stop', { messages: [user('hi')], stop: [AKEY] }],
    ['user', { messages: [user('hi')], user: AKEY }],
    ['metadata', { messages: [user('hi')], metadata: { k: AKEY } }],
    ['prediction', { messages: [user('hi')], prediction: { type: 'content', content: AKEY } }],
    ['an image_url part', { messages: [user([{ type: 'text', text: 'hi' }, { type: 'image_url', image_url: { url: `https://x.example/${AKEY}.png` } }])] }],
    ['a text part extra field', { messages: [user([{ type: 'text', text: 'hi', extra: AKEY }])] }],
  ])('does not forward %s', async (_field, body) => {
    await expectNotForwarded(await chat(body));
  });
});

describe('OpenAI Responses: every text field is seen or not forwarded', () => {
  const responses = (body: Record<string, unknown>) => post('/v1/responses', { model: 'gpt-5-mini', ...body });
  it.each([
    ['input as a string', { input: `deploy with ${AKEY}` }],
    ['instructions', { instructions: `use ${AKEY}`, input: 'hi' }],
    ['an input_text part', { input: [{ role: 'user', content: [{ type: 'input_text', text: `key ${AKEY}` }] }] }],
    ['an assistant output_text part', { input: [user('hi'), { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: AKEY }] }, user('ok')] }],
    ['a system item', { input: [{ role: 'system', content: AKEY }, user('hi')] }],
    ['a key cut across two input_text parts', { input: [{ role: 'user', content: [{ type: 'input_text', text: `key ${AKEY.slice(0, 10)}` }, { type: 'input_text', text: `${AKEY.slice(10)} ok` }] }] }],
    ['a key cut across instructions and a system item', { instructions: `key ${AKEY.slice(0, 10)}`, input: [{ role: 'system', content: `${AKEY.slice(10)} ok` }, user('hi')] }],
    ['a key cut across bare instructions and a system item', { instructions: AKEY.slice(0, 10), input: [{ role: 'system', content: AKEY.slice(10) }, user('hi')] }],
  ])('refuses a key in %s', async (_field, body) => {
    await expectRefusedByRule(await responses(body));
  });

  it.each([
    ['a function_call item', { input: [user('hi'), { type: 'function_call', call_id: 'c1', name: 'f', arguments: JSON.stringify({ k: AKEY }) }] }],
    ['a function_call_output item', { input: [user('hi'), { type: 'function_call_output', call_id: 'c1', output: AKEY }] }],
    ['tools', { input: 'hi', tools: [{ type: 'function', name: 'f', description: AKEY, parameters: {} }] }],
    ['text.format json_schema', { input: 'hi', text: { format: { type: 'json_schema', name: 's', schema: { description: AKEY } } } }],
    ['metadata', { input: 'hi', metadata: { k: AKEY } }],
    ['user', { input: 'hi', user: AKEY }],
    ['an input_image part', { input: [{ role: 'user', content: [{ type: 'input_text', text: 'hi' }, { type: 'input_image', image_url: `https://x.example/${AKEY}` }] }] }],
  ])('does not forward %s', async (_field, body) => {
    await expectNotForwarded(await responses(body));
  });
});

describe('Anthropic Messages and count_tokens: every text field is seen or not forwarded', () => {
  const messages = (body: Record<string, unknown>) => post('/v1/messages', { model: 'claude', max_tokens: 20, ...body });
  const count = (body: Record<string, unknown>) => post('/v1/messages/count_tokens', { model: 'claude', ...body });
  const seen: [string, Record<string, unknown>][] = [
    ['content as a string', { messages: [user(`deploy with ${AKEY}`)] }],
    ['a text block', { messages: [user([{ type: 'text', text: `key ${AKEY}` }])] }],
    ['system as a string', { system: `use ${AKEY}`, messages: [user('hi')] }],
    ['system as blocks', { system: [{ type: 'text', text: 'be brief' }, { type: 'text', text: AKEY }], messages: [user('hi')] }],
    ['an assistant text block', { messages: [user('hi'), { role: 'assistant', content: [{ type: 'text', text: AKEY }] }, user('ok')] }],
    ['a key cut across two text blocks', { messages: [user([{ type: 'text', text: `key ${AKEY.slice(0, 10)}` }, { type: 'text', text: `${AKEY.slice(10)} ok` }])] }],
    ['a key cut across two system blocks', { system: [{ type: 'text', text: `key ${AKEY.slice(0, 10)}` }, { type: 'text', text: `${AKEY.slice(10)} ok` }], messages: [user('hi')] }],
    ['a key cut across two bare system blocks', { system: [{ type: 'text', text: AKEY.slice(0, 10) }, { type: 'text', text: AKEY.slice(10) }], messages: [user('hi')] }],
  ];
  it.each(seen)('refuses a key in %s', async (_field, body) => {
    await expectRefusedByRule(await messages(body));
  });
  it.each(seen)('refuses to count a key in %s (count_tokens asks no provider)', async (_field, body) => {
    await expectRefusedByRule(await count(body));
  });

  it.each([
    ['a tool_use block input', { messages: [user('hi'), { role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'f', input: { k: AKEY } }] }, user('ok')] }],
    ['a tool_result block (string)', { messages: [user([{ type: 'tool_result', tool_use_id: 't1', content: AKEY }])] }],
    ['a tool_result block (blocks)', { messages: [user([{ type: 'tool_result', tool_use_id: 't1', content: [{ type: 'text', text: AKEY }] }])] }],
    ['tools[].description', { messages: [user('hi')], tools: [{ name: 'f', description: AKEY, input_schema: { type: 'object' } }] }],
    ['tools[].input_schema', { messages: [user('hi')], tools: [{ name: 'f', input_schema: { type: 'object', description: AKEY } }] }],
    ['metadata.user_id', { messages: [user('hi')], metadata: { user_id: AKEY } }],
    ['stop_sequences', { messages: [user('hi')], stop_sequences: [AKEY] }],
    ['a document block', { messages: [user([{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: AKEY } }])] }],
    ['a text block extra field', { messages: [user([{ type: 'text', text: 'hi', citations: [{ cited_text: AKEY }] }])] }],
  ])('does not forward %s', async (_field, body) => {
    await expectNotForwarded(await messages(body));
    await expectNotForwarded(await count(body));
  });
});

describe('MCP complete: every text argument is seen or not forwarded', () => {
  let client: Client;
  beforeAll(async () => {
    client = await connectHttp(gw.mcpUrl, KEY);
  });
  afterAll(() => client.close());
  const call = (args: Record<string, unknown>) => client.callTool({ name: 'complete', arguments: { tier: 'claude', max_tokens: 20, ...args } });
  const refusal = (r: Awaited<ReturnType<typeof call>>) => JSON.stringify(r);

  it.each([
    ['prompt', { prompt: `deploy with ${AKEY}` }],
    ['system', { system: AKEY, prompt: 'hi' }],
    ['messages[].content as a string', { messages: [user('hi'), { role: 'assistant', content: AKEY }, user('ok')] }],
    ['messages[].content as parts', { messages: [user([{ type: 'text', text: 'a' }, { type: 'text', text: AKEY }])] }],
    ['a key cut across two parts', { messages: [user([{ type: 'text', text: `key ${AKEY.slice(0, 10)}` }, { type: 'text', text: `${AKEY.slice(10)} ok` }])] }],
    ['a key cut across system and prompt', { system: `key ${AKEY.slice(0, 10)}`, prompt: `${AKEY.slice(10)} ok` }],
  ])('refuses a key in %s', async (_field, args) => {
    const r = await call(args);
    expect(r.isError).toBe(true);
    expect(refusal(r)).toContain('POLICY_DENIED');
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ effect: 'deny', 'error.code': 'POLICY_DENIED', 'policy.rule_id': RULE });
    expect(fakes().map((f) => f.requests.length)).toEqual([0, 0, 0]);
  });

  it.each([
    ['an unknown argument', { prompt: 'hi', note: AKEY }],
    ['a message name', { messages: [{ role: 'user', content: 'hi', name: AKEY }] }],
    ['a part extra field', { messages: [user([{ type: 'text', text: 'hi', extra: AKEY }])] }],
  ])('does not forward %s', async (_field, args) => {
    const r = await call(args);
    expect(r.isError).toBe(true);
    expect(refusal(r)).toContain('INVALID_REQUEST');
    expect(received()).not.toContain(AKEY);
  });
});

describe('A2A: every text part is seen, other parts not forwarded', () => {
  let client: A2AClient;
  beforeAll(async () => {
    const fetchImpl: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers);
      headers.set('authorization', `Bearer ${KEY}`);
      return fetch(input, { ...init, headers });
    };
    const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] }));
    client = await factory.createFromUrl(gw.url);
  });
  type Part = Message['parts'][number];
  const text = (value: string): Part => ({ content: { $case: 'text', value }, metadata: undefined, filename: '', mediaType: 'text/plain' });
  const send = (parts: Part[], metadata: Record<string, unknown> = {}) =>
    client.sendMessage({
      tenant: '',
      message: { messageId: crypto.randomUUID(), contextId: '', taskId: '', role: Role.ROLE_USER, parts, metadata: { model: 'bedrock', ...metadata }, extensions: [], referenceTaskIds: [] },
      configuration: undefined,
      metadata: undefined,
    }) as Promise<Task>;

  it.each([
    ['a text part', [text(`deploy with ${AKEY}`)], {}],
    ['the second text part', [text('hello'), text(AKEY)], {}],
    ['a key cut across two text parts', [text(`key ${AKEY.slice(0, 10)}`), text(`${AKEY.slice(10)} ok`)], {}],
    ['metadata.system', [text('hello')], { system: AKEY }],
  ])('refuses a key in %s', async (_field, parts, metadata) => {
    const task = await send(parts as Part[], metadata);
    expect(JSON.stringify(task)).toContain('POLICY_DENIED');
    await gw.idle();
    expect(gw.events.at(-1)).toMatchObject({ effect: 'deny', 'error.code': 'POLICY_DENIED', 'policy.rule_id': RULE });
    expect(fakes().map((f) => f.requests.length)).toEqual([0, 0, 0]);
  });

  it.each([
    ['a data part', [text('hello'), { content: { $case: 'data', value: { k: AKEY } }, metadata: undefined, filename: '', mediaType: 'application/json' }]],
    ['a file part with inline bytes', [text('hello'), { content: { $case: 'raw', value: Buffer.from(AKEY) }, metadata: undefined, filename: 'k.txt', mediaType: 'text/plain' }]],
    ['a file part by URL', [text('hello'), { content: { $case: 'url', value: `https://x.example/${AKEY}` }, metadata: undefined, filename: 'k.txt', mediaType: 'text/plain' }]],
    ['part metadata', [{ ...text('hello'), metadata: { k: AKEY } }]],
  ])('does not forward %s', async (_field, parts) => {
    await send(parts as Part[]).catch(() => undefined);
    await gw.idle();
    expect(received()).not.toContain(AKEY);
  });
});
