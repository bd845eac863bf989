/**
 * What the SDK's own transport would cost tollgate's JSON answers: one express server, two routes
 * on the same SDK Server code, a fresh server per POST as tollgate makes it; `/sdk` answers through
 * the SDK's StreamableHTTPServerTransport (stateless, `enableJsonResponse`), `/ours` through
 * jsonTransport.ts. Blocks of calls alternate between the two; CPU per call is this process's
 * (client and server together, the same client for both, so the difference is the transport's).
 *
 *   npx tsx tools/bench/jsontransport.ts [--calls 2000] [--blocks 5]
 */
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import express from 'express';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { JsonResponseTransport, acceptPost, writeAnswer } from '../../src/http/jsonTransport.js';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '2000' }, blocks: { type: 'string', default: '5' } } });
const CALLS = Number(values.calls);
const BLOCKS = Number(values.blocks);

const validator = new AjvJsonSchemaValidator();
function newServer(): Server {
  const server = new Server({ name: 'bench', version: '1' }, { capabilities: { tools: {} }, jsonSchemaValidator: validator });
  server.setRequestHandler(CallToolRequestSchema, async (req) => ({ content: [{ type: 'text', text: String(req.params.arguments?.prompt ?? '') }] }));
  return server;
}

const app = express();
app.set('etag', false);
app.use(express.json());
app.post('/sdk', async (req, res) => {
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  await newServer().connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.post('/ours', async (req, res) => {
  const checked = acceptPost(req, req.body);
  if ('answer' in checked) return writeAnswer(res, checked.answer);
  const transport = new JsonResponseTransport();
  await newServer().connect(transport);
  transport.deliver(checked.messages, req, undefined);
  writeAnswer(res, await transport.answer);
});

const server = createServer(app);
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const { port } = server.address() as AddressInfo;
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function post(path: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function block(path: string, n: number): Promise<number> {
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const status = await post(path, `{"jsonrpc":"2.0","id":${i},"method":"tools/call","params":{"name":"complete","arguments":{"prompt":"hello"}}}`);
    if (status !== 200) throw new Error(`${path}: HTTP ${status}`);
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

await block('/sdk', 500);
await block('/ours', 500);
const results: Record<string, number[]> = { '/sdk': [], '/ours': [] };
for (let b = 0; b < BLOCKS; b++) for (const path of b % 2 ? ['/ours', '/sdk'] : ['/sdk', '/ours']) results[path]!.push(await block(path, CALLS));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [path, xs] of Object.entries(results)) {
  process.stdout.write(`${path.padEnd(6)} CPU per call (client + server) µs: median ${median(xs).toFixed(0)}; blocks ${xs.map((x) => x.toFixed(0)).join(', ')}\n`);
}
agent.destroy();
server.close();
