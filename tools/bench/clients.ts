/**
 * One completion on each way into the gateway, sent as a client sends it (plain fetch, so the
 * caller can drop the connection whenever it likes): MCP over streamable HTTP with a JSON or an SSE
 * answer, the OpenAI- and Anthropic-compatible endpoints plain and streamed, A2A SendMessage and
 * SendStreamingMessage. Used by the disconnect drill and the cancellation tests.
 */
import { randomUUID } from 'node:crypto';

export type Transport = 'mcp-json' | 'mcp-sse' | 'openai' | 'openai-stream' | 'anthropic' | 'anthropic-stream' | 'a2a' | 'a2a-stream';
export const TRANSPORTS: readonly Transport[] = ['mcp-json', 'mcp-sse', 'openai', 'openai-stream', 'anthropic', 'anthropic-stream', 'a2a', 'a2a-stream'];

export interface CallSpec {
  /** The gateway's base URL, without a trailing slash. */
  base: string;
  /** The bearer credential (API key or JWT). */
  token: string;
  /** The tier the call asks for (the compatible endpoints take it as their `model`). */
  tier: string;
  prompt: string;
  maxTokens: number;
  /** An MCP session opened with `openMcpSession` (MCP transports only). */
  session?: string;
  /** Aborting it drops the connection. */
  signal?: AbortSignal;
  /** Each piece of the answer's body as it arrives. */
  onData?: (chunk: string) => void;
}

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

const MCP_VERSION = '2025-06-18';

function mcpHeaders(token: string, session?: string): Record<string, string> {
  return {
    authorization: `Bearer ${token}`,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MCP_VERSION,
    ...(session ? { 'mcp-session-id': session } : {}),
  };
}

/** Opens an MCP session (initialize, then notifications/initialized) and returns its id. */
export async function openMcpSession(base: string, token: string): Promise<string> {
  const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: MCP_VERSION, capabilities: {}, clientInfo: { name: 'tollgate-clients', version: '1' } } };
  const res = await fetch(`${base}/mcp`, { method: 'POST', headers: mcpHeaders(token), body: JSON.stringify(init) });
  await res.text();
  const session = res.headers.get('mcp-session-id');
  if (res.status !== 200 || !session) throw new Error(`initialize answered ${res.status}`);
  const done = await fetch(`${base}/mcp`, { method: 'POST', headers: mcpHeaders(token, session), body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
  await done.text();
  return session;
}

/** The request a transport sends for one completion. */
export function requestFor(kind: Transport, spec: CallSpec): { url: string; headers: Record<string, string>; body: unknown } {
  const auth = { authorization: `Bearer ${spec.token}`, 'content-type': 'application/json' };
  const messages = [{ role: 'user', content: spec.prompt }];
  switch (kind) {
    case 'mcp-json':
    case 'mcp-sse': {
      if (!spec.session) throw new Error('an MCP call needs a session');
      const _meta = kind === 'mcp-sse' ? { progressToken: randomUUID() } : undefined;
      const params = { name: 'complete', arguments: { prompt: spec.prompt, tier: spec.tier, max_tokens: spec.maxTokens }, ...(_meta ? { _meta } : {}) };
      return { url: `${spec.base}/mcp`, headers: mcpHeaders(spec.token, spec.session), body: { jsonrpc: '2.0', id: randomUUID(), method: 'tools/call', params } };
    }
    case 'openai':
    case 'openai-stream':
      return { url: `${spec.base}/v1/chat/completions`, headers: auth, body: { model: spec.tier, messages, max_tokens: spec.maxTokens, stream: kind === 'openai-stream' } };
    case 'anthropic':
    case 'anthropic-stream':
      return { url: `${spec.base}/v1/messages`, headers: auth, body: { model: spec.tier, messages, max_tokens: spec.maxTokens, stream: kind === 'anthropic-stream' } };
    case 'a2a':
    case 'a2a-stream': {
      const message = { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: spec.prompt }], metadata: { tier: spec.tier, max_tokens: spec.maxTokens } };
      const method = kind === 'a2a' ? 'SendMessage' : 'SendStreamingMessage';
      return { url: `${spec.base}/a2a`, headers: { ...auth, 'a2a-version': '1.0' }, body: { jsonrpc: '2.0', id: randomUUID(), method, params: { message } } };
    }
  }
}

/** Sends one completion and reads its whole answer; rejects when `spec.signal` aborts first. */
export async function send(kind: Transport, spec: CallSpec): Promise<Answer> {
  const { url, headers, body } = requestFor(kind, spec);
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: spec.signal });
  let text = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body ?? []) {
    const piece = decoder.decode(chunk as Uint8Array, { stream: true });
    text += piece;
    spec.onData?.(piece);
  }
  return { status: res.status, headers: res.headers, text };
}

/** How many pieces of answer text a streamed answer's body holds so far. */
export function deltasIn(kind: Transport, text: string): number {
  const marker: Partial<Record<Transport, RegExp>> = {
    'mcp-sse': /"notifications\/progress"/g,
    'openai-stream': /"delta":\{"content":"[^"]/g,
    'anthropic-stream': /"type":"text_delta"/g,
    'a2a-stream': /"artifactUpdate"/g,
  };
  const re = marker[kind];
  return re ? (text.match(re)?.length ?? 0) : 0;
}
