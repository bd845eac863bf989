/**
 * The AWS SDK takes an endpoint from the environment (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`,
 * `AWS_ENDPOINT_URL`) when the client is given none. A Bedrock provider is always given its own
 * (its `baseUrl`, else the region's public endpoint), so nothing outside the policy can send its
 * signed prompts elsewhere, even to another host egress.allow lets through.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { createBedrockProvider } from '../../src/providers/bedrock.js';
import { startFakeBedrock, type FakeBedrockServer } from '../../tools/fake-providers/bedrock.js';

let fake: FakeBedrockServer;
const saved = { ...process.env };

beforeAll(async () => {
  fake = await startFakeBedrock();
  process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME = fake.url;
  process.env.AWS_ENDPOINT_URL = fake.url;
});
afterAll(async () => {
  process.env = saved;
  await fake.close();
});

it('sends nothing to an endpoint named in the environment: the call goes to the region endpoint, which egress.allow refuses here', async () => {
  const provider = createBedrockProvider(
    'bedrock-env',
    { kind: 'bedrock', region: 'eu-west-1', accessKeyId: 'AKIDTESTTOLLGATE', secretAccessKey: 'secret', timeoutMs: 1500, maxRetries: 0 },
    { egressAllow: ['127.0.0.1'] },
  );
  const err = await provider
    .complete({ model: 'anthropic.claude-3-5-haiku-20241022-v1:0', messages: [{ role: 'user', content: 'Hello' }], maxTokens: 8 })
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).message).toContain('bedrock-runtime.eu-west-1.amazonaws.com');
  expect(fake.requests).toHaveLength(0);
});
