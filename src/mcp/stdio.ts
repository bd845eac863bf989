/**
 * MCP over stdio for desktop assistants and agent frameworks that spawn tollgate. The credential
 * comes from the environment and is verified before serving: a missing or bad one is recorded as a
 * refusal and ends the process with a clear message on stderr. Every call then hands the same
 * credential to the gateway, which authenticates it under the call's policy snapshot (an expired
 * token is refused, a revoked issued key too). Nothing but the transport writes to stdout.
 */
import { PassThrough } from 'node:stream';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { isJSONRPCErrorResponse, isJSONRPCNotification, isJSONRPCRequest, isJSONRPCResultResponse, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import type { Principal } from '../identity/principal.js';
import type { Credential } from '../pipeline/context.js';
import { createMcpServer } from './server.js';
import { asMessage, messageLines } from './stdioLines.js';

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
    // Refused before either is tried, so it is not clear whom to record: recorded with no caller,
    // and with the refusal the caller is told (authenticating nothing would record AUTH_REQUIRED).
    const err = new GatewayError('AUTH_INVALID', 'Both TOLLGATE_API_KEY and TOLLGATE_TOKEN are set: set only one, so it is clear who is charged.');
    await gateway.refuse(err, { transport: 'stdio' });
    throw err;
  }
  if (!key && !token) {
    await gateway.authenticate(undefined, { transport: 'stdio' }).catch(() => undefined);
    throw new GatewayError('AUTH_REQUIRED', 'Neither TOLLGATE_API_KEY nor TOLLGATE_TOKEN is set: stdio mode needs the caller\'s API key or token in the environment.');
  }
  const credential: Credential = key ? { secret: key, only: 'api_key', source: 'TOLLGATE_API_KEY' } : { secret: token!, only: 'jwt', source: 'TOLLGATE_TOKEN' };
  const edge = await gateway.authenticate(credential, { transport: 'stdio' });
  const principal = key ? { ...edge.principal, authMethod: 'stdio_env' as const } : edge.principal;
  // The check at start stands for the session unless a revocation can end the key (one issued at
  // run time): such a key is looked up again on each call, through the key store's cache, so that
  // a revocation reaches this session within the bound it reaches every HTTP caller.
  if (edge.revocable) return { principal, credential };
  return { principal, credential: { ...credential, verified: { policy: edge.policy, result: edge } } };
}

/** A stdio server: `closed` resolves when stdin closes; `stop` ends it after the requests it took. */
export interface StdioServing {
  closed: Promise<void>;
  /** Requests read and not yet answered. */
  inFlight(): number;
  /** Reads no more requests, waits until those already read are answered (or stdin closes), then closes. */
  stop(): Promise<void>;
}

/** Serves MCP on stdin/stdout until stdin closes or `stop` is called. */
export async function serveStdio(gateway: Gateway, caller: StdioCaller, version: string): Promise<StdioServing> {
  const server = createMcpServer({ gateway, transport: 'stdio', version, credentialFor: () => caller.credential });
  // The transport reads only the lines that are messages; every other line is answered with its
  // JSON-RPC error here, through the transport's own writer (stdioLines.ts), and recorded as the
  // caller's INVALID_REQUEST, as the HTTP edge records a body it cannot read.
  const lines = new PassThrough();
  const transport = new StdioServerTransport(lines, process.stdout);
  const read = messageLines((error) => {
    void transport.send(asMessage(error)).catch(() => undefined);
    void gateway.refuse(new GatewayError('INVALID_REQUEST', error.error.message), { transport: 'stdio', credential: caller.credential });
  });
  const fromStdin = (chunk: Buffer) => {
    const bytes = read(chunk);
    if (bytes.length > 0) lines.write(bytes);
  };
  const stdinFailed = (err: Error) => transport.onerror?.(err);
  // Requests count from the moment they are read until their answer is written, so that `stop`
  // can wait for them. Once the transport is closed no answer can be written: none is waited for.
  const pending = new Set<string | number>();
  let allAnswered: (() => void) | undefined;
  const answered = (id: unknown) => {
    if ((typeof id === 'string' || typeof id === 'number') && pending.delete(id) && pending.size === 0) allAnswered?.();
  };
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => {
      // As the SDK transport does with the stdin it reads: let go of it, so that the process can exit.
      process.stdin.off('data', fromStdin).off('error', stdinFailed).pause();
      pending.clear();
      allAnswered?.();
      resolve();
    };
  });
  await server.connect(transport);
  const receive = transport.onmessage;
  transport.onmessage = (message: JSONRPCMessage) => {
    if (isJSONRPCRequest(message)) pending.add(message.id);
    receive?.(message);
    // A cancelled request gets no answer (MCP): it is no longer waited for.
    if (isJSONRPCNotification(message) && message.method === 'notifications/cancelled') answered(message.params?.requestId);
  };
  const write = transport.send.bind(transport);
  transport.send = async (message: JSONRPCMessage) => {
    await write(message);
    if (isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message)) answered(message.id);
  };
  process.stdin.on('data', fromStdin).on('error', stdinFailed);
  process.stdin.once('end', () => void server.close());
  return {
    closed,
    inFlight: () => pending.size,
    async stop() {
      process.stdin.pause();
      if (pending.size > 0) await new Promise<void>((resolve) => (allAnswered = resolve));
      await server.close();
    },
  };
}
