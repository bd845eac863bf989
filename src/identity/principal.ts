/**
 * Who a call is charged to and what they may do, whatever credential proved it.
 */
export interface Principal {
  /** Stable user id: budgets of scope `user` are keyed by it. */
  user: string;
  teams: string[];
  costCenter?: string;
  groups: string[];
  roles: string[];
  /** How the caller proved who they are. */
  authMethod: 'api_key' | 'jwt' | 'stdio_env' | 'anonymous';
  /** For delegated calls (RFC 8693 `act`): the actor chain, outermost (current actor) first. */
  actors?: string[];
  /** Credential label for the audit trail (key id or token issuer); never the secret itself. */
  credentialId?: string;
  /**
   * The application the credential belongs to (an application key): budgets and limits of scope
   * `application` are keyed by it; `user`, teams and cost centre are then its owner's.
   */
  app?: string;
}

/** The principal as policy expressions and events see it: plain data, no undefined fields. */
export function principalView(p: Principal): Record<string, unknown> {
  return {
    user: p.user,
    teams: p.teams,
    costCenter: p.costCenter ?? '',
    groups: p.groups,
    roles: p.roles,
    authMethod: p.authMethod,
    actors: p.actors ?? [],
    app: p.app ?? '',
  };
}

/**
 * Who owns what a caller opens (MCP sessions, A2A tasks, cached budget reads): the same
 * credential, user and actor chain. One function, so every transport draws the line alike.
 */
export function ownerKey(p: Principal): string {
  return `${p.authMethod}:${p.credentialId ?? ''}:${p.user}:${(p.actors ?? []).join('>')}`;
}
