/**
 * What `tollgate check` runs on a policy, as a function the CLI and the docs test share: load it
 * (YAML, bindings, schema, cross-checks), type-check its CEL, and list the warnings that do not
 * stop it serving: a shipped price the policy relies on that has not been confirmed for 90 days.
 */
import { shippedPrice, priceAgeDays } from '../providers/prices.js';
import type { BindingSources } from './bindings.js';
import { checkPolicyCel } from './celCheck.js';
import { parsePolicy, PolicyError, type Policy, type PolicyIssue } from './load.js';

/** How old a shipped price may be before `check` warns about it. */
export const PRICE_MAX_AGE_DAYS = 90;

export interface CheckResult {
  /** The compiled policy, when it has no error. */
  policy?: Policy;
  errors: PolicyIssue[];
  /** One sentence each; the policy still serves. */
  warnings: string[];
}

/**
 * The shipped prices `policy` charges with (models whose price it does not declare itself) that were
 * last confirmed more than PRICE_MAX_AGE_DAYS before `now`, naming the model, the date and the source.
 */
export function stalePrices(policy: Policy, now: number): string[] {
  const out: string[] = [];
  for (const model of policy.models.values()) {
    if (Object.hasOwn(policy.config.models, model.ref) && policy.config.models[model.ref]!.price) continue;
    const row = shippedPrice(policy.config.providers[model.provider]!.kind, model.modelId);
    const age = row && priceAgeDays(row, now);
    if (!row || age === undefined || age <= PRICE_MAX_AGE_DAYS) continue;
    out.push(
      `the shipped price of ${model.ref} was last checked on ${row.checked} (${age} days ago, against ${row.how}; source ${row.source}): ` +
        `confirm it there and declare models."${model.ref}".price, or update src/providers/prices.ts`,
    );
  }
  return out;
}

/** Checks policy text as `tollgate check` does; `source` names it in errors. */
export function checkPolicyText(text: string, source: string, opts: { sources?: BindingSources; now?: number } = {}): CheckResult {
  let policy: Policy;
  try {
    policy = parsePolicy(text, source, { sources: opts.sources });
  } catch (err) {
    if (err instanceof PolicyError) return { errors: err.issues, warnings: [] };
    throw err;
  }
  // The expressions against the variables they will see: a typo here would deny every call at run time.
  const errors = checkPolicyCel(policy, text);
  if (errors.length > 0) return { errors, warnings: [] };
  return { policy, errors: [], warnings: stalePrices(policy, opts.now ?? Date.now()) };
}
