/**
 * The benchmark's load on a provider wire: the OpenAI wire (`POST /v1/chat/completions`, streamed
 * with `stream_options.include_usage`) or the Anthropic one (`POST /v1/messages`, streamed as its
 * named events), with a pre-built body over kept-alive `node:http` connections, so that a gateway
 * can be set beside a plain reverse proxy and a peer gateway on the same requests.
 */
import { Agent, request } from 'node:http';

export type WireName = 'openai' | 'anthropic';

/** What differs between the two wires, for the load and its report. */
export interface WireApi {
  name: WireName;
  /** The route under a base URL that ends in /v1. */
  path: '/chat/completions' | '/messages';
  /** Headers every call carries besides the key (the Anthropic wire's version header). */
  headers: Record<string, string>;
  body(model: string, prompt: string, maxTokens: number, stream: boolean): string;
  /** Whether an answer's text is a complete one: usage in a plain answer; in a stream, its usage and its end. */
  complete(text: string, stream: boolean): boolean;
}

export const WIRES: Record<WireName, WireApi> = {
  openai: {
    name: 'openai',
    path: '/chat/completions',
    headers: {},
    body(model, prompt, maxTokens, stream) {
      const base = { model, messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens };
      return JSON.stringify(stream ? { ...base, stream: true, stream_options: { include_usage: true } } : base);
    },
    complete: (text, stream) => text.includes('"usage":{') && (!stream || text.includes('data: [DONE]')),
  },
  anthropic: {
    name: 'anthropic',
    path: '/messages',
    headers: { 'anthropic-version': '2023-06-01' },
    body(model, prompt, maxTokens, stream) {
      const base = { model, max_tokens: maxTokens, messages: [{ role: 'user', content: prompt }] };
      return JSON.stringify(stream ? { ...base, stream: true } : base);
    },
    // A stream's output tokens come in its message_delta, before message_stop.
    complete: (text, stream) => (stream ? text.includes('"type":"message_delta"') && text.includes('"usage":{') && text.includes('event: message_stop') : text.includes('"usage":{')),
  },
};

export interface ChatTarget {
  url: URL;
  agent: Agent;
  headers: Record<string, string>;
  wire: WireApi;
}

/** `baseUrl` ends in /v1, as the OpenAI SDK's baseURL; `headers` go with every request. */
export function chatTarget(baseUrl: string, wire: WireApi, headers: Record<string, string>, sockets: number): ChatTarget {
  return { url: new URL(`${baseUrl.replace(/\/$/, '')}${wire.path}`), agent: new Agent({ keepAlive: true, maxSockets: sockets }), headers: { ...wire.headers, ...headers }, wire };
}

/**
 * One call; true when the answer was a 200 with a complete body: a JSON answer with usage, or a
 * stream that reached its end after its usage.
 */
export function chatCall(t: ChatTarget, body: string, stream: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const headers = { ...t.headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = request({ host: t.url.hostname, port: t.url.port, path: t.url.pathname, method: 'POST', headers, agent: t.agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve(res.statusCode === 200 && t.wire.complete(text, stream)));
      res.on('error', () => resolve(false));
    });
    req.on('error', () => resolve(false));
    req.end(body);
  });
}
