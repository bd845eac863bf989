/**
 * What content rules cost on a prompt of many short messages, the shape a hostile caller can send
 * under the body limit (25,001 one-character messages are 0.9 MB): each message is analysed, and so
 * is each seam between two, reading up to WINDOW characters either side (src/policy/content.ts).
 * Prints wall milliseconds per prompt, first and second run (the second finds nothing cached: every
 * seam's text is new), for --counts messages.
 *
 *   npm run bench:messages -- [--counts 1000,5000,25001]
 */
import { parseArgs } from 'node:util';
import { contentOf } from '../../src/policy/content.js';

const { values } = parseArgs({ options: { counts: { type: 'string', default: '1000,5000,25001' } } });
for (const n of values.counts.split(',').map(Number)) {
  const messages = Array.from({ length: n }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: String.fromCharCode(97 + (i % 26)) }));
  const runs: string[] = [];
  for (let r = 0; r < 2; r++) {
    const t0 = performance.now();
    void contentOf({ messages }).secrets;
    runs.push(`${(performance.now() - t0).toFixed(0)} ms`);
  }
  console.log(`${String(n).padStart(6)} one-character messages: ${runs.join(', ')}`);
}
