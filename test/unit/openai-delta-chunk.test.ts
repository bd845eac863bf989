import { describe, expect, it } from 'vitest';
import { chunk, deltaChunkJson } from '../../src/http/openaiCompat.js';

/** A streamed text delta is written from a template; it must be the JSON of the chunk object. */
describe('deltaChunkJson', () => {
  const texts = ['', 'Hello', ' world.', 'quote " backslash \\ slash /', 'line\nbreak\ttab\r\u0000\u001f', 'é 漢字 🙂 \u2028\u2029', '\ud800 lone surrogate', '</script>'];
  const ids = ['4f1c2a', 'id with "quotes" and \\', 'ünïcode-🙂'];
  const models = ['gpt-5-mini', 'openai/gpt-5', 'model "quoted"'];
  for (const includeUsage of [false, true]) {
    it(`matches JSON.stringify of the chunk object (usage ${includeUsage ? 'requested' : 'not requested'})`, () => {
      for (const requestId of ids) {
        for (const model of models) {
          for (const text of texts) {
            const call = { requestId, created: 1_764_560_000, maxTokens: 64, includeUsage };
            const templated = deltaChunkJson(call, model, text);
            expect(templated).toBe(JSON.stringify(chunk(call, model, { content: text }, null)));
            expect(JSON.parse(templated).choices[0].delta.content).toBe(text);
          }
        }
      }
    });
  }
});
