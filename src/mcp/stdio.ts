/**
 * MCP over stdio for desktop assistants and agent frameworks that spawn tollgate. The credential
 * comes from the environment and is verified before serving: a missing or bad one ends the
 * process with a clear message on stderr. Nothing but the transport writes to stdout.
 */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
import type { Principal } from '../identity/principal.js';
import { createMcpServer } from './server.js';

/** When the token behind a stdio principal expires, in seconds since the epoch. */
const tokenExpiry = new WeakMap<Principal, number>();

/**
 * Resolves the stdio caller from TOLLGATE_API_KEY or TOLLGATE_TOKEN (a JWT from a trusted issuer,
 * verified like an HTTP bearer token). Throws AUTH_REQUIRED, AUTH_INVALID or FORBIDDEN with a
 * message naming the variable. A token's expiry is remembered: once it passes, calls are refused
 * with AUTH_INVALID until tollgate is restarted with a fresh token.
 */
export async function stdioPrincipal(gateway: Gateway, env: NodeJS.ProcessEnv): Promise<Principal> {
  const key = env.TOLLGATE_API_KEY;
  const token = env.TOLLGATE_TOKEN;
  if (key && token) throw new GatewayError('AUTH_INVALID', 'Both TOLLGATE_API_KEY and TOLLGATE_TOKEN are set: set only one, so it is clear who is charged.');
  if (!key && !token) {
    throw new GatewayError('AUTH_REQUIRED', 'Neither TOLLGATE_API_KEY nor TOLLGATE_TOKEN is set: stdio mode needs the caller\'s API key or token in the environment.');
  }
  const name = key ? 'TOLLGATE_API_KEY' : 'TOLLGATE_TOKEN';
  try {
    const { principal, expiresAt } = await gateway.authenticate((key ?? token)!, { only: key ? 'api_key' : 'jwt' });
    if (key) return { ...principal, authMethod: 'stdio_env' };
    if (expiresAt !== undefined) tokenExpiry.set(principal, expiresAt);
    return principal;
  } catch (err) {
    if (err instanceof GatewayError) throw new GatewayError(err.code, `${name} was rejected: ${err.message}`, { ...err.details }, { cause: err });
    throw err;
  }
}

/** Serves MCP on stdin/stdout until stdin closes. */
export async function serveStdio(gateway: Gateway, principal: Principal, version: string): Promise<{ closed: Promise<void> }> {
  const expiresAt = tokenExpiry.get(principal);
  const principalFor = () => {
    if (expiresAt !== undefined && Date.now() / 1000 >= expiresAt) {
      throw new GatewayError('AUTH_INVALID', 'TOLLGATE_TOKEN has expired; restart tollgate with a fresh token.');
    }
    return principal;
  };
  const server = createMcpServer({ gateway, transport: 'stdio', version, principalFor });
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
  });
  await server.connect(transport);
  process.stdin.once('end', () => void server.close());
  return { closed };
}
