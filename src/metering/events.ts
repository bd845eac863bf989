/**
 * One structured event per decision (allow, tier_down, deny, error), for FinOps and SIEM tools;
 * the pipeline builds it (src/pipeline/decisionEvent.ts), whichever step ended the call.
 * Field names follow the OpenTelemetry GenAI conventions where one exists. Prompt and completion
 * bodies are never included unless the policy's `metering.logPrompts` switch is on, and free text
 * (reasons, provider error messages, logged prompts) is scrubbed of credentials and of every
 * secret the policy holds.
 */

export interface DecisionEvent {
  event: 'tollgate.decision';
  'request.id': string;
  time: string;
  transport: string;
  effect: 'allow' | 'tier_down' | 'deny' | 'error';
  outcome: 'success' | 'refused' | 'failed';
  'error.code'?: string;
  'policy.version': string;
  'policy.rule_id'?: string;
  'policy.budget_id'?: string;
  reason?: string;
  'user.id'?: string;
  'user.teams'?: string[];
  'user.cost_center'?: string;
  /** The application whose key made the call (an application key); user, teams and cost centre are then its owner's. */
  'user.app'?: string;
  'user.groups'?: string[];
  'auth.method'?: string;
  /** Which credential identified the caller: an API key's id, a token's issuer (users two issuers name alike are told apart here). */
  'auth.credential.id'?: string;
  /** For a caller who was not identified: what they presented (`api_key`, `jwt` or `none`)... */
  'auth.credential.kind'?: 'api_key' | 'jwt' | 'none';
  /** ...and the first 12 hex digits of its SHA-256, to correlate refusals; never the credential. */
  'auth.credential.fingerprint'?: string;
  'actor.chain'?: string[];
  'gen_ai.operation.name': 'chat';
  'gen_ai.provider.name'?: string;
  'gen_ai.request.model'?: string;
  'gen_ai.response.model'?: string;
  /** The provider of the model asked for (`provider/model`), when the caller named one. */
  'tollgate.provider.requested'?: string;
  /** Absent when the call was refused before its arguments were read. */
  'gen_ai.request.max_tokens'?: number;
  'gen_ai.usage.input_tokens': number;
  'gen_ai.usage.output_tokens': number;
  'gen_ai.usage.cached_input_tokens'?: number;
  'tollgate.tier.requested'?: string;
  'tollgate.tier.served'?: string;
  'tollgate.model.served'?: string;
  'tollgate.reserved'?: { budget: string; subject: string; amount: number }[];
  'tollgate.charged'?: { budget: string; subject: string; amount: number; unit: string }[];
  /**
   * What the settlement charged each rate limit line of the call, beside its budgets: a request
   * (`requests`), its tokens (`tokens`), or 0 for a cap's slot given back (`calls_in_flight`).
   */
  'tollgate.limits_charged'?: { limit: string; subject: string; amount: number; unit: string }[];
  /** The provable upper bound on the input tokens (src/providers/estimate.ts). */
  'tollgate.estimated_input_tokens': number;
  /**
   * Input figures made before the call, by model: an exact count (`exact: true`), or a bound
   * tighter than `estimated_input_tokens` (OpenAI models, from their own vocabulary).
   */
  'tollgate.input_counted'?: { model: string; tokens: number; exact: boolean }[];
  /** What the reservation assumed: the input (the largest of its models' counts or the bound) and the most output tokens the call could produce. */
  'tollgate.reserved_tokens'?: { input: number; output: number };
  /**
   * Budget lines charged more than they reserved, because the provider reported more than admission
   * allowed for: the excess, in the line's unit, charged all the same. Absent when none.
   */
  'tollgate.overrun'?: { budget: string; subject: string; amount: number; unit: string }[];
  /** Max tokens sent upstream after lowering it to what the budget named can pay for. */
  'tollgate.output_clamp'?: { max_tokens: number; budget: string };
  /** The rate limit or cap that refused the call (RATE_LIMITED), and when it may be tried again. */
  'tollgate.rate_limit'?: { id: string; scope: string; subject: string; kind: string; limit: number; retry_after_ms: number };
  'tollgate.cost_usd': number;
  'tollgate.attempts': { model: string; provider: string; ok: boolean; error?: string; status?: number; ms: number }[];
  'tollgate.latency_ms': number;
  'tollgate.upstream_ms'?: number;
  /** The quota store failed during the call: refused (unavailable) or served on the local ledger (fail_open). */
  'tollgate.store_error'?: 'unavailable' | 'fail_open';
  /** Who wrote the charge: the call itself, or recovery after its process died (charged at the reservation). */
  'tollgate.settled_by'?: 'call' | 'recovery';
  /**
   * A dry run, not a call: an `estimate` (what a call would get now) or a `count_tokens`. It
   * reserves nothing, reaches no provider except to count, and charges nothing; usage reports,
   * FOCUS exports and the decision metrics leave it out. Absent on calls.
   */
  'tollgate.dry_run'?: 'estimate' | 'count_tokens';
  /**
   * An estimate's answer (`effect` is the decision the call would get, `outcome` says the estimate
   * was answered): the refusal code the call would meet, what it would reserve on each budget line
   * (in the line's unit), the output tokens it could produce, and its cost range in USD.
   */
  'tollgate.estimate'?: {
    code?: string;
    reserve: { budget: string; subject: string; amount: number; unit: string }[];
    max_tokens?: number;
    cost_usd?: { min: number; max: number };
  };
  /** A count_tokens answer: the model counted for, the input tokens, and whether the count is exact or admission's bound. */
  'tollgate.token_count'?: { model: string; tokens: number; exact: boolean };
  'gen_ai.prompt'?: unknown;
  'gen_ai.completion'?: string;
}

/**
 * Where decision events go. `emit` runs on the call path: it must not block, throw or wait on I/O.
 * `close` flushes what is buffered, on shutdown.
 */
export interface EventSink {
  emit(event: DecisionEvent): void;
  close?(): Promise<void>;
}
