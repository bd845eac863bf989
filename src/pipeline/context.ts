/**
 * The typed state of one call as it moves through the pipeline. The gateway creates it from what a
 * transport handed over (a credential and wire-neutral arguments); steps fill it in; the meter
 * step turns it into the decision event, whichever step ended the call.
 */
import type { Logger } from 'pino';
import type { CompletionInput } from '../call/request.js';
import type { GatewayError } from '../errors.js';
import type { Authenticated } from '../identity/authenticate.js';
import type { Principal } from '../identity/principal.js';
import type { BudgetLine } from '../policy/budgets.js';
import type { ApplicableLimits, LimitLine } from '../policy/limits.js';
import type { BudgetState, Decision } from '../policy/decide.js';
import type { ModelInfo, Policy } from '../policy/load.js';
import { outputCap, type Candidate, type OutputClamp } from '../policy/plan.js';
import type { StopReason, Usage } from '../providers/provider.js';
import type { QuotaStore } from '../quota/store.js';

export type TransportName = 'stdio' | 'http' | 'a2a' | 'openai' | 'anthropic' | 'cli' | 'console';

/** One upstream try, kept for the event and for PROVIDER_UNAVAILABLE details. */
export interface Attempt {
  model: string;
  provider: string;
  ok: boolean;
  errorCode?: string;
  status?: number;
  reason?: string;
  ms: number;
}

/** A credential exactly as the transport received it; the authenticate step proves it. */
export interface Credential {
  /** The API key or JWT. Never logged or recorded: events carry its kind and a short fingerprint. */
  secret: string;
  /** Accept only this kind (stdio's TOLLGATE_TOKEN must be a JWT). */
  only?: 'api_key' | 'jwt';
  /** Where the caller put it (an environment variable), named in refusals; stdio API keys authenticate as `stdio_env`. */
  source?: 'TOLLGATE_API_KEY' | 'TOLLGATE_TOKEN';
  /**
   * An edge verification of this same credential; reused only under the same policy snapshot and
   * before it expires. Not kept beyond one call for a revocable (issued) key: stdio looks it up again.
   */
  verified?: { policy: Policy; result: Authenticated };
  /** Why the header it came in is not one a credential is read from (no Bearer scheme): refused AUTH_INVALID, whatever it holds. */
  malformed?: string;
}

/** What a call asks for before validation: the transport's arguments and how to read them. */
export interface CallArguments {
  /** Wire-neutral `complete` arguments, or the transport's own body when `decode` is given. */
  raw: unknown;
  /** Turns a transport's body into `complete` arguments; throws INVALID_REQUEST naming the field. */
  decode?: (raw: unknown) => unknown;
  /** The API's `model` field may name a tier (OpenAI/Anthropic-compatible endpoints, A2A). */
  modelNamesTier?: boolean;
  /** The name the caller's API gave the output cap (`max_tokens` when unset), for a refusal that names it. */
  outputCapField?: string;
  /** A refusal the transport met before the arguments could be read (body too large, not JSON). */
  rejected?: GatewayError;
  /** The fault behind an INTERNAL `rejected` is in the log already (the A2A SDK's, with its stack): the meter does not log it again. */
  rejectedLogged?: boolean;
}

/**
 * What the context is for: a completion; only an authentication at the edge (recorded only when
 * refused); or a dry run that goes through admission without reserving or dispatching: `estimate`
 * (what a call would get now) or `count_tokens` (the input a call would be billed for).
 */
export type CallPurpose = 'complete' | 'authenticate' | 'estimate' | 'count_tokens';

/** A dry run's kind, as its decision event names it (`tollgate.dry_run`). */
export type DryRun = Extract<CallPurpose, 'estimate' | 'count_tokens'>;

/** What the reserve step would reserve now: the planner's first candidate that fits the budgets read (an estimate). */
export interface Prediction {
  /** Absent when the call would be refused. */
  candidate?: Candidate;
  /** The cost range of the candidate, in micro-dollars: least input and no output, to the reservation's worst case. */
  costMicroUsd?: { min: number; max: number };
  /** Exact input counts by model ref for the cost range's low end (the estimate step's, or made for it). */
  counted: Map<string, number>;
}

export interface CallContext {
  readonly id: string;
  readonly transport: TransportName;
  readonly purpose: CallPurpose;
  /**
   * For an authentication at the edge of a dry-run route (`purpose` authenticate): the dry run it
   * admits, whose refusal its event is (`tollgate.dry_run`), so that reports and refusal alerts,
   * which leave dry runs out, leave it out too.
   */
  authenticatesFor?: DryRun;
  readonly startedAt: number;
  /** The policy as it was when the call started; a hot reload does not change it mid-call. */
  readonly policy: Policy;
  /** Set by the transport; the authenticate step turns it into `principal`. */
  readonly credential?: Credential;
  /** Set by the authenticate step (or by an in-process caller that is already trusted). */
  principal?: Principal;
  /** When the credential stops being valid, seconds since the epoch. */
  credentialExpiresAt?: number;
  /** Set when the credential is a key issued at run time, which a revocation can end (Authenticated.revocable). */
  credentialRevocable?: true;
  /** Set by the transport; the validate step turns it into `request`. */
  readonly args?: CallArguments;
  /** Set by the validate step (or by an in-process caller). */
  request?: CompletionInput;
  /** Aborted when the caller cancels or disconnects; wired to the upstream request. */
  readonly signal: AbortSignal;
  /** Set when the caller wants text as it arrives (MCP progress, SSE); `model` is the ref serving it. */
  readonly onText?: (delta: string, model: string) => void;
  log: Logger;

  /** The provable bound on the call's input tokens (src/providers/estimate.ts), set by the decide step. */
  estimatedInputTokens: number;
  /**
   * Input figures by model ref, made by the estimate step: a tighter bound or an exact count taken
   * on every call where the provider offers one, and an exact count when the bound did not fit.
   */
  inputTokens?: Map<string, number>;
  /** The refs in `inputTokens` whose figure is an exact count, not a bound. */
  inputCounted?: Set<string>;
  lines: BudgetLine[];
  /** The states of `lines` the decision was made on: read, or assumed untouched (`budgetsAssumed`) until the reservation reports them. */
  budgets: BudgetState[];
  /**
   * Set by the decide step when it decided on budgets assumed untouched rather than read ones; the
   * reserve step proves the assumption with its reservation or reads and decides again, and clears it.
   */
  budgetsAssumed?: boolean;
  /** The rate limits and caps that apply to the caller, set by the decide step. */
  limits: ApplicableLimits;
  decision?: Decision;
  /** The model and amounts reserved, and the store holding them; set once the reservation holds. */
  reservation?: {
    model: ModelInfo;
    tier: string;
    amounts: number[];
    store?: QuotaStore;
    /** The limit lines reserved with the budgets, and what each holds. */
    limits?: { line: LimitLine; amount: number }[];
  };
  /** The limit that refused the call, with when it may be tried again (epoch ms). */
  rateLimited?: { line: LimitLine; retryAt: number; remaining: number };
  /** Max tokens lowered to what the remaining budget can pay for, and the budget that set it. */
  outputClamp?: OutputClamp;
  /** Set by the predict step of an estimate, which reserves nothing. */
  prediction?: Prediction;
  /** Set by the count step of a count_tokens dry run: the model the call would be served by and its input. */
  tokenCount?: { model: ModelInfo; tokens: number; exact: boolean };
  attempts: Attempt[];
  /** The model that served the call and what it returned. */
  served?: { model: ModelInfo; responseModel: string; text: string; stopReason: StopReason; stopSequence?: string };
  /** Tokens consumed, also on failure when a stream was cut or cancelled midway. */
  usage?: Usage;
  /** The same tokens by the model that consumed them (one entry an attempt that consumed any), for pricing. */
  consumed?: { model: ModelInfo; usage: Usage }[];
  /** Amount charged to each line at settle, in the line's unit. */
  charged?: number[];
  /**
   * What was charged beyond the reservation on each budget or token limit line where the provider
   * reported more than was reserved, in the line's unit (`micro_usd` or `tokens`).
   */
  overrun?: { budget: string; subject: string; amount: number; unit: 'micro_usd' | 'tokens' }[];
  costMicroUsd?: number;
  upstreamMs?: number;
  /** Set when the quota store failed during the call: refused (closed) or served on the local ledger (open). */
  storeError?: 'unavailable' | 'fail_open';
  error?: GatewayError;
}

/** The principal and request of a call past the authenticate and validate steps. */
export function admitted(ctx: CallContext): { principal: Principal; request: CompletionInput } {
  if (!ctx.principal || !ctx.request) throw new Error('pipeline step ran before authenticate and validate');
  return { principal: ctx.principal, request: ctx.request };
}

/** The input tokens admission reserved for `model`: its figure when the estimate step made one, else the bound. */
export function reservedInputTokens(ctx: Pick<CallContext, 'inputTokens' | 'estimatedInputTokens'>, model: ModelInfo): number {
  return ctx.inputTokens?.get(model.ref) ?? ctx.estimatedInputTokens;
}

/**
 * The output tokens a call may produce on `model`: what was asked, within the model's own ceiling
 * and within what the remaining budgets can pay for (the clamp).
 */
export function callOutputCap(ctx: CallContext, model: ModelInfo): number {
  return outputCap(admitted(ctx).request.maxTokens, model, ctx.outputClamp);
}
