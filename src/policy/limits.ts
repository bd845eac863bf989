/**
 * Rate limits and concurrency caps as ledger lines. A limit is one more line of the call's
 * reservation, checked and taken in the same atomic store step as the budgets (one script on a
 * Redis node, the memory store's one turn), with the store's own check `used + reserved + amount
 * <= limit`:
 *
 * - requests per second or minute: the call reserves 1 and, once dispatched, is charged 1 in the
 *   bucket of the moment it was admitted;
 * - tokens per minute: the call reserves its worst case (input bound plus output cap, as a tokens
 *   budget does) and is charged what it used;
 * - calls in flight: the call reserves 1 and is charged nothing; the reservation is the count,
 *   given back when the call settles, is released (cancelled, failed) or is closed by recovery.
 *
 * Request and token limits count over a sliding window made of buckets (src/quota/windows.ts
 * `resolveSliding`): usage is the sum of the window's buckets plus the reservations in flight.
 * docs/rate-limits.md says what that bounds and why it is not GCRA.
 */
import { GatewayError } from '../errors.js';
import { principalView, type Principal } from '../identity/principal.js';
import type { Usage } from '../providers/provider.js';
import { lineHead, lineText } from '../quota/redisJournal.js';
import { CAP_UNIT } from '../quota/journal.js';
import { lineAt, type LedgerLine, type ReserveOutcome } from '../quota/store.js';
import { resolveSliding, slidingBucketStart } from '../quota/windows.js';
import { lineKeys, principalSubjects } from './budgets.js';
import type { CompiledLimit } from './load.js';

/** One limit for one subject, resolved to its keys now; the amount is set per candidate. */
export interface LimitLine {
  limit: CompiledLimit;
  subject: string;
  /** Bucket starts, oldest first, matching `line.readKeys` (none for a cap). */
  readStarts: number[];
  spanMs: number;
  line: Omit<LedgerLine, 'amount'>;
  /**
   * The ledger line at amount 1 and at 0, made once with the line: what a request or a cap
   * reserves, and what a request is charged (a cap always 0). Shared by every call in the bucket,
   * so never changed: `ledgerLine` gives them, or a new line for any other amount.
   */
  one: LedgerLine;
  zero: LedgerLine;
}

/** The limit line as a ledger line of `amount`: the line's own `one` or `zero`, or a new one (a token limit). */
export function ledgerLine(l: LimitLine, amount: number): LedgerLine {
  return amount === 1 ? l.one : amount === 0 ? l.zero : lineAt(l.line, amount);
}

/** Whether a candidate of `tier` is subject to the limit. */
export function limitCovers(limit: CompiledLimit, tier: string): boolean {
  return limit.config.tiers === undefined || limit.config.tiers.includes(tier);
}

/** The subject of scope `key`: the API key's id, or for a token its issuer and user. */
export function keySubject(p: Principal): string {
  return p.authMethod === 'api_key' || p.authMethod === 'stdio_env' ? `key:${p.credentialId ?? p.user}` : `${p.authMethod}:${p.credentialId ?? ''}:${p.user}`;
}

function subjectsOf(limit: CompiledLimit, p: Principal): string[] {
  switch (limit.config.scope) {
    case 'key':
      return [keySubject(p)];
    case 'user':
    case 'team':
    case 'costCenter':
    case 'application':
    case 'global':
      return principalSubjects(limit.config.scope, p);
    default:
      return [];
  }
}

/** One limit line for `subject` at `now`. */
export function limitLine(limit: CompiledLimit, subject: string, now: number, prefix: string): LimitLine {
  const id = limit.config.id;
  if (limit.kind === 'concurrent') {
    // No usage counter: the reservations are the count. A charge of nothing lands nowhere (expired).
    const keys = lineKeys(prefix, id, subject, [], 0);
    return withAmounts({ limit, subject, readStarts: [], spanMs: 0, line: { budgetId: id, subject, limit: limit.limit, expiresAt: 0, ...keys } });
  }
  const w = resolveSliding(limit.spanMs, limit.buckets, now);
  const bucket = [w.start, w.start + w.bucketMs] as const;
  const late = Math.min(limit.buckets, Math.ceil(LATE_MS / w.bucketMs));
  const lateStarts = Array.from({ length: late }, (_, j) => w.start + (j + 1) * w.bucketMs);
  const lateKeys = lineKeys(prefix, id, subject, lateStarts, w.start).readKeys;
  return withAmounts({ limit, subject, readStarts: w.readStarts, spanMs: w.spanMs, line: { budgetId: id, subject, limit: limit.limit, expiresAt: w.expiresAt, ...lineKeys(prefix, id, subject, w.readStarts, w.start), bucket, lateKeys } });
}

/**
 * How late a reservation may reach Redis after its limit lines were resolved and still be charged
 * in the bucket Redis's clock is in (LedgerLine.lateKeys): a loaded event loop delays a command by
 * up to hundreds of ms (85 ms typical, 278 ms at worst on a 2-core machine under load), more than a
 * per-second limit's 100 ms bucket. Later than that, the line is refused as skewed and resolved again.
 */
export const LATE_MS = 500;

/** `l` resolved `late` buckets after its own: the line a reservation the store charged that late settles on. */
export function laterLimitLine(l: LimitLine, late: number, prefix: string): LimitLine {
  const [start, end] = l.line.bucket!;
  return keptLimitLine(l.limit, l.subject, start + late * (end - start), prefix);
}

function withAmounts(l: Omit<LimitLine, 'one' | 'zero'>): LimitLine {
  // Fields in the order of a budget's ledger line (src/policy/budgets.ts), written out rather than
  // spread (see lineAt in quota/store.ts), so the stores see one shape. The head goes on the line
  // too, so a token limit's line of any other amount (`ledgerLine`) carries it.
  const { budgetId, subject, limit, expiresAt, usageKey, readKeys, reservedKey, bucket, lateKeys } = l.line;
  const line = { budgetId, subject, limit, expiresAt, usageKey, readKeys, reservedKey, head: lineHead(l.line), bucket, lateKeys };
  const at = (amount: number): LedgerLine => {
    const priced = lineAt(line, amount);
    priced.text = lineText(priced);
    return priced;
  };
  return { limit: l.limit, subject: l.subject, readStarts: l.readStarts, spanMs: l.spanMs, line, one: at(1), zero: at(0) };
}

/** Subjects whose lines a limit keeps; past it the oldest kept goes. */
const LINES_KEPT = 10_000;
/** Each limit's lines by key prefix, then subject, for the bucket they were resolved in. */
const kept = new WeakMap<CompiledLimit, Map<string, Map<string, LimitLine>>>();

/**
 * `limitLine`, reused while `now` stays in the bucket it was resolved in (a cap's line for ever):
 * a line is a dozen key strings (a minute in 12 buckets), and building them every call, then
 * hashing them afresh in the store, was about a quarter of what two limits cost a call
 * (docs/benchmarks.md, "Rate limits"). Lines are never changed once made.
 */
export function keptLimitLine(limit: CompiledLimit, subject: string, now: number, prefix: string): LimitLine {
  let byPrefix = kept.get(limit);
  if (!byPrefix) kept.set(limit, (byPrefix = new Map()));
  // Two lookups of strings the caller already holds (their hashes are cached), not a key built per call.
  let lines = byPrefix.get(prefix);
  if (!lines) byPrefix.set(prefix, (lines = new Map()));
  const line = lines.get(subject);
  if (line && (limit.kind === 'concurrent' || line.readStarts[line.readStarts.length - 1] === slidingBucketStart(limit.spanMs, limit.buckets, now))) return line;
  const made = limitLine(limit, subject, now, prefix);
  if (!line && lines.size >= LINES_KEPT) lines.delete(lines.keys().next().value!);
  lines.set(subject, made);
  return made;
}

/** The limits that apply to a principal: lines for the scopes it names, and the limits whose subject is the tier or model served. */
export interface ApplicableLimits {
  fixed: LimitLine[];
  perCandidate: CompiledLimit[];
}

export const NO_LIMITS: ApplicableLimits = Object.freeze({ fixed: [], perCandidate: [] }) as ApplicableLimits;

/** The limits that apply to `principal` now. A `when` that fails to evaluate applies the limit (fail safe). */
export function applicableLimits(limits: readonly CompiledLimit[], principal: Principal, now: number, prefix: string): ApplicableLimits {
  if (limits.length === 0) return NO_LIMITS;
  const out: ApplicableLimits = { fixed: [], perCandidate: [] };
  let view: { principal: Record<string, unknown> } | undefined;
  for (const limit of limits) {
    if (limit.appliesTo) {
      view ??= { principal: principalView(principal) };
      let applies = true;
      try {
        applies = limit.appliesTo(view);
      } catch {
        applies = true;
      }
      if (!applies) continue;
    }
    if (limit.config.scope === 'tier' || limit.config.scope === 'model') out.perCandidate.push(limit);
    else for (const subject of subjectsOf(limit, principal)) out.fixed.push(keptLimitLine(limit, subject, now, prefix));
  }
  return out;
}

/**
 * The limit lines a candidate of `tier`, reserved on `model` first, is subject to, resolved at
 * `now`, the moment of the reservation. The fixed lines were resolved when the call's limits were
 * found (the decide step), maybe a bucket earlier: such a line reads a window that ends before the
 * current bucket, so it misses what the current bucket holds and admits calls past the limit.
 */
export function candidateLimits(limits: ApplicableLimits, tier: string, model: string, now: number, prefix: string): LimitLine[] {
  const out: LimitLine[] = [];
  for (const l of limits.fixed) if (limitCovers(l.limit, tier)) out.push(keptLimitLine(l.limit, l.subject, now, prefix));
  for (const limit of limits.perCandidate) {
    if (limitCovers(limit, tier)) out.push(keptLimitLine(limit, limit.config.scope === 'tier' ? tier : model, now, prefix));
  }
  return out;
}

/** What a call reserves on a limit line: 1 request or call, or its worst case in tokens. */
export function limitAmount(limit: CompiledLimit, worstCaseTokens: number): number {
  return limit.kind === 'tokens' ? worstCaseTokens : 1;
}

/** The unit each kind of limit is charged in, as decision events state it (`tollgate.limits_charged`). */
export const LIMIT_UNITS: Record<CompiledLimit['kind'], string> = { requests: 'requests', tokens: 'tokens', concurrent: CAP_UNIT };

/** What a finished call is charged on a limit line: 1 request once dispatched, the tokens it used, nothing for a cap. */
export function limitCharge(limit: CompiledLimit, usage: Usage | undefined, dispatched: boolean): number {
  if (limit.kind === 'requests') return dispatched ? 1 : 0;
  if (limit.kind === 'tokens') return usage ? usage.inputTokens + usage.outputTokens : 0;
  return 0;
}

/**
 * When a call refused by this line may be admitted, epoch ms. For a window: the moment enough of
 * its oldest buckets have left it, counting the calls in flight as charged in the current bucket
 * (they are charged in the bucket they were admitted in, at most that late); so a retry at that
 * time fits if nothing else was admitted meanwhile. For a cap: the limit's suggested pause.
 */
export function retryAt(line: LimitLine, refusal: Extract<ReserveOutcome, { ok: false }>, now: number): number {
  if (line.limit.kind === 'concurrent' || line.readStarts.length === 0) return now + line.limit.config.retryAfterMs;
  const values = refusal.buckets ?? [];
  let excess = refusal.used + refusal.reserved + refusal.requested - refusal.limit;
  for (let j = 0; j < line.readStarts.length; j++) {
    excess -= values[j] ?? 0;
    if (excess <= 0) return Math.max(now + 1, line.readStarts[j]! + line.spanMs);
  }
  return Math.max(now + 1, line.readStarts[line.readStarts.length - 1]! + line.spanMs);
}

/**
 * The refusal of a call whose worst case on a token limit is more than the limit allows in a whole
 * window: no wait admits it, so it is not RATE_LIMITED (whose retry time would send the caller
 * back for the same refusal) but an argument out of range, as max_tokens over the ceiling is.
 */
export function tooLargeForLimitError(line: LimitLine, requested: number, maxTokens: number): GatewayError {
  const { config } = line.limit;
  const fits = Math.max(0, maxTokens - (requested - line.limit.limit));
  return new GatewayError(
    'INVALID_REQUEST',
    `Invalid arguments: max_tokens ${maxTokens} lets this call use up to ${requested} tokens, more than rate limit ${config.id} (${config.scope} ${line.subject}) allows in a ${line.limit.spanMs === 1000 ? 'second' : 'minute'} (${line.limit.limit}); lower max_tokens to at most ${fits}.`,
    { limitId: config.id, scope: config.scope, subject: line.subject, kind: line.limit.kind, limit: line.limit.limit, requested },
  );
}
