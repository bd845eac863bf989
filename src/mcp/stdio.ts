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

/** Resolves the stdio caller from TOLLGATE_API_KEY; throws AUTH_REQUIRED or AUTH_INVALID. */
export function stdioPrincipal(gateway: Gateway, env: NodeJS.ProcessEnv): Principal {
  const key = env.TOLLGATE_API_KEY;
  if (!key) throw new GatewayError('AUTH_REQUIRED', 'TOLLGATE_API_KEY is not set: stdio mode needs the caller\'s API key in the environment.');
  return { ...gateway.authenticateApiKey(key), authMethod: 'stdio_env' };
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
