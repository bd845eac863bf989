/**
 * The benchmark's load on the OpenAI wire: `POST /v1/chat/completions` with a pre-built body over
 * kept-alive `node:http` connections, plain or streamed (`stream_options.include_usage`), so that
 * a gateway can be set beside a plain reverse proxy and a peer gateway on the same requests.
 */
import { Agent, request } from 'node:http';

export interface ChatTarget {
  url: URL;
  agent: Agent;
  headers: Record<string, string>;
}

/** `baseUrl` ends in /v1, as the OpenAI SDK's baseURL; `headers` go with every request. */
export function chatTarget(baseUrl: string, headers: Record<string, string>, sockets: number): ChatTarget {
  return { url: new URL(`${baseUrl.replace(/\/$/, '')}/chat/completions`), agent: new Agent({ keepAlive: true, maxSockets: sockets }), headers };
}

/** The request body: the same prompt and output cap as the MCP load's `complete` call. */
export function chatBody(model: string, prompt: string, maxTokens: number, stream: boolean): string {
  const base = { model, messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens };
  return JSON.stringify(stream ? { ...base, stream: true, stream_options: { include_usage: true } } : base);
}

/**
 * One call; true when the answer was a 200 with a complete body: a JSON completion with usage, or
 * a stream that reached `data: [DONE]` after its usage chunk.
 */
export function chatCall(t: ChatTarget, body: string, stream: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const headers = { ...t.headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = request({ host: t.url.hostname, port: t.url.port, path: t.url.pathname, method: 'POST', headers, agent: t.agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve(res.statusCode === 200 && (stream ? text.includes('"usage":{') && text.includes('data: [DONE]') : text.includes('"usage":{'))));
      res.on('error', () => resolve(false));
    });
    req.on('error', () => resolve(false));
    req.end(body);
  });
}
