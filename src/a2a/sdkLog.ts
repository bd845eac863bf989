/**
 * What the A2A SDK prints, in the gateway's log. The SDK's server reports with console.error and
 * console.warn, error and stack included, and it does so for requests it refuses as the caller's
 * fault too (no A2A-Version header, params that are not A2A, an unknown task): one stack trace on
 * stderr per such request, which any caller could repeat to fill the operator's log.
 *
 * While the SDK serves a request to the A2A endpoint (`withSdkLog`, an AsyncLocalStorage scope),
 * those two console methods write to the gateway's logger instead, one record per call: a refusal
 * (an error the SDK answers with a JSON-RPC code other than internal error, its own split between
 * 200 and 500) only at debug level and without its stack, since the decision event records it;
 * anything else, a real fault, at error level with the error and its stack (console.warn at warn
 * level). Outside such a scope, console is left as it was. (tollgate's own code logs through pino,
 * never console, so within a scope only the SDK's output is taken.) The scope is told of a fault it
 * logged, so the 500 the SDK then answers is recorded without logging the fault a second time.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { format } from 'node:util';
import type { Logger } from 'pino';

/** JSON-RPC's internal error code: the SDK answers a fault of its own (or of ours) with it, in a 500. */
const JSONRPC_INTERNAL_ERROR = -32603;

/** The request the SDK is serving: where its output goes. */
export interface SdkLogScope {
  logger: Logger;
  /** Called once a fault is logged at error level, with its stack. */
  faultLogged?: () => void;
}

/** The JSON-RPC error the SDK answers for an error (JsonRpcTransportHandler.mapToJSONRPCError). */
export type RpcErrorOf = (error: unknown) => { code: number; message: string };

const scopes = new AsyncLocalStorage<SdkLogScope>();
let installed = false;

/**
 * Routes the console output of code run in a scope to that scope's logger. Installed once per
 * process, when the SDK's server is first loaded; `rpcErrorOf` is the SDK's own error mapping.
 */
export function installSdkLog(rpcErrorOf: RpcErrorOf): void {
  if (installed) return;
  installed = true;
  const { error, warn } = console;
  console.error = (...args: unknown[]) => {
    const scope = scopes.getStore();
    if (scope) logSdkOutput(scope, 'error', args, rpcErrorOf);
    else error.apply(console, args);
  };
  console.warn = (...args: unknown[]) => {
    const scope = scopes.getStore();
    if (scope) logSdkOutput(scope, 'warn', args, rpcErrorOf);
    else warn.apply(console, args);
  };
}

/** Runs `fn` (the SDK's handler for one request) with its console output going to `scope`. */
export function withSdkLog<T>(scope: SdkLogScope, fn: () => T): T {
  return scopes.run(scope, fn);
}

/** One log record for one console call of the SDK: the text arguments are its message, the first error its `err`. */
export function logSdkOutput(scope: SdkLogScope, level: 'error' | 'warn', args: unknown[], rpcErrorOf: RpcErrorOf): void {
  const err = args.find((a): a is Error => a instanceof Error);
  const sdk = format(...args.filter((a) => a !== err)).trim();
  if (err) {
    const rpc = rpcErrorOf(err);
    if (rpc.code !== JSONRPC_INTERNAL_ERROR) {
      scope.logger.debug({ event: 'a2a_refused', rpcCode: rpc.code, error: err.name, reason: err.message, sdk }, 'A2A request refused by the SDK');
      return;
    }
  }
  scope.logger[level]({ event: 'a2a_sdk', ...(err ? { err } : {}) }, sdk || err?.message || 'A2A SDK');
  if (level === 'error') scope.faultLogged?.();
}
