/**
 * Builds one Provider per policy entry. Each adapter lives in its own file; this is the only
 * place that knows the list of kinds.
 */
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from '../policy/schema.js';
import { createBedrockProvider } from './bedrock.js';
import { createDemoProvider } from './demo.js';
import type { Provider } from './provider.js';

/** Options shared by every network adapter. */
export interface ProviderBuildOptions {
  /** Corporate proxy URL for outbound calls (HTTPS_PROXY style). */
  proxy?: string;
}

export function createProvider(name: string, config: ProviderConfig, opts: ProviderBuildOptions = {}): Provider {
  switch (config.kind) {
    case 'demo':
      return createDemoProvider(name, { latencyMs: config.latencyMs });
    case 'bedrock':
      return createBedrockProvider(name, config, opts);
    default:
      throw new GatewayError('POLICY_INVALID', `Provider kind "${config.kind}" (provider "${name}") is not available in this build.`);
  }
}
