/**
 * The policy as `serve`, `stdio`, a hot reload and `explain` take it: what `tollgate check` passes
 * (src/policy/check.ts), warnings aside. Loading alone
 * (src/policy/load.ts) parses each CEL expression but cannot tell `principal.group` from
 * `principal.groups`, and at run time an expression reading a field that does not exist fails on
 * every call: a `cap_tier` or `allow` rule is then skipped, a deny rule denies, and a budget's or a
 * rate limit's `when` applies it to everyone. So every expression is type-checked before a policy
 * serves: rules against principal, request, budgets and now; budgets' and rate limits' `when`
 * against principal.
 */
import { checkPolicyText, loadCheckedPolicyFile } from '../policy/check.js';
import { PolicyError, type Policy } from '../policy/load.js';

/** Compiles policy text as the gateway serves it; throws PolicyError listing every issue. */
export function parseServedPolicy(text: string, source: string): Policy {
  const { policy, errors } = checkPolicyText(text, source);
  if (!policy) throw new PolicyError(source, errors);
  return policy;
}

/** Reads and compiles the policy file the gateway serves; throws PolicyError listing every issue. */
export const loadServedPolicy = (path: string): Policy => loadCheckedPolicyFile(path);
