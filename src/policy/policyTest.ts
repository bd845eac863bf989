/**
 * Policy tests in YAML: given a principal, the budgets' usage and a request, the decision
 * expected. Run by `tollgate test-policy` and by the project's own suite for every library policy.
 *
 * Each case goes through the real decide() and a replay of the reservation step (simulate.ts),
 * so a budget that cannot cover the call is reported as BUDGET_EXHAUSTED, or as a tier_down when a
 * cheaper tier fits, as a real call would be. No store and no provider are involved: what is not
 * covered is the provider call itself (failover, usage actually charged) and store outages.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { Principal } from '../identity/principal.js';
import { DEFAULT_MAX_TOKENS } from '../call/request.js';
import type { Decision } from './decide.js';
import { loadCheckedPolicyFile } from './check.js';
import { PolicyError, type Policy } from './load.js';
import { simulate, undeclaredUsage } from './simulate.js';
import { didYouMean } from '../config/suggest.js';
import { isoTime as readIsoTime } from '../isoTime.js';

/** A time as every command reads one (src/isoTime.ts): with its zone, a day of the calendar. */
const isoTime = z.string().superRefine((s, ctx) => {
  try {
    readIsoTime('', s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message.trim() });
  }
});

/** A principal as tests and `tollgate explain --as` give it. */
export const principalInputSchema = z
  .object({
    user: z.string().min(1),
    teams: z.array(z.string()).default([]),
    costCenter: z.string().optional(),
    groups: z.array(z.string()).default([]),
    roles: z.array(z.string()).default([]),
    /** The application whose key makes the call (its owner is `user`). */
    app: z.string().min(1).optional(),
  })
  .strict();

const caseSchema = z
  .object({
    name: z.string().min(1),
    principal: principalInputSchema,
    /**
     * Usage by budget or rate-limit id, or `id@subject`: tokens, or USD for dollar budgets; for a
     * rate limit, the requests or tokens counted in its window (`used`) and in flight (`reserved`),
     * or for a cap the calls in flight (`reserved`).
     */
    usage: z.record(z.string(), z.object({ used: z.number().nonnegative(), reserved: z.number().nonnegative().optional() }).strict()).default({}),
    request: z
      .object({
        tier: z.string().optional(),
        model: z.string().optional(),
        prompt: z.string().default('Hello'),
        /** A conversation instead of `prompt`, oldest first. */
        messages: z.array(z.object({ role: z.enum(['user', 'assistant']), content: z.string() }).strict()).min(1).optional(),
        system: z.string().optional(),
        maxTokens: z.number().int().positive().default(DEFAULT_MAX_TOKENS),
      })
      .strict()
      .default({ prompt: 'Hello', maxTokens: DEFAULT_MAX_TOKENS }),
    now: isoTime.optional(),
    expect: z
      .object({
        effect: z.enum(['allow', 'tier_down', 'deny']),
        tier: z.string().optional(),
        model: z.string().optional(),
        code: z.enum(['POLICY_DENIED', 'BUDGET_EXHAUSTED', 'RATE_LIMITED', 'UNKNOWN_MODEL', 'INVALID_REQUEST']).optional(),
        ruleId: z.string().optional(),
        budgetId: z.string().optional(),
        resetsAt: isoTime.optional(),
        /** A substring the decision's reason must contain. */
        reason: z.string().optional(),
      })
      .strict(),
  })
  .strict();

export const policyTestFileSchema = z
  .object({
    /** The policy under test, relative to the test file; without it, the policy every command resolves (--policy, TOLLGATE_POLICY, tollgate.yaml). */
    policy: z.string().min(1).optional(),
    /** Environment for the policy's `${env:...}` bindings; the process environment is not read. */
    env: z.record(z.string(), z.string()).default({}),
    /** Default time of every case. */
    now: isoTime.default('2026-11-25T10:00:00Z'),
    cases: z.array(caseSchema).min(1),
  })
  .strict();

export type PolicyTestCase = z.infer<typeof caseSchema>;
export type PolicyTestFile = z.infer<typeof policyTestFileSchema>;

/** What a case observed, in the shape of `expect`. */
export type Observed = Record<keyof PolicyTestCase['expect'], string | undefined>;

export interface CaseResult {
  name: string;
  passed: boolean;
  /** One entry per expected field that differs. */
  diff: { field: string; expected: string; actual: string | undefined }[];
  observed: Observed;
}

export interface FileResult {
  file: string;
  policy?: Policy;
  /** Set when the test file or its policy could not be loaded; no case ran. */
  error?: string;
  cases: CaseResult[];
}

function observe(decision: Decision): Observed {
  const served = decision.effect !== 'deny';
  return {
    effect: decision.effect,
    tier: served ? decision.tier : undefined,
    model: served ? decision.candidates[0]?.ref : undefined,
    code: decision.effect === 'deny' ? decision.code : undefined,
    ruleId: decision.ruleId,
    budgetId: decision.budgetId,
    resetsAt: decision.effect === 'deny' && decision.resetsAt !== undefined ? new Date(decision.resetsAt).toISOString() : undefined,
    reason: decision.reason,
  };
}

/** Runs one case against a loaded policy. */
export function runCase(policy: Policy, c: PolicyTestCase, defaultNow: string): CaseResult {
  const principal: Principal = { ...c.principal, authMethod: 'api_key' };
  let observed: Observed;
  try {
    const { decision } = simulate({
      policy,
      principal,
      request: { messages: c.request.messages ?? [{ role: 'user', content: c.request.prompt }], system: c.request.system, tier: c.request.tier, model: c.request.model, maxTokens: c.request.maxTokens },
      usage: c.usage,
      now: readIsoTime('now', c.now ?? defaultNow),
    });
    observed = observe(decision);
  } catch (err) {
    // An unknown model or tier is refused before deciding, and a call no wait lets under a token
    // limit (INVALID_REQUEST) after; tests may expect those refusals too.
    const code = (err as { code?: string }).code;
    if (code !== 'UNKNOWN_MODEL' && code !== 'INVALID_REQUEST') throw err;
    observed = { effect: 'deny', code, tier: undefined, model: undefined, ruleId: undefined, budgetId: undefined, resetsAt: undefined, reason: (err as Error).message };
  }
  const diff: CaseResult['diff'] = [];
  for (const [field, expected] of Object.entries(c.expect) as [keyof Observed, string | undefined][]) {
    if (expected === undefined) continue;
    const actual = observed[field];
    const ok = field === 'reason' ? (actual ?? '').includes(expected) : field === 'resetsAt' ? actual !== undefined && Date.parse(actual) === Date.parse(expected) : actual === expected;
    if (!ok) diff.push({ field, expected, actual });
  }
  return { name: c.name, passed: diff.length === 0, diff, observed };
}

/** Which policy a test file runs against. */
export interface PolicyChoice {
  /** A policy given on the command line: it replaces the one the file names. */
  override?: string;
  /** The policy the commands resolve, for a file that names none. */
  fallback?: string;
}

/**
 * Reads a test file, loads its policy (`choice.override`, else the file's `policy:`, else
 * `choice.fallback`) and runs every case. Never throws for a bad file: it reports it.
 */
export function runPolicyTestFile(file: string, choice: PolicyChoice = {}): FileResult {
  let spec: PolicyTestFile;
  try {
    const parsed = policyTestFileSchema.safeParse(parseYaml(readFileSync(file, 'utf8')));
    if (!parsed.success) {
      return { file, cases: [], error: `invalid test file: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}` };
    }
    spec = parsed.data;
  } catch (err) {
    return { file, cases: [], error: `cannot read test file: ${(err as Error).message.split('\n')[0]}` };
  }
  let policy: Policy;
  try {
    const path = choice.override ?? (spec.policy !== undefined ? resolve(dirname(file), spec.policy) : choice.fallback);
    if (path === undefined) return { file, cases: [], error: 'the test file names no policy: add `policy: <file>` or pass --policy' };
    policy = loadCheckedPolicyFile(resolve(path), { sources: { env: spec.env, readFile: (p) => readFileSync(p, 'utf8').replace(/\r?\n$/, '') } });
  } catch (err) {
    return { file, cases: [], error: err instanceof PolicyError ? err.message : String(err) };
  }
  // Usage of a budget the policy does not have would be ignored: a typo would pass a case untested.
  for (const [i, c] of spec.cases.entries()) {
    const missing = undeclaredUsage(policy, Object.keys(c.usage));
    if (!missing) continue;
    const { id, declared } = missing;
    return { file, policy, cases: [], error: `invalid test file: cases.${i}.usage: the policy declares no budget or rate limit ${id}${didYouMean(id, declared)} (it declares ${declared.join(', ') || 'none'})` };
  }
  return { file, policy, cases: spec.cases.map((c) => runCase(policy, c, spec.now)) };
}

/** Formats results for a terminal: one line per case, the diff under a failure, a summary last. */
export function formatResults(results: FileResult[]): { text: string; failed: number } {
  const out: string[] = [];
  let passed = 0;
  let failed = 0;
  for (const r of results) {
    if (r.error) {
      failed += 1;
      out.push(`ERROR ${r.file}: ${r.error}`);
      continue;
    }
    for (const c of r.cases) {
      if (c.passed) {
        passed += 1;
        out.push(`PASS ${r.file} > ${c.name}`);
        continue;
      }
      failed += 1;
      out.push(`FAIL ${r.file} > ${c.name}`);
      for (const d of c.diff) out.push(`    ${d.field}: expected ${JSON.stringify(d.expected)}, got ${d.actual === undefined ? '(none)' : JSON.stringify(d.actual)}`);
      out.push(`    reason: ${c.observed.reason}`);
    }
  }
  out.push(`${passed} passed, ${failed} failed`);
  return { text: out.join('\n') + '\n', failed };
}
