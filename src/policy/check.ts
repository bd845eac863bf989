/**
 * What `tollgate check` runs on a policy, as a function the CLI and the docs test share: load it
 * (YAML, bindings, schema, cross-checks), type-check its CEL, and list the warnings that do not
 * stop it serving: a shipped price the policy relies on that has not been confirmed for 90 days,
 * and a model it routes to that the provider has retired or retires within 60 days.
 */
import { shippedPrice, priceAgeDays } from '../providers/prices.js';
import type { BindingSources } from './bindings.js';
import { checkPolicyCel } from './celCheck.js';
import { parsePolicy, PolicyError, readPolicyText, type LoadOptions, type Policy, type PolicyIssue } from './load.js';

/** How old a shipped price may be before `check` warns about it. */
export const PRICE_MAX_AGE_DAYS = 90;
/** How many days ahead of a model's retirement `check` starts warning. */
export const RETIREMENT_NOTICE_DAYS = 60;

/**
 * A warning's stable code: `PRICE_UNCHECKED` (a shipped price not confirmed for 90 days),
 * `MODEL_RETIRED` (the provider no longer serves a model the policy routes to),
 * `MODEL_RETIRING` (it stops within RETIREMENT_NOTICE_DAYS), `USERS_SHARED` (two OIDC issuers
 * whose users are named alike: one user for budgets, limits and rules).
 */
export type CheckWarningCode = 'PRICE_UNCHECKED' | 'MODEL_RETIRED' | 'MODEL_RETIRING' | 'USERS_SHARED' | 'PERCENT_AS_FRACTION';

export interface CheckWarning {
  code: CheckWarningCode;
  /** One sentence naming the model, the date and where it was read. */
  message: string;
}

export interface CheckResult {
  /** The compiled policy, when it has no error. */
  policy?: Policy;
  errors: PolicyIssue[];
  /** The policy still serves. */
  warnings: CheckWarning[];
}

const DAY_MS = 86_400_000;

/**
 * The shipped prices `policy` charges with (models whose price it does not declare itself) that were
 * last confirmed more than PRICE_MAX_AGE_DAYS before `now`, naming the model, the date and the source.
 */
export function stalePrices(policy: Policy, now: number): CheckWarning[] {
  const out: CheckWarning[] = [];
  for (const model of policy.models.values()) {
    if (Object.hasOwn(policy.config.models, model.ref) && policy.config.models[model.ref]!.price) continue;
    const row = shippedPrice(policy.config.providers[model.provider]!.kind, model.modelId);
    const age = row && priceAgeDays(row, now);
    if (!row || age === undefined || age <= PRICE_MAX_AGE_DAYS) continue;
    out.push({
      code: 'PRICE_UNCHECKED',
      message:
        `the shipped price of ${model.ref} was last checked on ${row.checked} (${age} days ago, against ${row.how}; source ${row.source}): ` +
        `confirm it there and declare models."${model.ref}".price, or update src/providers/prices.ts`,
    });
  }
  return out;
}

/**
 * OIDC issuers whose tokens name users alike (the same `userPrefix`, none by default): a user one
 * names is, for budgets, limits and rules, the user the other names the same, so a second (say a
 * partner's) identity provider can spend an employee's budget. Deliberate when both serve the same
 * people (an IdP migration); a warning, not an error.
 */
export function sharedUsers(policy: Policy): CheckWarning[] {
  const out: CheckWarning[] = [];
  const issuers = policy.config.identity.oidc;
  for (let i = 1; i < issuers.length; i++) {
    const earlier = issuers.slice(0, i).find((e) => e.userPrefix === issuers[i]!.userPrefix);
    if (!earlier) continue;
    out.push({
      code: 'USERS_SHARED',
      message:
        `identity.oidc[${i}] (${issuers[i]!.issuer}) names users as ${earlier.issuer} does (userPrefix "${earlier.userPrefix}"): a user named the same by both is one user ` +
        'for budgets, limits and rules; give one of them a userPrefix unless they serve the same people',
    });
  }
  return out;
}

/** `remainingPct` compared with a number literal: `budgets.x.remainingPct < 0.2`, its operator and number. */
const PCT_COMPARED = /remainingPct\s*(?:<=?|>=?|==|!=)\s*(\d*\.\d+|\d+)/g;

/**
 * Rules comparing a budget's `remainingPct`, a per cent (0 to 100), with a number between 0 and 1
 * exclusive: almost always a fraction meant as a share (`< 0.2` for 20 % left), which fires only
 * under 0.2 % left. A warning, as `tierDown.below: 0.2` is an error: a rule may mean it.
 */
export function percentAsFraction(policy: Policy): CheckWarning[] {
  const out: CheckWarning[] = [];
  policy.config.rules.forEach((rule, i) => {
    for (const m of rule.when.matchAll(PCT_COMPARED)) {
      const n = Number(m[1]);
      if (n > 0 && n < 1) {
        out.push({
          code: 'PERCENT_AS_FRACTION',
          message: `rules[${i}] (${rule.id}) compares remainingPct, a per cent from 0 to 100, with ${m[1]}: that is ${m[1]} % left, not ${n * 100} %; write ${n * 100}.0 if a share was meant`,
        });
      }
    }
  });
  return out;
}

/**
 * The models `policy` routes to whose shipped row says the provider retires them on or before
 * RETIREMENT_NOTICE_DAYS after `now`, whatever price the policy declares: a declared price does not
 * keep a retired model answering.
 */
export function retiringModels(policy: Policy, now: number): CheckWarning[] {
  const out: CheckWarning[] = [];
  for (const model of policy.models.values()) {
    const row = shippedPrice(policy.config.providers[model.provider]!.kind, model.modelId);
    if (!row?.retires) continue;
    const daysLeft = Math.ceil((Date.parse(`${row.retires}T00:00:00Z`) - now) / DAY_MS);
    if (daysLeft > RETIREMENT_NOTICE_DAYS) continue;
    const instead = row.successor ? `move its tiers to ${model.provider}/${row.successor}` : 'move its tiers to a current model';
    const where = `(source: ${row.retiresSource ?? row.source})`;
    out.push(
      daysLeft <= 0
        ? { code: 'MODEL_RETIRED', message: `${model.ref} was retired on ${row.retires} ${where}: calls to it fail; ${instead}` }
        : {
            code: 'MODEL_RETIRING',
            message: `${model.ref} retires on ${row.retires}, in ${daysLeft} day${daysLeft === 1 ? '' : 's'} ${where}: calls to it will fail from that day; ${instead}`,
          },
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
  const now = opts.now ?? Date.now();
  return { policy, errors: [], warnings: [...retiringModels(policy, now), ...stalePrices(policy, now), ...sharedUsers(policy), ...percentAsFraction(policy)] };
}

/**
 * Reads and compiles a policy file as it will serve: what `check` passes, warnings aside. Throws
 * PolicyError listing every issue.
 */
export function loadCheckedPolicyFile(path: string, opts: LoadOptions = {}): Policy {
  const { policy, errors } = checkPolicyText(readPolicyText(path), path, opts);
  if (!policy) throw new PolicyError(path, errors);
  return policy;
}
