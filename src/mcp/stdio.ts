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

/**
 * Resolves the stdio caller from TOLLGATE_API_KEY or TOLLGATE_TOKEN (a JWT from a trusted issuer,
 * verified like an HTTP bearer token). Throws AUTH_REQUIRED, AUTH_INVALID or FORBIDDEN with a
 * message naming the variable. A token is checked once, at start: the process serves under it
 * until it exits, so start it with a token that outlives the session (or restart it).
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
    const { principal } = await gateway.authenticate((key ?? token)!, { only: key ? 'api_key' : 'jwt' });
    return key ? { ...principal, authMethod: 'stdio_env' } : principal;
  } catch (err) {
    if (err instanceof GatewayError) throw new GatewayError(err.code, `${name} was rejected: ${err.message}`, { ...err.details }, { cause: err });
    throw err;
  }
}

/** Serves MCP on stdin/stdout until stdin closes. */
export async function serveStdio(gateway: Gateway, principal: Principal, version: string): Promise<{ closed: Promise<void> }> {
  const server = createMcpServer({ gateway, transport: 'stdio', version, principalFor: () => principal });
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
  });
  await server.connect(transport);
  process.stdin.once('end', () => void server.close());
  return { closed };
}
