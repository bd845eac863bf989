/**
 * Load-time checks of the policy's `identity` section that zod alone cannot make: the OpenFGA host
 * must be on the egress allowlist like any provider's, its templates may only name known values,
 * and an issuer is listed once.
 */
import { unknownPlaceholders } from '../identity/fgaTemplate.js';
import { isEgressAllowed } from '../providers/egress.js';
import type { PolicyConfig } from './schema.js';

/** Reports each problem through `at(path, message)`, as the policy loader does for the rest. */
export function checkIdentity(config: PolicyConfig, at: (path: readonly PropertyKey[], message: string) => void): void {
  const { identity } = config;
  const seen = new Set<string>();
  identity.oidc.forEach((iss, i) => {
    if (seen.has(iss.issuer)) at(['identity', 'oidc', i, 'issuer'], `issuer ${iss.issuer} is listed twice`);
    seen.add(iss.issuer);
  });
  const fga = identity.openfga;
  if (!fga) return;
  if (!isEgressAllowed(fga.apiUrl, config.egress.allow)) {
    at(['identity', 'openfga', 'apiUrl'], `${new URL(fga.apiUrl).host} is not on egress.allow; add it there to let OpenFGA checks leave`);
  }
  for (const part of ['user', 'relation', 'object'] as const) {
    for (const name of unknownPlaceholders(fga.check[part])) {
      at(['identity', 'openfga', 'check', part], `\${${name}} is not a known value; use principal.user, principal.costCenter, principal.authMethod, request.tier, request.model or request.provider`);
    }
  }
}
