/**
 * `--dev-anonymous USER` (TOLLGATE_DEV_ANONYMOUS): for development on one machine, a request that
 * presents no credential is served as a principal the policy declares, so tools that send none
 * (the MCP conformance suite, a local browser page) can reach the gateway. The principal is the
 * policy's `apiKeys` entry whose `id` or, failing that, whose `user` is USER: its teams, cost
 * centre, groups and roles, with `authMethod: anonymous`. The CLI allows it on a loopback address
 * only; requests that do present a credential authenticate as always.
 */
import type { ApiKeyConfig } from './config.js';
import type { Principal } from './principal.js';

/** The label anonymous calls carry as their credential id in events. */
export const DEV_ANONYMOUS_CREDENTIAL = 'dev-anonymous';

/** The principal `name` stands for among the policy's keys (enabled ones), or undefined when it names none. */
export function anonymousPrincipal(keys: Iterable<ApiKeyConfig>, name: string): Principal | undefined {
  const enabled = [...keys].filter((k) => !k.disabled);
  const entry = enabled.find((k) => k.id === name) ?? enabled.find((k) => k.user === name);
  if (!entry) return undefined;
  const p: Principal = {
    user: entry.user,
    teams: [...entry.teams],
    groups: [...entry.groups],
    roles: [...entry.roles],
    authMethod: 'anonymous',
    credentialId: DEV_ANONYMOUS_CREDENTIAL,
  };
  if (entry.costCenter !== undefined) p.costCenter = entry.costCenter;
  return p;
}
