/**
 * OpenFGA check templates: the \${...} placeholders a policy's `identity.openfga.check` may use and
 * how a call fills them. Apart from the client (openfga.ts) so that checking a policy does not
 * load the OpenFGA SDK.
 */
import { GatewayError } from '../errors.js';
import type { Principal } from './principal.js';

/** What a template may name. */
export interface FgaVars {
  principal: Principal;
  request: { tier: string; model?: string; provider?: string };
}

const VARIABLES = ['principal.user', 'principal.costCenter', 'principal.authMethod', 'request.tier', 'request.model', 'request.provider'] as const;
const PLACEHOLDER = /\$\{([^}]*)\}/g;

/** Placeholders in `template` that no call can fill; the loader reports them. */
export function unknownPlaceholders(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1]!.trim()).filter((v) => !(VARIABLES as readonly string[]).includes(v));
}

function valueOf(name: string, vars: FgaVars): string | undefined {
  switch (name) {
    case 'principal.user':
      return vars.principal.user;
    case 'principal.costCenter':
      return vars.principal.costCenter;
    case 'principal.authMethod':
      return vars.principal.authMethod;
    case 'request.tier':
      return vars.request.tier;
    case 'request.model':
      return vars.request.model;
    case 'request.provider':
      return vars.request.provider;
    default:
      return undefined;
  }
}

/**
 * Fills a template. A value that is empty or could change the tuple's meaning (whitespace, or `#`
 * which would turn a user into a userset) is refused rather than sent.
 */
export function renderTemplate(template: string, vars: FgaVars): string {
  return template.replace(PLACEHOLDER, (_m, raw: string) => {
    const name = raw.trim();
    const value = valueOf(name, vars);
    if (!value || /[\s#]/.test(value)) {
      throw new GatewayError('FORBIDDEN', `The OpenFGA check cannot be formed: ${name} is ${value ? `"${value}", which it cannot contain` : 'empty'}.`);
    }
    return value;
  });
}
