/**
 * The validate step alone. Reads: args (raw, decode, modelNamesTier, rejected), request, and the
 * limits and tiers of ctx.policy (the snapshot the call started with). Writes: request. Calls next
 * once the arguments are valid; throws INVALID_REQUEST (or the transport's own refusal) without calling it.
 */
import { describe, expect, it } from 'vitest';
import { basicPolicy } from '../../../test/fixtures/policies.js';
import { callContext, recordingNext, refusal, testPolicy, withLimits } from '../../../test/helpers/callContext.js';
import type { CompletionInput } from '../../call/request.js';
import { GatewayError } from '../../errors.js';
import type { CallContext } from '../context.js';
import { validate } from './validate.js';

const policy = testPolicy(basicPolicy());
/** The same policy with tighter limits than the defaults (max_tokens ceiling 32,768, 400,000 input characters). */
const tight = testPolicy(withLimits(basicPolicy(), { maxTokensCeiling: 500, maxInputChars: 20 }));

const requestSeen = (ctx: CallContext) => () => ctx.request;

describe('validate step', () => {
  it('turns wire-neutral arguments into the request, with max_tokens defaulting to 1024, before it calls next', async () => {
    const ctx = callContext(policy, { args: { raw: { prompt: 'Summarise the report', tier: 'economy' } } });
    const next = recordingNext(requestSeen(ctx));
    await validate()(ctx, next);
    expect(next.calls).toEqual([
      { messages: [{ role: 'user', content: 'Summarise the report' }], system: undefined, model: undefined, tier: 'economy', maxTokens: 1024, temperature: undefined },
    ]);
  });

  it('keeps messages, system, model, max_tokens and temperature as given', async () => {
    const raw = {
      system: 'Be brief.',
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello.' },
        { role: 'user', content: 'Summarise the report' },
      ],
      model: 'demo/small',
      max_tokens: 200,
      temperature: 0.2,
    };
    const ctx = callContext(policy, { args: { raw } });
    await validate()(ctx, recordingNext());
    expect(ctx.request).toEqual({ messages: raw.messages, system: 'Be brief.', model: 'demo/small', tier: undefined, maxTokens: 200, temperature: 0.2 });
  });

  it('refuses arguments of the wrong shape with INVALID_REQUEST naming each field, and does not call next', async () => {
    const ctx = callContext(policy, { args: { raw: { prompt: '', max_tokens: 0, colour: 'blue' } } });
    const next = recordingNext();
    expect(await refusal(validate()(ctx, next))).toEqual({
      code: 'INVALID_REQUEST',
      message: 'Invalid arguments: prompt: Too small: expected string to have >=1 characters; max_tokens: Too small: expected number to be >0; (arguments): Unrecognized key: "colour"',
      details: { issues: ['prompt: Too small: expected string to have >=1 characters', 'max_tokens: Too small: expected number to be >0', '(arguments): Unrecognized key: "colour"'] },
    });
    expect(next.calls).toEqual([]);
    expect(ctx.request).toBeUndefined();
  });

  it('refuses arguments with neither messages nor prompt', async () => {
    const ctx = callContext(policy, { args: { raw: { tier: 'economy' } } });
    expect(await refusal(validate()(ctx, recordingNext()))).toEqual({
      code: 'INVALID_REQUEST',
      message: 'Invalid arguments: give messages or prompt.',
      details: { issues: ['messages: required'] },
    });
  });

  it('raises the refusal the transport met before it could read the body, as is, without decoding', async () => {
    const tooLarge = new GatewayError('PAYLOAD_TOO_LARGE', 'The request body exceeds 1048576 bytes.', { limit: 1048576 });
    let decoded = 0;
    const ctx = callContext(policy, { args: { raw: undefined, rejected: tooLarge, decode: () => (decoded += 1) } });
    const next = recordingNext();
    const thrown = await validate()(ctx, next).catch((e: unknown) => e);
    expect(thrown).toBe(tooLarge);
    expect(decoded).toBe(0);
    expect(next.calls).toEqual([]);
    expect(ctx.request).toBeUndefined();
  });

  it("runs the transport's decoder on its body and validates what it returns", async () => {
    const body = { model: 'demo/small', input: 'Summarise the report', max_output_tokens: 64 };
    const decodedFrom: unknown[] = [];
    const decode = (raw: unknown) => {
      decodedFrom.push(raw);
      const b = raw as typeof body;
      return { model: b.model, prompt: b.input, max_tokens: b.max_output_tokens };
    };
    const ctx = callContext(policy, { args: { raw: body, decode } });
    await validate()(ctx, recordingNext());
    expect(decodedFrom).toEqual([body]);
    expect(ctx.request).toMatchObject({ model: 'demo/small', messages: [{ role: 'user', content: 'Summarise the report' }], maxTokens: 64 });
  });

  it("lets the decoder's own INVALID_REQUEST through unchanged", async () => {
    const bad = new GatewayError('INVALID_REQUEST', 'Invalid request: input must be a string.', { issues: ['input: expected string'] });
    const ctx = callContext(policy, {
      args: {
        raw: { input: 7 },
        decode: () => {
          throw bad;
        },
      },
    });
    expect(await validate()(ctx, recordingNext()).catch((e: unknown) => e)).toBe(bad);
  });

  it('reads a tier name in the model field as that tier when the API says model may name a tier', async () => {
    const ctx = callContext(policy, { args: { raw: { model: 'economy', prompt: 'Hi' }, modelNamesTier: true } });
    await validate()(ctx, recordingNext());
    expect(ctx.request).toMatchObject({ model: undefined, tier: 'economy' });
  });

  it('keeps an explicit tier over the tier named in the model field', async () => {
    const ctx = callContext(policy, { args: { raw: { model: 'economy', tier: 'premium', prompt: 'Hi' }, modelNamesTier: true } });
    await validate()(ctx, recordingNext());
    expect(ctx.request).toMatchObject({ model: undefined, tier: 'premium' });
  });

  it('keeps a model ref in the model field as a model when the API says model may name a tier', async () => {
    const ctx = callContext(policy, { args: { raw: { model: 'demo/small', prompt: 'Hi' }, modelNamesTier: true } });
    await validate()(ctx, recordingNext());
    expect(ctx.request).toMatchObject({ model: 'demo/small', tier: undefined });
  });

  it('leaves a tier name in the model field as a model name when the API has no such convention (the decision then reports it unknown)', async () => {
    const ctx = callContext(policy, { args: { raw: { model: 'economy', prompt: 'Hi' } } });
    await validate()(ctx, recordingNext());
    expect(ctx.request).toMatchObject({ model: 'economy', tier: undefined });
  });

  it("checks max_tokens against the ceiling of the call's own policy, not the default", async () => {
    const ctx = callContext(tight, { args: { raw: { prompt: 'Hi', max_tokens: 501 } } });
    const next = recordingNext();
    expect(await refusal(validate()(ctx, next))).toEqual({
      code: 'INVALID_REQUEST',
      message: 'Invalid arguments: max_tokens 501 exceeds the gateway ceiling of 500.',
      details: { issues: ['max_tokens: at most 500'] },
    });
    expect(next.calls).toEqual([]);
  });

  it("accepts max_tokens at the ceiling of the call's own policy", async () => {
    const ctx = callContext(tight, { args: { raw: { prompt: 'Hi', max_tokens: 500 } } });
    await validate()(ctx, recordingNext());
    expect(ctx.request?.maxTokens).toBe(500);
  });

  it("refuses a default max_tokens (1024) above the call's own policy ceiling: the caller must ask for less", async () => {
    const ctx = callContext(tight, { args: { raw: { prompt: 'Hi' } } });
    expect((await refusal(validate()(ctx, recordingNext()))).message).toBe('Invalid arguments: max_tokens 1024 exceeds the gateway ceiling of 500.');
  });

  it("checks the input length (system and messages together) against the call's own policy", async () => {
    const ctx = callContext(tight, { args: { raw: { system: 'Be brief.', prompt: 'Summarise it', max_tokens: 10 } } });
    expect(await refusal(validate()(ctx, recordingNext()))).toEqual({
      code: 'INVALID_REQUEST',
      message: 'Invalid arguments: the input is 21 characters; the limit is 20.',
      details: { issues: ['messages: at most 20 characters in total'] },
    });
  });

  it('reads each call under its own policy: one step instance, two snapshots, two outcomes', async () => {
    const step = validate();
    const args = { raw: { prompt: 'Hi', max_tokens: 2000 } };
    const underDefault = callContext(policy, { args });
    const underTight = callContext(tight, { args });
    await step(underDefault, recordingNext());
    expect(underDefault.request?.maxTokens).toBe(2000);
    expect((await refusal(step(underTight, recordingNext()))).code).toBe('INVALID_REQUEST');
  });

  it('lets a request set by a trusted in-process caller pass through untouched, without checking it', async () => {
    const request: CompletionInput = { messages: [{ role: 'user', content: 'Hi' }], maxTokens: 100_000 };
    const ctx = callContext(tight, { request });
    const next = recordingNext(requestSeen(ctx));
    await validate()(ctx, next);
    expect(next.calls).toEqual([request]);
    expect(ctx.request).toBe(request);
  });

  it('fails as a bug (a plain Error, INTERNAL once metered) when the call has neither arguments nor a request', async () => {
    const err = await validate()(callContext(policy), recordingNext()).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(GatewayError);
    expect((err as Error).message).toBe('validate step: the call has neither arguments nor a request');
  });
});
