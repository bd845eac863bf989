/**
 * What a first call would load midway is loaded before the gateway serves: OpenAI's vocabularies for
 * the models the policy names (a load of 0.3 to 0.5 s that stalls every call in flight, the hang-ups
 * of their callers included; found by the disconnect drill). The tests run in order: each checks
 * which of the two vocabularies is in memory, and this file's module state is its own.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { encodingLoaded } from '../../src/providers/tokenizer.js';

const policyText = (model: string, countTokens?: boolean) => `version: 1
providers:
  openai: { kind: openai, apiKey: sk-test, baseUrl: "http://127.0.0.1:9/v1"${countTokens === undefined ? '' : `, countTokens: ${countTokens}`} }
egress: { allow: ["127.0.0.1"] }
models:
  openai/${model}: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
tiers:
  main: [openai/${model}]
defaultTier: main
`;

let runtime: Runtime | undefined;
let dir: string | undefined;
afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

async function start(text: string): Promise<Runtime> {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-prepare-'));
  const path = join(dir, 'policy.yaml');
  writeFileSync(path, text);
  runtime = await buildRuntime({ ...settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), policyPath: path }, { sink: memorySink() });
  return runtime;
}

describe('vocabularies loaded before the gateway serves', () => {
  it('loads none for a provider whose counting is off', async () => {
    await start(policyText('gpt-4', false));
    expect(encodingLoaded('cl100k_base')).toBe(false);
    expect(encodingLoaded('o200k_base')).toBe(false);
  });

  it("loads the encoding of the policy's OpenAI models, and only that one, before the runtime is built", async () => {
    await start(policyText('gpt-4.1'));
    expect(encodingLoaded('o200k_base')).toBe(true);
    expect(encodingLoaded('cl100k_base')).toBe(false);
  });

  it('loads the encoding a reloaded policy names for the first time', async () => {
    const r = await start(policyText('gpt-4.1'));
    expect(encodingLoaded('cl100k_base')).toBe(false);
    r.gateway.replacePolicy(parsePolicy(policyText('gpt-3.5-turbo'), 'reloaded.yaml'));
    await vi.waitFor(() => expect(encodingLoaded('cl100k_base')).toBe(true), { timeout: 10_000, interval: 20 });
  });
});
