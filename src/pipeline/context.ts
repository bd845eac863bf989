/**
 * The typed state of one call as it moves through the pipeline. Transports create it; steps fill
 * it in; the meter step turns it into the decision event.
 */
import type { Logger } from 'pino';
import type { GatewayError } from '../errors.js';
import type { Principal } from '../identity/principal.js';
import type { BudgetState, CompletionInput, Decision } from '../policy/decide.js';
import type { ModelInfo, Policy } from '../policy/load.js';
import type { Usage } from '../providers/provider.js';
import type { BudgetLine } from './budgets.js';

export type TransportName = 'stdio' | 'http' | 'a2a' | 'openai' | 'anthropic' | 'cli';

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

export interface CallContext {
  readonly id: string;
  readonly transport: TransportName;
  readonly startedAt: number;
  /** The policy as it was when the call started; a hot reload does not change it mid-call. */
  readonly policy: Policy;
  readonly principal: Principal | undefined;
  readonly request: CompletionInput;
  /** Aborted when the caller cancels or disconnects; wired to the upstream request. */
  readonly signal: AbortSignal;
  /** Set when the caller wants text as it arrives (MCP progress, SSE); `model` is the ref serving it. */
  readonly onText?: (delta: string, model: string) => void;
  log: Logger;

  estimatedInputTokens: number;
  lines: BudgetLine[];
  budgets: BudgetState[];
  decision?: Decision;
  /** The model and amounts reserved; set once the reservation holds. */
  reservation?: { model: ModelInfo; tier: string; amounts: number[] };
  /** Max tokens lowered to what the remaining budget can pay for, and the budget that set it. */
  outputClamp?: { tokens: number; budgetId: string };
  attempts: Attempt[];
  /** The model that served the call and what it returned. */
  served?: { model: ModelInfo; responseModel: string; text: string; stopReason?: string };
  /** Tokens consumed, also on failure when a stream was cut or cancelled midway. */
  usage?: Usage;
  /** Amount charged to each line at settle, in the line's unit. */
  charged?: number[];
  costMicroUsd?: number;
  upstreamMs?: number;
  /** Set when the quota store failed during the call: refused (closed), served on the local ledger (open), or a settlement queued. */
  storeError?: 'unavailable' | 'fail_open' | 'settle_failed';
  error?: GatewayError;
  /**
   * The ledger write (settle or release) still running when the caller may already have its
   * answer (`limits.settleBeforeReply: false`); the decision event waits for it. Never rejects.
   */
  settling?: Promise<void>;
}
