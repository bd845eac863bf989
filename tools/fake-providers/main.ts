/**
 * Starts the three fake provider servers on loopback and prints their base URLs and a policy
 * snippet that points tollgate at them: a way to try real adapters, or to benchmark, offline.
 *
 *   npm run fake-providers
 */
import { startFakeAnthropic } from './anthropic.js';
import { startFakeBedrock } from './bedrock.js';
import { startFakeOpenAI } from './openai.js';

const [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeBedrock()]);

process.stdout.write(`fake providers listening (Ctrl-C to stop)
  anthropic  ${anthropic.url}
  openai     ${openai.url}
  bedrock    ${bedrock.url}

providers:
  anthropic: { kind: anthropic, apiKey: any-key, baseUrl: "${anthropic.url}" }
  openai: { kind: openai, apiKey: any-key, baseUrl: "${openai.url}" }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: any, secretAccessKey: any, baseUrl: "${bedrock.url}" }
egress: { allow: ["127.0.0.1"] }
`);

// Nobody reads what a standalone fake records, and a benchmark sends it thousands of calls a
// second (200 KB prompts among them): drop the records every second instead of keeping them all.
const forget = setInterval(() => {
  for (const fake of [anthropic, openai, bedrock]) fake.requests.length = 0;
}, 1000);
forget.unref();

const stop = async () => {
  await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
