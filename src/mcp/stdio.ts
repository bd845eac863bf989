/**
 * MCP over stdio for desktop assistants and agent frameworks that spawn tollgate. The credential
 * comes from the environment and is verified before serving: a missing or bad one is recorded as a
 * refusal and ends the process with a clear message on stderr. Every call then hands the same
 * credential to the gateway, which authenticates it under the call's policy snapshot (an expired
 * token is refused). Nothing but the transport writes to stdout.
 */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import type { Principal } from '../identity/principal.js';
import type { Credential } from '../pipeline/context.js';
import { createMcpServer } from './server.js';

/** The stdio caller: who they are, and the credential each call presents. */
export interface StdioCaller {
  principal: Principal;
  credential: Credential;
}

/**
 * Resolves the stdio caller from TOLLGATE_API_KEY or TOLLGATE_TOKEN (a JWT from a trusted issuer,
 * verified like an HTTP bearer token). Throws AUTH_REQUIRED, AUTH_INVALID or FORBIDDEN with a
 * message naming the variable; the refusal is recorded as a decision event.
 */
export async function stdioPrincipal(gateway: Gateway, env: NodeJS.ProcessEnv): Promise<StdioCaller> {
  const key = env.TOLLGATE_API_KEY;
  const token = env.TOLLGATE_TOKEN;
  if (key && token) {
    // Refused before either is tried, so it is not clear whom to record: recorded as a credential-less refusal.
    const err = new GatewayError('AUTH_INVALID', 'Both TOLLGATE_API_KEY and TOLLGATE_TOKEN are set: set only one, so it is clear who is charged.');
    await gateway.complete({ transport: 'stdio', credential: undefined, args: { raw: undefined, rejected: err } }).catch(() => undefined);
    throw err;
  }
  if (!key && !token) {
    await gateway.authenticate(undefined, { transport: 'stdio' }).catch(() => undefined);
    throw new GatewayError('AUTH_REQUIRED', 'Neither TOLLGATE_API_KEY nor TOLLGATE_TOKEN is set: stdio mode needs the caller\'s API key or token in the environment.');
  }
  const credential: Credential = key ? { secret: key, only: 'api_key', source: 'TOLLGATE_API_KEY' } : { secret: token!, only: 'jwt', source: 'TOLLGATE_TOKEN' };
  const edge = await gateway.authenticate(credential, { transport: 'stdio' });
  const principal = key ? { ...edge.principal, authMethod: 'stdio_env' as const } : edge.principal;
  return { principal, credential: { ...credential, verified: { policy: edge.policy, result: edge } } };
}

/** Serves MCP on stdin/stdout until stdin closes. */
export async function serveStdio(gateway: Gateway, caller: StdioCaller, version: string): Promise<{ closed: Promise<void> }> {
  const server = createMcpServer({ gateway, transport: 'stdio', version, credentialFor: () => caller.credential });
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
  });
  await server.connect(transport);
  process.stdin.once('end', () => void server.close());
  return { closed };
}
