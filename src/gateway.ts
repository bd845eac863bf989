/**
 * The gateway every transport feeds: it owns the current policy, the quota store and the
 * providers, and runs each call through the same pipeline. Transports only translate their wire
 * format to `complete`, `listModels` and `myBudget`, and map GatewayError back.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { GatewayError } from './errors.js';
import { policyApiKeys, type ApiKeyResolver } from './identity/apiKey.js';
import { Authenticator, type AuthenticateOptions, type Authenticated } from './identity/authenticate.js';
import { chainResolvers } from './identity/storedKeys.js';
import type { Principal } from './identity/principal.js';
import type { EventSink } from './metering/events.js';
import { decide, type CompletionInput } from './policy/decide.js';
import type { Policy } from './policy/load.js';
import type { Provider, Usage } from './providers/provider.js';
import { createProvider, type ProviderBuildOptions } from './providers/registry.js';
import { MemoryQuotaStore } from './quota/memory.js';
import type { QuotaStore } from './quota/store.js';
import { applicableLines } from './pipeline/budgets.js';
import { compose } from './pipeline/compose.js';
import type { CallContext, TransportName } from './pipeline/context.js';
import { checkRelationships } from './pipeline/steps/authorize.js';
import { enforcePolicy } from './pipeline/steps/decide.js';
import { dispatchToProvider } from './pipeline/steps/dispatch.js';
import { requirePrincipal } from './pipeline/steps/identify.js';
import { meter } from './pipeline/steps/meter.js';
import { reserveAndSettle } from './pipeline/steps/reserve.js';

export interface GatewayOptions {
  policy: Policy;
  store: QuotaStore;
  logger: Logger;
  sink: EventSink;
  /** Namespace of every ledger key, e.g. `tollgate:`. */
  keyPrefix?: string;
  now?: () => number;
  providerOptions?: ProviderBuildOptions;
  /** API keys issued at run time (shared store), looked up after the policy's own keys. */
  issuedKeys?: ApiKeyResolver & { close?: () => Promise<void> };
}

/** A budget line as a caller sees it. */
export interface BudgetView {
  id: string;
  scope: string;
  subject: string;
  unit: 'tokens' | 'usd';
  limit: number;
  used: number;
  reserved: number;
  remaining: number;
  resetsAt: string;
}

export interface CallResult {
  text: string;
  model: string;
  tier: string;
  provider: string;
  usage: Usage;
  costUsd: number;
  decision: { effect: 'allow' | 'tier_down'; requestedTier: string; tier: string; ruleId?: string; budgetId?: string; reason: string };
  budgets: BudgetView[];
  requestId: string;
}

export interface CallRequest {
  principal: Principal | undefined;
  transport: TransportName;
  request: CompletionInput;
  signal?: AbortSignal;
  /** Text deltas as they arrive, with the model ref serving them (known before the first byte is sent on). */
  onText?: (delta: string, model: string) => void;
  requestId?: string;
}

/** Converts ledger units to what a person reads: tokens stay tokens, micro-dollars become dollars. */
function display(unit: 'tokens' | 'usd', n: number): number {
  return unit === 'usd' ? n / 1e6 : n;
}

export class Gateway {
  private state: { policy: Policy; providers: Map<string, Provider> };
  private readonly run: (ctx: CallContext) => Promise<void>;
  private readonly now: () => number;
  private readonly keyPrefix: string;
  readonly store: QuotaStore;
  private readonly fallbackStore: QuotaStore;
  /** One authenticator per policy: it holds that policy's JWKS caches. */
  private readonly authenticators = new WeakMap<Policy, Authenticator>();
  /** Ledger writes and decision events of calls already answered (limits.settleBeforeReply: false). */
  private readonly finishing = new Set<Promise<void>>();

  constructor(private readonly opts: GatewayOptions) {
    this.now = opts.now ?? Date.now;
    this.keyPrefix = opts.keyPrefix ?? 'tollgate:';
    this.store = opts.store;
    this.fallbackStore = new MemoryQuotaStore(this.now);
    this.state = { policy: opts.policy, providers: buildProviders(opts.policy, opts.providerOptions) };
    const stores = { store: this.store, fallbackStore: this.fallbackStore };
    this.run = compose<CallContext>([
      meter({ sink: opts.sink, now: this.now, background: (work) => this.track(work) }),
      requirePrincipal(),
      checkRelationships({ now: this.now }),
      enforcePolicy({ ...stores, keyPrefix: this.keyPrefix, now: this.now }),
      reserveAndSettle(stores),
      dispatchToProvider({ providerFor: (name) => this.state.providers.get(name), now: this.now }),
    ]);
  }

  get policy(): Policy {
    return this.state.policy;
  }

  /** Swaps in a new policy atomically; calls in flight finish under the policy they started with. */
  replacePolicy(policy: Policy, providers?: Map<string, Provider>): void {
    this.state = { policy, providers: providers ?? buildProviders(policy, this.opts.providerOptions) };
  }

  /** Runs one completion through the pipeline. Throws GatewayError on refusal or failure. */
  async complete(call: CallRequest): Promise<CallResult> {
    const id = call.requestId ?? randomUUID();
    const ctx: CallContext = {
      id,
      transport: call.transport,
      startedAt: this.now(),
      policy: this.state.policy,
      principal: call.principal,
      request: call.request,
      signal: call.signal ?? new AbortController().signal,
      onText: call.onText,
      log: this.opts.logger,
      estimatedInputTokens: 0,
      lines: [],
      budgets: [],
      attempts: [],
    };
    lazyLog(ctx, this.opts.logger);
    await this.run(ctx);
    const d = ctx.decision;
    if (!d || d.effect === 'deny' || !ctx.served || !ctx.usage) throw new GatewayError('INTERNAL', 'pipeline finished without a result');
    return {
      requestId: id,
      text: ctx.served.text,
      model: ctx.served.model.ref,
      tier: d.tier,
      provider: ctx.served.model.provider,
      usage: ctx.usage,
      costUsd: (ctx.costMicroUsd ?? 0) / 1e6,
      decision: { effect: d.effect, requestedTier: d.requestedTier, tier: d.tier, ruleId: d.ruleId, budgetId: d.budgetId, reason: d.reason },
      budgets: ctx.budgets.map((b, i) => {
        const used = b.used + (ctx.charged?.[i] ?? 0);
        return view(b.budget.config.id, b.budget.config.scope, b.subject, b.budget.unit, b.budget.limit, used, b.reserved, b.resetsAt);
      }),
    };
  }

  /** The tiers and models this caller may use now, with prices (per million tokens, USD). */
  listModels(principal: Principal) {
    const policy = this.state.policy;
    return policy.tiers.map((tier) => {
      let allowed = true;
      let note: string | undefined;
      const d = decide({ policy, principal, request: { messages: [], tier, maxTokens: 1 }, estimatedInputTokens: 0, budgets: [], now: this.now() });
      if (d.effect === 'deny') {
        allowed = false;
        note = d.reason;
      } else if (d.tier !== tier) {
        allowed = false;
        note = `served by tier ${d.tier} for you: ${d.reason}`;
      }
      return {
        tier,
        allowed,
        note,
        models: policy.config.tiers[tier]!.map((ref) => {
          const m = policy.models.get(ref)!;
          return { model: ref, provider: m.provider, inputPerMTokUsd: m.price.inputPerMTok, outputPerMTokUsd: m.price.outputPerMTok, maxOutputTokens: m.maxOutputTokens };
        }),
      };
    });
  }

  /** The budgets that apply to this caller, with used, reserved and remaining amounts. */
  async myBudget(principal: Principal): Promise<BudgetView[]> {
    const lines = applicableLines(this.state.policy.budgets, principal, this.now(), this.keyPrefix);
    if (lines.length === 0) return [];
    const states = await this.store.read(lines.map((l) => l.line));
    return lines.map((l, i) => view(l.budget.config.id, l.budget.config.scope, l.subject, l.budget.unit, l.budget.limit, states[i]!.used, states[i]!.reserved, l.resetsAt));
  }

  /** Resolves an API key to its principal; throws AUTH_INVALID for an unknown or disabled key. */
  authenticateApiKey(key: string): Principal {
    const hash = createHash('sha256').update(key, 'utf8').digest('hex');
    const entry = this.state.policy.apiKeys.get(hash);
    if (!entry || entry.disabled) throw new GatewayError('AUTH_INVALID', 'The API key is not recognised (unknown, revoked or disabled).');
    return {
      user: entry.user,
      teams: [...entry.teams],
      costCenter: entry.costCenter,
      groups: [...entry.groups],
      roles: [...entry.roles],
      authMethod: 'api_key',
      credentialId: entry.id,
    };
  }

  /**
   * Proves who presents a bearer credential (API key, or JWT from a trusted issuer) and checks the
   * policy's gateway-wide rights. Throws AUTH_INVALID, or FORBIDDEN for a caller who lacks them.
   */
  async authenticate(credential: string, opts?: AuthenticateOptions): Promise<Authenticated> {
    const policy = this.state.policy;
    let authn = this.authenticators.get(policy);
    if (!authn) {
      const issued = this.opts.issuedKeys;
      authn = new Authenticator(policy, { now: this.now, ...(issued ? { apiKeys: chainResolvers(policyApiKeys(policy), issued) } : {}) });
      this.authenticators.set(policy, authn);
    }
    return authn.authenticate(credential, opts);
  }

  /**
   * Resolves once every call answered so far has its charge in the store (or queued for replay)
   * and its decision event emitted. Calls answer before that by default (limits.settleBeforeReply).
   */
  async idle(): Promise<void> {
    while (this.finishing.size > 0) await Promise.all(this.finishing);
  }

  /** Calls whose ledger write or decision event is still on its way. */
  get finishingCalls(): number {
    return this.finishing.size;
  }

  private track(work: Promise<void>): void {
    const done = work.catch((err: unknown) => this.opts.logger.error({ err, event: 'call_finish_failed' }, 'a call could not be finished after its answer'));
    this.finishing.add(done);
    void done.finally(() => this.finishing.delete(done));
  }

  async close(): Promise<void> {
    await this.idle();
    await this.opts.issuedKeys?.close?.();
    await this.store.close();
    await this.fallbackStore.close();
  }
}

/**
 * The call's logger, a child bound to its request id, transport and user, is made the first time a
 * step logs: most calls never log, and making a pino child for each cost more than the policy check.
 */
function lazyLog(ctx: CallContext, parent: Logger): void {
  let log: Logger | undefined;
  Object.defineProperty(ctx, 'log', {
    enumerable: true,
    configurable: true,
    get: () => (log ??= parent.child({ requestId: ctx.id, transport: ctx.transport, ...(ctx.principal ? { user: ctx.principal.user } : {}) })),
    set: (value: Logger) => {
      log = value;
    },
  });
}

function view(id: string, scope: string, subject: string, unit: 'tokens' | 'usd', limit: number, used: number, reserved: number, resetsAt: number): BudgetView {
  return {
    id,
    scope,
    subject,
    unit,
    limit: display(unit, limit),
    used: display(unit, used),
    reserved: display(unit, reserved),
    remaining: display(unit, Math.max(0, limit - used - reserved)),
    resetsAt: new Date(resetsAt).toISOString(),
  };
}

/** Builds one provider per policy entry. */
export function buildProviders(policy: Policy, opts?: ProviderBuildOptions): Map<string, Provider> {
  const out = new Map<string, Provider>();
  // The policy's egress section applies to every adapter it builds, so a reloaded policy's allowlist and proxy take effect.
  const merged: ProviderBuildOptions = { ...opts, proxy: policy.config.egress.proxy ?? opts?.proxy, egressAllow: policy.config.egress.allow };
  for (const [name, cfg] of Object.entries(policy.config.providers)) out.set(name, createProvider(name, cfg, merged));
  return out;
}
