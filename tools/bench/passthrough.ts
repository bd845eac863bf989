/**
 * The baseline for the benchmark: a bare MCP server with the same `complete` tool and the same
 * provider adapter as tollgate, but no authentication, policy, ledger or metering. The difference
 * between the two is what enforcement costs.
 *
 *   node --import tsx tools/bench/passthrough.ts <openai-base-url> [--light]
 *
 * By default it is built as the SDK documents: express, and a StreamableHTTPServerTransport per
 * session. With --light it uses tollgate's own HTTP plumbing instead (requests born with express's
 * prototypes, JSON answers through jsonTransport.ts, a fresh Server per request), so that the
 * difference to tollgate is the enforcement alone.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import express from 'express';
import { expressServer } from '../../src/http/app.js';
import { JsonResponseTransport, acceptPost, writeAnswer } from '../../src/http/jsonTransport.js';
import { createOpenAIProvider } from '../../src/providers/openai.js';

const baseUrl = process.argv[2];
if (!baseUrl) throw new Error('usage: passthrough.ts <openai-base-url>');
const provider = createOpenAIProvider('openai', { kind: 'openai', apiKey: 'bench', baseUrl, timeoutMs: 30_000, maxRetries: 0 }, { egressAllow: ['127.0.0.1'] });

const light = process.argv.includes('--light');
// The light variant makes a Server per request, so it shares one validator as tollgate does.
const validator = light ? new AjvJsonSchemaValidator() : undefined;

function newServer(): Server {
  const server = new Server({ name: 'passthrough', version: '1' }, { capabilities: { tools: {} }, ...(validator ? { jsonSchemaValidator: validator } : {}) });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: [{ name: 'complete', description: 'complete', inputSchema: { type: 'object', properties: { prompt: { type: 'string' } } } }],
  }));
  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const args = (req.params.arguments ?? {}) as { prompt?: string; max_tokens?: number; model?: string };
    const result = await provider.complete({
      model: 'gpt-bench',
      messages: [{ role: 'user', content: String(args.prompt ?? '') }],
      maxTokens: args.max_tokens ?? 64,
      signal: extra.signal,
    });
    return { content: [{ type: 'text', text: result.text }], structuredContent: { usage: result.usage, model: result.model } };
  });
  return server;
}

const sessions = new Map<string, StreamableHTTPServerTransport>();
const app = express();
app.use(express.json({ limit: '1mb' }));
if (light) {
  app.post('/mcp', async (req, res) => {
    // An initialize gets a session id that nothing checks afterwards.
    if (req.header('mcp-session-id') === undefined) res.setHeader('mcp-session-id', randomUUID());
    const checked = acceptPost(req, req.body);
    const answer = 'answer' in checked ? checked.answer : await (async () => {
      const t = new JsonResponseTransport();
      await newServer().connect(t);
      t.deliver(checked.messages, req, undefined);
      return t.answer;
    })();
    writeAnswer(res, answer);
  });
}
app.post('/mcp', async (req, res) => {
  const sid = req.header('mcp-session-id');
  let transport = sid ? sessions.get(sid) : undefined;
  if (!transport) {
    // JSON answers, as tollgate gives when no progress token is sent: the SDK's cheapest mode.
    const t = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), enableJsonResponse: true, onsessioninitialized: (id) => void sessions.set(id, t) });
    t.onclose = () => {
      if (t.sessionId) sessions.delete(t.sessionId);
    };
    await newServer().connect(t);
    transport = t;
  }
  await transport.handleRequest(req, res, req.body);
});
app.delete('/mcp', async (req, res) => {
  const t = sessions.get(req.header('mcp-session-id') ?? '');
  if (t) await t.handleRequest(req, res);
  else res.status(404).end();
});
const listener = (light ? expressServer(app) : createServer(app)).listen(0, '127.0.0.1', () => {
  const addr = listener.address() as { port: number };
  process.stderr.write(`passthrough serving MCP at http://127.0.0.1:${addr.port}/mcp\n`);
});
// Exit on SIGTERM (rather than be killed) so that --cpu-prof can write its profile.
process.once('SIGTERM', () => process.exit(0));
