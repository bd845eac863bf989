/**
 * Builds one Provider per policy entry. Each adapter lives in its own file; this is the only
 * place that knows the list of kinds.
 */
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from '../policy/schema.js';
import { createAnthropicProvider } from './anthropic.js';
import { createBedrockProvider } from './bedrock.js';
import { createDemoProvider } from './demo.js';
import { createOpenAIProvider } from './openai.js';
import type { Provider } from './provider.js';

/** Options shared by every network adapter. */
export interface ProviderBuildOptions {
  /** Corporate proxy URL for outbound calls (HTTPS_PROXY style). */
  proxy?: string;
  /** The policy's egress.allow patterns; adapters refuse any request to another host before it leaves. */
  egressAllow?: readonly string[];
}

export function createProvider(name: string, config: ProviderConfig, opts: ProviderBuildOptions = {}): Provider {
  switch (config.kind) {
    case 'demo':
      return createDemoProvider(name, { latencyMs: config.latencyMs });
    case 'anthropic':
      return createAnthropicProvider(name, config, opts);
    case 'openai':
      return createOpenAIProvider(name, config, opts);
    case 'bedrock':
      return createBedrockProvider(name, config, opts);
    default:
      // Unreachable while every kind has a case; kept for a policy written for a newer build.
      throw new GatewayError('POLICY_INVALID', `Provider kind "${(config as { kind: string }).kind}" (provider "${name}") is not available in this build.`);
  }
}
