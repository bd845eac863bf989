/**
 * The lines of MCP stdio input that are JSON-RPC messages, and the JSON-RPC error for each one that
 * is not. The SDK's StdioServerTransport drops a line it cannot read (it calls `onerror`), so a
 * client that sent a malformed request waits for its answer forever; JSON-RPC 2.0 answers it:
 * -32700 for text that is not JSON, -32600 for JSON that is not a message, under the request's id
 * when it can be read and null when not. Only lines the SDK would accept reach its transport.
 */
import { JSONRPCMessageSchema, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

/** The SDK transport's limit on an unfinished line (STDIO_DEFAULT_MAX_BUFFER_SIZE). */
const MAX_PENDING_BYTES = 10 * 1024 * 1024;

/** A JSON-RPC error response; `id` is null when the request's id could not be read. */
export interface LineError {
  jsonrpc: '2.0';
  id: string | number | null;
  error: { code: number; message: string };
}

const lineError = (id: string | number | null, code: number, message: string): LineError => ({ jsonrpc: '2.0', id, error: { code, message } });

/**
 * What a complete line is: a message (for the transport to read), a line to drop unanswered (blank,
 * or a malformed response: responses are never answered), or else the error to answer it with.
 */
export function readLine(line: string): 'message' | 'ignored' | LineError {
  if (!line.trim()) return 'ignored';
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return lineError(null, -32700, 'Parse error: the line is not valid JSON.');
  }
  if (JSONRPCMessageSchema.safeParse(value).success) return 'message';
  if (Array.isArray(value)) return lineError(null, -32600, 'Invalid Request: send one message per line; JSON-RPC batches are not supported.');
  const message = value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  if (message && !('method' in message) && ('result' in message || 'error' in message)) return 'ignored';
  const id = message?.id;
  const readable = typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id));
  return lineError(readable ? (id as string | number) : null, -32600, 'Invalid Request: not a JSON-RPC 2.0 message.');
}

/**
 * Splits stdin chunks into lines. The function it returns takes a chunk and returns the bytes the
 * transport should read (the whole lines that are messages, each with its newline); it hands
 * `answer` the error for every other line. An unfinished line longer than the transport's limit is
 * passed on as it is, for the transport to refuse as it always has.
 */
export function messageLines(answer: (error: LineError) => void): (chunk: Buffer) => Buffer {
  // The start of an unfinished line, kept as chunks and joined once its newline arrives.
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  return (chunk) => {
    const keep: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      const bytes = pending.length ? Buffer.concat([...pending, chunk.subarray(start, nl + 1)]) : chunk.subarray(start, nl + 1);
      pending = [];
      pendingBytes = 0;
      const line = readLine(bytes.toString('utf8', 0, bytes.length - 1).replace(/\r$/, ''));
      if (line === 'message') keep.push(bytes);
      else if (line !== 'ignored') answer(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      if (pendingBytes > MAX_PENDING_BYTES) {
        keep.push(...pending);
        pending = [];
        pendingBytes = 0;
      }
    }
    return keep.length === 1 ? keep[0]! : Buffer.concat(keep);
  };
}

/** The error as the transport's `send` takes it: JSON-RPC's null id is outside the SDK's message type. */
export const asMessage = (error: LineError): JSONRPCMessage => error as unknown as JSONRPCMessage;
