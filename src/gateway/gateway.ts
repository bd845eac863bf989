/**
 * The gateway every transport feeds: a policy runtime (the current policy and what is built per
 * policy), a ledger (the quota store, its fail-open fallback, settlements in flight) and the one
 * pipeline every call runs through. Transports hand over a credential and wire-neutral arguments;
 * authentication, validation, the decision and the charge all happen in the pipeline, so every
 * refusal, whichever step makes it, leaves one decision event.
 */
import { NO_LIMITS } from '../policy/limits.js';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { BudgetView } from '../call/budget.js';
import { budgetView } from '../call/budget.js';
import type { CompletionInput } from '../call/request.js';
import { GatewayError } from '../errors.js';
import type { ApiKeyResolver } from '../identity/apiKey.js';
import type { KeyRegistry } from '../identity/storedKeys.js';
import type { Authenticated } from '../identity/authenticate.js';
import { anonymousPrincipal } from '../identity/devAnonymous.js';
import type { Principal } from '../identity/principal.js';
import type { DecisionEvent, EventSink } from '../metering/events.js';
import { decide } from '../policy/decide.js';
import type { Policy, PolicyIssue } from '../policy/load.js';
import type { Provider, StopReason, Usage } from '../providers/provider.js';
import type { ProviderBuildOptions } from '../providers/registry.js';
import type { QuotaStore } from '../quota/store.js';
import { compose, type Middleware } from '../pipeline/compose.js';
import type { CallArguments, CallContext, CallPurpose, Credential, DryRun, TransportName } from '../pipeline/context.js';
import { Ledger } from '../pipeline/ledger.js';
import { authenticate } from '../pipeline/steps/authenticate.js';
import { checkRelationships } from '../pipeline/steps/authorize.js';
import { enforcePolicy } from '../pipeline/steps/decide.js';
import { dispatchToProvider } from '../pipeline/steps/dispatch.js';
import { countInput } from '../pipeline/steps/count.js';
import { estimateInput } from '../pipeline/steps/estimate.js';
import { meter } from '../pipeline/steps/meter.js';
import { reserveAndSettle } from '../pipeline/steps/reserve.js';
import { predictAdmission } from '../pipeline/steps/predict.js';
import { validate } from '../pipeline/steps/validate.js';
import { eitherSignal } from '../signals.js';
import { estimateResult, tokenCountResult, type EstimateResult, type TokenCountResult } from './dryRun.js';
import { PolicyRuntime } from './policyRuntime.js';

/**
 * The signal of a context that calls no provider (an edge authentication, a refusal recorded): its
 * steps only ask whether it was aborted, so one signal that never is serves them all, instead of a
 * controller made per request. A call that reaches a provider always gets a signal of its own.
 */
const NOT_CANCELLED: AbortSignal = new AbortController().signal;

/** What cuts a call that cannot be cut short (an edge authentication, a refusal recorded): nothing. */
const UNCUT = (): void => undefined;

export type { BudgetView, EstimateResult, TokenCountResult };

export interface GatewayOptions {
  policy: Policy;
  store: QuotaStore;
  logger: Logger;
  sink: EventSink;
  /** Namespace of every ledger key, e.g. `tollgate:`. */
  keyPrefix?: string;
  now?: () => number;
  providerOptions?: ProviderBuildOptions;
  /**
   * --dev-anonymous: a call that presents no credential is served as the policy's API key entry
   * with this id or user (src/identity/devAnonymous.ts). The CLI allows it on loopback only.
   */
  devAnonymous?: string;
  /** API keys issued at run time (shared store), looked up after the policy's own keys. */
  issuedKeys?: ApiKeyResolver & Partial<KeyRegistry> & { close?: () => Promise<void> };
}

export interface CallResult {
  text: string;
  /** Why the answer ended (the provider's finish reason, mapped; see providers/provider.ts). */
  stopReason: StopReason;
  /** The stop sequence that ended it, when the provider named one. */
  stopSequence?: string;
  model: string;
  tier: string;
  provider: string;
  usage: Usage;
  costUsd: number;
  decision: { effect: 'allow' | 'tier_down'; requestedTier: string; tier: string; ruleId?: string; budgetId?: string; reason: string };
  budgets: BudgetView[];
  requestId: string;
}

interface CallBase {
  transport: TransportName;
  signal?: AbortSignal;
  /** Text deltas as they arrive, with the model ref serving them (known before the first byte is sent on). */
  onText?: (delta: string, model: string) => void;
  /**
   * Called once, just before the first text delta reaches `onText` (or, when none came, before
   * `complete` returns), with the caller's budgets as this call's admission read them, this call
   * not yet counted: what a streamed answer's head carries, without a read of its own.
   */
  onHead?: (budgets: BudgetView[]) => void;
  requestId?: string;
}

/**
 * One completion. Transports pass what they received: the credential (undefined when none was
 * sent) and the arguments. In-process callers that already hold a principal and a validated
 * request (the CLI, tests, benchmarks) may pass those instead.
 */
export type CallRequest = CallBase & ({ credential: Credential | undefined; args: CallArguments } | { principal: Principal; request: CompletionInput });

/** An authentication at the edge, and the policy snapshot it holds under (to reuse it in a call). */
export interface EdgeAuthentication extends Authenticated {
  policy: Policy;
}

export class Gateway {
  private readonly runtime: PolicyRuntime;
  private readonly ledger: Ledger;
  private readonly run: (ctx: CallContext) => Promise<void>;
  private readonly identify: (ctx: CallContext) => Promise<void>;
  private readonly record: (ctx: CallContext) => Promise<void>;
  private readonly estimateRun: (ctx: CallContext) => Promise<void>;
  private readonly countRun: (ctx: CallContext) => Promise<void>;
  private readonly now: () => number;

  constructor(private readonly opts: GatewayOptions) {
    this.now = opts.now ?? Date.now;
    this.runtime = new PolicyRuntime(opts.policy, { now: this.now, providerOptions: opts.providerOptions, issuedKeys: opts.issuedKeys });
    this.ledger = new Ledger({ store: opts.store, keyPrefix: opts.keyPrefix ?? 'tollgate:', now: this.now, logger: opts.logger });
    // The event log, SIEM and metrics hear of a decision once the journal holds it.
    opts.store.onEvent((event) => opts.sink.emit(event as unknown as DecisionEvent));
    const metered = meter({ commit: (ctx, event, settled) => this.ledger.commit(ctx, event, settled), now: this.now, background: (work) => this.ledger.track(work) });
    const anonymousAs = opts.devAnonymous;
    const authenticated = authenticate({
      authenticatorFor: (p) => this.runtime.authenticatorFor(p),
      now: this.now,
      ...(anonymousAs ? { anonymous: (p: Policy) => anonymousPrincipal(p.apiKeys.values(), anonymousAs) } : {}),
    });
    this.identify = compose<CallContext>([metered, authenticated]);
    // A refusal at the edge is attributed to the caller it proved there, or proves now (refuse: quietly, its own code kept).
    const attributed: Middleware<CallContext> = (ctx, next) => (ctx.credential?.verified ? authenticated(ctx, next) : next());
    this.record = compose<CallContext>([metered, attributed, validate()]);
    const providerFor = (policy: Policy, name: string) => this.runtime.providerFor(policy, name);
    const admission = [metered, authenticated, validate(), checkRelationships({ now: this.now }), enforcePolicy({ ledger: this.ledger, now: this.now })];
    const estimated = estimateInput({ providerFor });
    this.run = compose<CallContext>([
      ...admission,
      estimated,
      reserveAndSettle({ ledger: this.ledger, providerFor }),
      dispatchToProvider({ providerFor, dispatched: (ctx) => this.ledger.dispatched(ctx), now: this.now }),
    ]);
    // Dry runs: the same steps up to the reservation, which is planned and not made (estimate), or replaced by a count.
    this.estimateRun = compose<CallContext>([...admission, estimated, predictAdmission({ providerFor })]);
    this.countRun = compose<CallContext>([...admission, countInput({ providerFor })]);
  }

  /** Whether a request without a credential is served (--dev-anonymous) rather than refused. */
  get anonymousEnabled(): boolean {
    return this.opts.devAnonymous !== undefined;
  }

  /** The policy new calls start under. */
  get policy(): Policy {
    return this.runtime.policy;
  }

  /** The gateway's log: transports write what they cannot say as a decision event here. */
  get logger(): Logger {
    return this.opts.logger;
  }

  /** The shared quota store. */
  get store(): QuotaStore {
    return this.ledger.store;
  }

  /** Where keys issued at run time are kept (the shared store or the data directory); none without either. */
  get keyRegistry(): KeyRegistry | undefined {
    const k = this.opts.issuedKeys;
    return k?.issue && k.revoke && k.list ? (k as KeyRegistry) : undefined;
  }

  /** Swaps in a new policy atomically; calls in flight finish under the policy they started with. */
  replacePolicy(policy: Policy, providers?: Map<string, Provider>): void {
    this.runtime.replace(policy, providers);
    // What the new policy's providers load (a vocabulary it names for the first time) is loaded now
    // rather than midway through its first call.
    void this.prepare(policy);
  }

  /**
   * What refuses `policy` here although its file is valid: each `apiKeys` id that a key issued at
   * run time already holds (revoked or not: an id stays taken). The two would share the id in
   * events, listings and `scope: key` rate-limit lines (`key:<id>`) though they are different keys.
   * `tollgate keys issue` refuses an id the policy has; this is the other way round, checked at
   * start and on each reload. Rejects (QUOTA_STORE_UNAVAILABLE) when the issued keys cannot be listed.
   */
  async vet(policy: Policy): Promise<PolicyIssue[]> {
    const registry = this.keyRegistry;
    if (!registry || policy.config.apiKeys.length === 0) return [];
    const issued = new Set((await registry.list()).map((k) => k.id));
    const issues: PolicyIssue[] = [];
    policy.config.apiKeys.forEach((k, i) => {
      if (issued.has(k.id)) {
        issues.push({ path: `apiKeys[${i}].id`, message: `API key id "${k.id}" is held by a key issued with tollgate keys (tollgate keys list); give the policy's key another id` });
      }
    });
    return issues;
  }

  /**
   * Loads what the policy's providers would otherwise load on their first call (their SDKs, OpenAI's
   * vocabularies): loads of 0.1 to 0.5 s each that stall every call in flight. main.ts awaits it
   * before serving. Never rejects: a load that fails is logged, and the calls that need it report why.
   */
  async prepare(policy: Policy = this.runtime.policy): Promise<void> {
    await this.runtime.prepare(policy).catch((err: unknown) => this.logger.warn({ event: 'provider_prepare_failed', err }, 'a provider could not load ahead of its first call; its calls will report why'));
  }

  /** Runs one completion through the pipeline. Throws GatewayError on refusal or failure; either way one decision event is recorded. */
  async complete(call: CallRequest): Promise<CallResult> {
    const ctx = await this.running(call, 'complete', this.run);
    const d = ctx.decision;
    if (!d || d.effect === 'deny' || !ctx.served || !ctx.usage) throw new GatewayError('INTERNAL', 'pipeline finished without a result');
    ctx.head?.();
    return {
      requestId: ctx.id,
      text: ctx.served.text,
      stopReason: ctx.served.stopReason,
      ...(ctx.served.stopSequence ? { stopSequence: ctx.served.stopSequence } : {}),
      model: ctx.served.model.ref,
      tier: d.tier,
      provider: ctx.served.model.provider,
      usage: ctx.usage,
      costUsd: (ctx.costMicroUsd ?? 0) / 1e6,
      decision: { effect: d.effect, requestedTier: d.requestedTier, tier: d.tier, ruleId: d.ruleId, budgetId: d.budgetId, reason: d.reason },
      budgets: ctx.budgetsRead(ctx.charged),
    };
  }

  /**
   * What a completion would get now, without making it: the call's own steps up to the
   * reservation, whose candidates are checked against the budgets read and not reserved. Journaled
   * as an `estimate` decision event that charges nothing. A refusal the call would meet (a rule, a
   * budget) is the answer, not an error; the estimate itself throws only when it cannot be made
   * (authentication, invalid arguments, authorization, an unreachable store).
   */
  async estimate(call: CallRequest): Promise<EstimateResult> {
    const ctx = await this.running(call, 'estimate', this.estimateRun);
    if (!ctx.decision || !ctx.request) throw new GatewayError('INTERNAL', 'estimate finished without a decision');
    return estimateResult(ctx);
  }

  /**
   * The input tokens a completion would be billed for on the model that would serve it, through
   * the call's own steps up to the decision (a refusal there refuses the count), then counted
   * instead of reserved. Journaled as a `count_tokens` decision event that charges nothing.
   */
  async countTokens(call: CallRequest): Promise<TokenCountResult> {
    const ctx = await this.running(call, 'count_tokens', this.countRun);
    if (!ctx.tokenCount) throw new GatewayError('INTERNAL', 'count finished without a count');
    return tokenCountResult(ctx);
  }

  /**
   * Authenticates a credential at the edge (before a transport serves a request that is not a
   * completion, such as an MCP initialize), through the pipeline's meter and authenticate steps:
   * a refusal is recorded as a decision event, a success is not. Throws AUTH_REQUIRED,
   * AUTH_INVALID or FORBIDDEN.
   */
  async authenticate(credential: Credential | undefined, call: { transport: TransportName; requestId?: string; dryRun?: DryRun }): Promise<EdgeAuthentication> {
    const ctx = this.context({ transport: call.transport, requestId: call.requestId, credential, args: { raw: undefined } }, 'authenticate', NOT_CANCELLED);
    if (call.dryRun) ctx.authenticatesFor = call.dryRun;
    await this.enter(ctx, this.identify(ctx), UNCUT);
    const { principal, credentialExpiresAt: expiresAt, credentialRevocable: revocable, policy } = ctx;
    return revocable ? { principal: principal!, revocable, policy } : { principal: principal!, expiresAt, policy };
  }

  /**
   * Records a refusal the edge made before a call could be formed (malformed HTTP or JSON-RPC, a
   * Host or Origin refused, an unknown path or session): one decision event with the refusal's
   * code, as the principal an earlier edge verification found (`credential.verified`), else as the
   * caller the presented credential proves now (`attribute`), else as unknown with what it
   * presented fingerprinted. `logged`: the fault behind an INTERNAL refusal is in the log already,
   * with its stack, so it is not logged again. Never throws.
   */
  async refuse(refusal: GatewayError, call: { transport: TransportName; credential?: Credential; requestId?: string; logged?: boolean }): Promise<void> {
    const args = { raw: undefined, rejected: refusal, rejectedLogged: call.logged };
    const presented = call.credential;
    const credential = presented?.secret && !presented.verified && !presented.malformed ? await this.attribute(presented) : presented;
    const ctx = this.context({ transport: call.transport, requestId: call.requestId, credential, args }, 'complete', NOT_CANCELLED);
    await this.enter(ctx, this.record(ctx), UNCUT).catch(() => undefined);
  }

  /**
   * A credential an edge refusal presented, proved quietly: the refusal keeps its own code and
   * answer, and is recorded as whom the credential names; one that proves no one (unknown, expired,
   * refused) is returned as it came and recorded by its fingerprint. Nothing else is recorded.
   */
  private async attribute(credential: Credential): Promise<Credential> {
    const policy = this.runtime.policy;
    try {
      const result = await this.runtime.authenticatorFor(policy).authenticate(credential.secret, credential.only ? { only: credential.only } : {});
      return { secret: credential.secret, verified: { policy, result } };
    } catch {
      return credential;
    }
  }

  /** The tiers and models this caller may use now, with prices (per million tokens, USD). */
  listModels(principal: Principal) {
    const policy = this.runtime.policy;
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
        models: policy.tierModels.get(tier)!.map((m) => ({
          model: m.ref,
          provider: m.provider,
          inputPerMTokUsd: m.price.inputPerMTok,
          outputPerMTokUsd: m.price.outputPerMTok,
          maxOutputTokens: m.maxOutputTokens,
        })),
      };
    });
  }

  /** The budgets that apply to this caller, read through the same fail-mode path as calls. */
  myBudget(principal: Principal): Promise<BudgetView[]> {
    return this.ledger.budgetsOf(this.runtime.policy, principal);
  }

  /**
   * Resolves once every call answered so far has its charge in the store (or queued for replay)
   * and its decision event emitted. Calls answer before that by default (limits.settleBeforeReply).
   */
  idle(): Promise<void> {
    return this.ledger.idle();
  }

  /**
   * Resolves once every call started so far is committed: the calls still in the pipeline (at their
   * provider, an A2A task running after its answer, a stdio call whose client left) and those
   * answered (`idle`). A shutdown waits for it, up to its deadline, before closing the store.
   */
  settled(): Promise<void> {
    return this.ledger.settled();
  }

  /** Aborts every call in the pipeline: each ends CANCELLED, charged what it consumed, with its event. Returns how many. */
  cutCalls(): number {
    return this.ledger.cutCalls();
  }

  /** Calls whose ledger write or decision event is still on its way. */
  get finishingCalls(): number {
    return this.ledger.finishingCalls;
  }

  /** Calls in the pipeline: started and not yet committed. */
  get runningCalls(): number {
    return this.ledger.runningCalls;
  }

  /** The request ids of the calls in the pipeline. */
  runningIds(): string[] {
    return this.ledger.runningIds();
  }

  /** Closes the ledger and the issued keys, once the calls still in the pipeline are cut and committed. */
  async close(): Promise<void> {
    this.ledger.cutCalls();
    await this.ledger.settled();
    await this.opts.issuedKeys?.close?.();
    await this.ledger.close();
  }

  private context(call: CallRequest, purpose: CallPurpose, signal: AbortSignal): Call & CallContext {
    return new Call(call, purpose, this.now(), this.runtime.policy, this.opts.logger, signal);
  }

  /**
   * A call that may reach a provider, run through `pipeline` under a signal of its own: the caller's
   * (a transport's cancellation) or the gateway's cut at a shutdown's deadline (`cutCalls`).
   */
  private async running(call: CallRequest, purpose: CallPurpose, pipeline: (ctx: CallContext) => Promise<void>): Promise<Call & CallContext> {
    const cut = new AbortController();
    const ctx = this.context(call, purpose, call.signal ? eitherSignal(call.signal, cut.signal) : cut.signal);
    await this.enter(ctx, pipeline(ctx), (reason) => cut.abort(reason));
    return ctx;
  }

  /** Counts the call's run with the ledger until it is committed, so that a shutdown waits for it; returns the run. */
  private enter(ctx: CallContext, run: Promise<void>, cut: (reason: GatewayError) => void): Promise<void> {
    this.ledger.enter(ctx.id, run, cut);
    return run;
  }
}

/**
 * One call's context as the gateway starts it. Its logger, a child bound to the request id,
 * transport and user, is made the first time a step logs: most calls never log, and making a pino
 * child for each cost more than the policy check. The getter is the class's, on the prototype: an
 * accessor defined on each context (Object.defineProperty, as before) gave every context a shape of
 * its own, and one that replaced the plain `log` field put it in V8's dictionary mode, so that every
 * step's reads of the context were hash lookups.
 */
class Call implements CallContext {
  declare readonly id: string;
  declare readonly transport: TransportName;
  declare readonly purpose: CallPurpose;
  declare authenticatesFor?: DryRun;
  declare readonly startedAt: number;
  declare readonly policy: Policy;
  declare readonly credential?: Credential;
  declare principal?: Principal;
  declare readonly args?: CallArguments;
  declare request?: CompletionInput;
  declare readonly signal: AbortSignal;
  declare readonly onText?: (delta: string, model: string) => void;
  /** Set while the call's `onHead` has not been told yet. */
  declare head: (() => void) | undefined;
  declare estimatedInputTokens: number;
  declare lines: CallContext['lines'];
  declare budgets: CallContext['budgets'];
  declare budgetsAssumed: boolean;
  declare limits: CallContext['limits'];
  declare attempts: CallContext['attempts'];
  readonly #parent: Logger;
  #log: Logger | undefined;

  constructor(call: CallRequest, purpose: CallPurpose, startedAt: number, policy: Policy, parent: Logger, signal: AbortSignal) {
    this.id = call.requestId ?? randomUUID();
    this.transport = call.transport;
    this.purpose = purpose;
    this.startedAt = startedAt;
    this.policy = policy;
    if ('principal' in call) {
      this.principal = call.principal;
      this.request = call.request;
    } else {
      this.credential = call.credential;
      this.args = call.args;
    }
    this.signal = signal;
    this.head = undefined;
    this.onText = call.onHead ? this.headFirst(call.onHead, call.onText) : call.onText;
    this.estimatedInputTokens = 0;
    this.lines = [];
    this.budgets = [];
    this.budgetsAssumed = false;
    this.limits = NO_LIMITS;
    this.attempts = [];
    this.#parent = parent;
  }

  /** Tells `onHead` the budgets once, before the first delta or (`head()`) at the end. */
  private headFirst(onHead: (budgets: BudgetView[]) => void, onText: ((delta: string, model: string) => void) | undefined): (delta: string, model: string) => void {
    this.head = () => {
      this.head = undefined;
      onHead(this.budgetsRead());
    };
    return (delta, model) => {
      this.head?.();
      onText?.(delta, model);
    };
  }

  /** The budgets as admission read them, this call not counted: `charged` adds what it was charged. */
  budgetsRead(charged?: readonly number[]): BudgetView[] {
    return this.budgets.map((b, i) =>
      budgetView({
        id: b.budget.config.id,
        scope: b.budget.config.scope,
        subject: b.subject,
        unit: b.budget.unit,
        limit: b.budget.limit,
        used: b.used + (charged?.[i] ?? 0),
        reserved: b.reserved,
        resetsAt: b.resetsAt,
      }),
    );
  }

  get log(): Logger {
    return (this.#log ??= this.#parent.child({ requestId: this.id, transport: this.transport, ...(this.principal ? { user: this.principal.user } : {}) }));
  }

  set log(value: Logger) {
    this.#log = value;
  }
}
