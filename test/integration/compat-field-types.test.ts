/**
 * Fields tollgate takes without sending on (`user`, `metadata`, a message's `name`,
 * `parallel_tool_calls`, Responses' `store`) are still checked for the type the API gives them, as
 * OpenAI and Anthropic check them: a number for `user` or a `metadata` that is not a map of strings
 * was served and charged. A user message whose content is null or an empty list, too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

describe('field types on the compatible endpoints', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway(basicPolicy());
  });
  afterAll(() => gw.close());

  const post = async (path: string, body: Record<string, unknown>) => {
    const res = await fetch(`${gw.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify(body),
    });
    return { status: res.status, text: await res.text() };
  };
  const chat = (extra: Record<string, unknown>, message: Record<string, unknown> = {}) =>
    post('/v1/chat/completions', { model: 'standard', messages: [{ role: 'user', content: 'hi', ...message }], max_tokens: 5, ...extra });

  it.each([
    ['user 123', { user: 123 }, {}, 'user'],
    ['user an object', { user: { id: 'x' } }, {}, 'user'],
    ['metadata true', { metadata: true }, {}, 'metadata'],
    ['metadata with a list value', { metadata: { a: [1] } }, {}, 'metadata.a'],
    ['parallel_tool_calls "yes"', { parallel_tool_calls: 'yes' }, {}, 'parallel_tool_calls'],
    ["a message's name 42", {}, { name: 42 }, 'messages.0.name'],
    ['a user message with content null', {}, { content: null }, 'messages.0.content'],
    ['a user message with content []', {}, { content: [] }, 'messages.0.content'],
  ])('chat completions refuses %s naming the field', async (_what, extra, message, field) => {
    const r = await chat(extra, message);
    expect(r.status).toBe(400);
    expect(r.text).toContain(`Invalid request: ${field}`);
  });

  it('chat completions takes these fields of the right types', async () => {
    expect((await chat({ user: 'u-1', metadata: { team: 'x' }, parallel_tool_calls: true }, { name: 'ann' })).status).toBe(200);
    expect((await chat({ user: null, metadata: null })).status).toBe(200);
  });

  it.each([
    ['store "no"', { store: 'no' }, 'store'],
    ['user [1]', { user: [1] }, 'user'],
    ['metadata 1', { metadata: 1 }, 'metadata'],
  ])('responses refuses %s naming the field', async (_what, extra, field) => {
    const r = await post('/v1/responses', { model: 'standard', input: 'hi', max_output_tokens: 16, ...extra });
    expect(r.status).toBe(400);
    expect(r.text).toContain(`Invalid request: ${field}`);
  });

  it.each([
    ['metadata 5', { metadata: 5 }, 'metadata'],
    ['metadata.user_id 7', { metadata: { user_id: 7 } }, 'metadata.user_id'],
  ])('messages refuses %s naming the field', async (_what, extra, field) => {
    const r = await post('/v1/messages', { model: 'standard', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }], ...extra });
    expect(r.status).toBe(400);
    expect(r.text).toContain(`Invalid request: ${field}`);
  });

  it('messages takes metadata.user_id as a string', async () => {
    expect((await post('/v1/messages', { model: 'standard', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }], metadata: { user_id: 'u-1' } })).status).toBe(200);
  });
});
