/**
 * An offline provider so a newcomer sees a full call without any API key. It answers with a
 * deterministic text and reports usage the way a real provider would: input tokens counted from
 * the prompt (one token per 4 characters, at least one per message) and output tokens from its reply.
 */
import { GatewayError } from '../errors.js';
import type { CompletionRequest, CompletionResult, Provider, TextListener } from './provider.js';

/** Token count the demo provider reports for a text. */
export function demoTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/** The input tokens the demo provider reports for a prompt: its own rule, so admission can count it exactly. */
export function demoInputTokens(req: Pick<CompletionRequest, 'system' | 'messages'>): number {
  return req.messages.reduce((n, m) => n + demoTokens(m.content), req.system ? demoTokens(req.system) : 0);
}

export function createDemoProvider(name: string, opts: { latencyMs?: number } = {}): Provider {
  const latencyMs = opts.latencyMs ?? 0;

  function answer(req: CompletionRequest): { words: string[]; inputTokens: number } {
    const last = req.messages.at(-1)?.content ?? '';
    const inputTokens = demoInputTokens(req);
    const reply = `[${req.model}] You said: ${last.slice(0, 200)}`;
    const words = reply.split(/(?<= )/);
    // Respect max_tokens exactly: each word counts as one output token.
    return { words: words.slice(0, req.maxTokens), inputTokens };
  }

  async function wait(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw new GatewayError('CANCELLED', 'The call was cancelled.');
    if (latencyMs === 0) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, latencyMs);
      signal?.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          reject(new GatewayError('CANCELLED', 'The call was cancelled.'));
        },
        { once: true },
      );
    });
  }

  return {
    name,
    kind: 'demo',
    async countTokens(req) {
      return demoInputTokens(req);
    },
    async complete(req) {
      await wait(req.signal);
      const { words, inputTokens } = answer(req);
      return {
        text: words.join(''),
        model: req.model,
        usage: { inputTokens, outputTokens: words.length },
        stopReason: words.length >= req.maxTokens ? 'max_tokens' : 'end_turn',
      };
    },
    async stream(req, onText: TextListener): Promise<CompletionResult> {
      await wait(req.signal);
      const { words, inputTokens } = answer(req);
      for (const w of words) onText(w);
      return {
        text: words.join(''),
        model: req.model,
        usage: { inputTokens, outputTokens: words.length },
        stopReason: words.length >= req.maxTokens ? 'max_tokens' : 'end_turn',
      };
    },
  };
}
