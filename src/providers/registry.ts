/**
 * Builds one Provider per policy entry. Each adapter lives in its own file; this is the only
 * place that knows the list of kinds.
 */
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from './config.js';
import { createDemoProvider } from './demo.js';
import { providerEndpoint } from './egress.js';
import type { Provider, ProviderBuildOptions } from './provider.js';

export type { ProviderBuildOptions };


export function createProvider(name: string, config: ProviderConfig, opts: ProviderBuildOptions = {}): Provider {
  switch (config.kind) {
    case 'demo':
      return createDemoProvider(name, { latencyMs: config.latencyMs });
    case 'anthropic':
      return loading(name, config, import('./anthropic.js').then((m) => m.createAnthropicProvider(name, config, opts)));
    case 'openai':
      return loading(name, config, import('./openai.js').then((m) => m.createOpenAIProvider(name, config, opts)));
    case 'bedrock':
      return loading(name, config, import('./bedrock.js').then((m) => m.createBedrockProvider(name, config, opts)));
    default:
      // Unreachable while every kind has a case; kept for a policy written for a newer build.
      throw new GatewayError('POLICY_INVALID', `Provider kind "${(config as { kind: string }).kind}" (provider "${name}") is not available in this build.`);
  }
}

/**
 * A network adapter whose module (and with it the provider's SDK) is imported when the policy
 * names the provider, not when the gateway starts: a gateway carries only the SDKs its policy uses,
 * and the three together weigh tens of MB of resident memory. The import starts at once, so it is
 * done long before a first call; a call that comes sooner waits for it.
 */
function loading(name: string, config: ProviderConfig, adapter: Promise<Provider>): Provider {
  adapter.catch(() => undefined);
  return {
    name,
    kind: config.kind,
    baseUrl: providerEndpoint(config),
    complete: async (req) => (await adapter).complete(req),
    stream: async (req, onText) => (await adapter).stream(req, onText),
    countTokens: async (req) => {
      const a = await adapter;
      return a.countTokens ? a.countTokens(req) : undefined;
    },
    estimateInput: async (req) => {
      const a = await adapter;
      return a.estimateInput ? a.estimateInput(req) : undefined;
    },
    prepare: async (modelIds) => {
      const a = await adapter;
      await a.prepare?.(modelIds);
    },
  };
}
