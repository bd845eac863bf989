/**
 * The policy a gateway runs under now, and what is built once per policy: its providers and its
 * authenticator (API key resolvers). The issuers' fetched keys are kept across policies. A call takes a snapshot when it starts and looks
 * everything up by that snapshot, so a hot reload never changes a call midway.
 */
import { policyApiKeys, type ApiKeyResolver } from '../identity/apiKey.js';
import { Authenticator } from '../identity/authenticate.js';
import { IssuerKeySets } from '../identity/jwt.js';
import type { Policy } from '../policy/load.js';
import type { Provider } from '../providers/provider.js';
import { createProvider, type ProviderBuildOptions } from '../providers/registry.js';

export interface PolicyRuntimeOptions {
  now: () => number;
  providerOptions?: ProviderBuildOptions;
  /** API keys issued at run time (shared store), looked up after the policy's own keys. */
  issuedKeys?: ApiKeyResolver;
}

export class PolicyRuntime {
  private current: Policy;
  private readonly providers = new WeakMap<Policy, Map<string, Provider>>();
  private readonly authenticators = new WeakMap<Policy, Authenticator>();
  /** The issuers' fetched keys, kept across reloads that leave an issuer's fetching settings alone. */
  private readonly keySets = new IssuerKeySets();

  constructor(
    policy: Policy,
    private readonly opts: PolicyRuntimeOptions,
  ) {
    this.current = policy;
    this.providers.set(policy, buildProviders(policy, opts.providerOptions));
  }

  /** The policy new calls start under. */
  get policy(): Policy {
    return this.current;
  }

  /** Swaps in a new policy atomically; calls in flight finish under the policy they started with. */
  replace(policy: Policy, providers?: Map<string, Provider>): void {
    this.providers.set(policy, providers ?? buildProviders(policy, this.opts.providerOptions));
    this.current = policy;
    this.keySets.retain(policy.config.identity);
  }

  /** The provider named `name` as built for `policy`. */
  providerFor(policy: Policy, name: string): Provider | undefined {
    return this.built(policy).get(name);
  }

  private built(policy: Policy): Map<string, Provider> {
    let built = this.providers.get(policy);
    if (!built) {
      built = buildProviders(policy, this.opts.providerOptions);
      this.providers.set(policy, built);
    }
    return built;
  }

  /**
   * Loads, for `policy`, what its calls would otherwise load on the first one: each provider's
   * `prepare` (given the provider ids of the policy's models on it) and the OpenFGA client when
   * the policy uses it. Rejects with the first failure.
   */
  async prepare(policy: Policy = this.current): Promise<void> {
    const ids = new Map<string, string[]>();
    for (const m of policy.models.values()) ids.set(m.provider, [...(ids.get(m.provider) ?? []), m.modelId]);
    const jobs: Promise<void>[] = [];
    for (const [name, provider] of this.built(policy)) if (provider.prepare) jobs.push(provider.prepare(ids.get(name) ?? []));
    // The OpenFGA client, which the authorize step imports on its first check (src/pipeline/steps/authorize.ts).
    if (policy.config.identity.openfga) jobs.push(import('../identity/openfga.js').then(() => undefined));
    await Promise.all(jobs);
  }

  /** The authenticator for `policy`: its identity section, its API keys, then the issued ones. */
  authenticatorFor(policy: Policy): Authenticator {
    let authn = this.authenticators.get(policy);
    if (!authn) {
      authn = new Authenticator(policy.config.identity, {
        now: this.opts.now,
        apiKeys: policyApiKeys(policy.apiKeys),
        issuedKeys: this.opts.issuedKeys,
        policyKeyIds: new Set(policy.config.apiKeys.map((k) => k.id)),
        keySets: this.keySets,
      });
      this.authenticators.set(policy, authn);
    }
    return authn;
  }
}

/** Builds one provider per policy entry, with the policy's egress allowlist and proxy. */
export function buildProviders(policy: Policy, opts?: ProviderBuildOptions): Map<string, Provider> {
  const out = new Map<string, Provider>();
  const merged: ProviderBuildOptions = { ...opts, proxy: policy.config.egress.proxy ?? opts?.proxy, egressAllow: policy.config.egress.allow };
  for (const [name, cfg] of Object.entries(policy.config.providers)) out.set(name, createProvider(name, cfg, merged));
  return out;
}
