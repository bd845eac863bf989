/**
 * Runs one pipeline step alone on a real call context: a policy parsed from its text, a fixed
 * clock, a ledger over a real quota store, and a `next` that records each time the step called it
 * and what the context held at that moment. The step tests beside each step (src/pipeline/steps/*.test.ts)
 * build their contexts here.
 */
import { NO_LIMITS } from '../../src/policy/limits.js';
import { pino, type Logger } from 'pino';
import { GatewayError } from '../../src/errors.js';
import type { Next } from '../../src/pipeline/compose.js';
import type { CallContext } from '../../src/pipeline/context.js';
import { Ledger } from '../../src/pipeline/ledger.js';
import { parsePolicy, type Policy } from '../../src/policy/load.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import type { QuotaStore } from '../../src/quota/store.js';
import { deadUrl } from './fakeOpenFga.js';

/** The steps' clock: Wednesday 15 January 2025, 12:00 UTC (a Europe/Paris week runs 13 Jan 00:00 to 20 Jan 00:00 local). */
export const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
export const clock = (): number => NOW;

/** A logger that writes nothing. */
export const silent: Logger = pino({ level: 'silent' });

/** A logger whose lines are kept, parsed, for tests that pin what a step logs. */
export function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, lines };
}

export function testPolicy(text: string): Policy {
  return parsePolicy(text, 'step-test.yaml');
}

/** Appends a top-level `limits` section to a fixture policy's text. */
export function withLimits(policyText: string, limits: Record<string, number | boolean>): string {
  return `${policyText}\nlimits: ${JSON.stringify(limits)}\n`;
}

/** Adds a setting (e.g. `failMode: open`) to the fixture policy's user-weekly budget. */
export function userBudgetWith(policyText: string, setting: string): string {
  const anchor = /^ {4}tierDown: .*$/m;
  if (!anchor.test(policyText)) throw new Error('the policy text has no user-weekly tierDown line to add a setting after');
  return policyText.replace(anchor, (line) => `${line}\n    ${setting}`);
}

/** A fresh call context as the gateway makes one, with `init` on top. */
export function callContext(policy: Policy, init: Partial<Omit<CallContext, 'policy'>> = {}): CallContext {
  return {
    id: 'call-1',
    transport: 'http',
    purpose: 'complete',
    startedAt: NOW,
    policy,
    signal: new AbortController().signal,
    log: silent,
    estimatedInputTokens: 0,
    lines: [],
    budgets: [],
    limits: NO_LIMITS,
    attempts: [],
    ...init,
  };
}

/** A ledger over `store` with the gateway's key prefix and the steps' clock. */
export function testLedger(store: QuotaStore, now: () => number = clock): Ledger {
  return new Ledger({ store, keyPrefix: 'tollgate:', now, logger: silent });
}

/** A Redis quota store pointed at a loopback port where nothing listens: every read and reservation fails as QUOTA_STORE_UNAVAILABLE. */
export async function unreachableStore(): Promise<RedisQuotaStore> {
  const url = (await deadUrl()).replace('http://', 'redis://');
  return new RedisQuotaStore({ url, prefix: 'tollgate:', commandTimeoutMs: 100, logger: silent });
}

/** A `next` that records each call: what `look` saw in the context then, after running `act` (what the steps below would do). */
export interface RecordingNext<T> extends Next {
  readonly calls: T[];
}

export function recordingNext<T = true>(look?: () => T, act?: () => void | Promise<void>): RecordingNext<T> {
  const calls: T[] = [];
  const next = async () => {
    calls.push(look ? look() : (true as T));
    await act?.();
  };
  return Object.assign(next, { calls });
}

/** What a caller is told when `run` is refused: the GatewayError's code, message and details. */
export async function refusal(run: Promise<unknown>): Promise<{ code: string; message: string; details: Readonly<Record<string, unknown>> }> {
  let err: unknown;
  try {
    await run;
  } catch (e) {
    err = e;
  }
  if (!(err instanceof GatewayError)) throw new Error(`expected a GatewayError, got ${err === undefined ? 'success' : String(err)}`);
  return { code: err.code, message: err.message, details: err.details };
}
