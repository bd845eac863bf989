/**
 * The principal a policy API key stands for, looked up the way the gateway does (by its SHA-256
 * among the policy's keys), for tests that set budgets or read ledger lines of a known caller.
 */
import { hashApiKey, principalFromApiKey } from '../../src/identity/apiKey.js';
import type { Principal } from '../../src/identity/principal.js';
import type { Policy } from '../../src/policy/load.js';

export function keyPrincipal(holder: { policy: Policy }, key: string): Principal {
  const entry = holder.policy.apiKeys.get(hashApiKey(key));
  if (!entry || entry.disabled) throw new Error('test key is not an enabled key of the policy');
  return principalFromApiKey(entry);
}
