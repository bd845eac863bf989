/**
 * The Node floor on a provider wire: the least work a gateway written for Node can do and still
 * enforce anything. For each POST .../chat/completions (or, with --anthropic, .../messages) it
 * reads the caller's body and parses it (a policy has to see the request), writes it again and
 * sends it to the upstream with undici over kept-alive connections, and reads the usage from the
 * answer (a ledger has to charge it): a plain answer is parsed whole, a streamed one is passed on
 * chunk by chunk and only the events that carry usage are parsed (OpenAI's last chunk; Anthropic's
 * message_start and message_delta). No authentication, policy, ledger, journal, events or metrics, and no framework: node:http
 * and undici, which tollgate also stands on. What tollgate spends over this is its own; what this
 * spends over nginx is Node's.
 *
 *   node --import tsx tools/bench/nodefloor.ts <base-url ending in /v1> [--express] [--anthropic]
 *
 * With --express the same handler is an express route behind `express.json()`, served as tollgate
 * serves its app (`expressServer`): the difference between the two floors is what express and its
 * body parser cost a call.
 *
 * Prints `serving at <base-url>` (ending in /v1) once it listens on a free loopback port.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type express from 'express';
import { Agent, request } from 'undici';

const upstream = process.argv[2]?.replace(/\/+$/, '');
if (!upstream) throw new Error('usage: nodefloor.ts <base-url ending in /v1> [--express] [--anthropic]');
const anthropic = process.argv.includes('--anthropic');
const route = anthropic ? '/messages' : '/chat/completions';
const target = `${upstream}${route}`;
const dispatcher = new Agent({ keepAliveTimeout: 30_000 });

/** Usage the answers carried, so that reading it is not optimised away. */
let tokens = 0;

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

function fail(res: ServerResponse, status: number, message: string): void {
  const text = JSON.stringify({ error: { message, type: 'invalid_request_error' } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

interface Usage {
  total_tokens?: number;
  input_tokens?: number;
  output_tokens?: number;
}

function count(usage: Usage | undefined): void {
  tokens += usage?.total_tokens ?? (usage?.input_tokens ?? 0) + (usage?.output_tokens ?? 0);
}

/** The usage of each SSE event in `text` that carries it (Anthropic's message_start holds it one level down). */
function usageIn(text: string): void {
  for (let at = text.indexOf('"usage":{'); at !== -1; at = text.indexOf('"usage":{', at + 1)) {
    const start = text.lastIndexOf('data: ', at);
    const end = text.indexOf('\n', at);
    if (start === -1 || end === -1) return;
    const event = JSON.parse(text.slice(start + 6, end)) as { usage?: Usage; message?: { usage?: Usage } };
    count(event.usage ?? event.message?.usage);
    at = end;
  }
}

async function serve(req: IncomingMessage, res: ServerResponse, parsed?: unknown): Promise<void> {
  if (req.method !== 'POST' || !req.url?.endsWith(route)) return fail(res, 404, 'not found');
  const params = (parsed ?? JSON.parse((await readBody(req)).toString('utf8'))) as { stream?: boolean };
  const ac = new AbortController();
  res.once('close', () => res.writableFinished || ac.abort());
  const answer = await request(target, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: req.headers.authorization ?? '', ...(anthropic ? { 'anthropic-version': String(req.headers['anthropic-version'] ?? '') } : {}) },
    body: JSON.stringify(params),
    dispatcher,
    signal: ac.signal,
  });
  if (!params.stream || answer.statusCode !== 200) {
    const text = await answer.body.text();
    count((JSON.parse(text) as { usage?: Usage }).usage);
    res.writeHead(answer.statusCode, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  for await (const chunk of answer.body) {
    usageIn((chunk as Buffer).toString('utf8'));
    res.write(chunk);
  }
  res.end();
}

function handle(req: IncomingMessage, res: ServerResponse, parsed?: unknown): void {
  serve(req, res, parsed).catch((err: unknown) => {
    if (!res.headersSent) fail(res, 502, err instanceof Error ? err.message : String(err));
    else res.destroy();
  });
}

// The plain floor loads neither express nor tollgate's modules, which would only grow its heap.
let server: ReturnType<typeof createServer>;
if (process.argv.includes('--express')) {
  const [{ default: expressApp }, { expressServer }] = await Promise.all([import('express'), import('../../src/http/app.js')]);
  const app: express.Express = expressApp();
  app.post(`/v1${route}`, expressApp.json({ limit: '10mb' }), (req, res) => handle(req, res, req.body));
  // As tollgate serves its app: requests and responses made on express's prototypes (src/http/app.ts).
  server = expressServer(app);
} else {
  server = createServer((req, res) => handle(req, res));
}
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  process.stderr.write(`serving at http://127.0.0.1:${address.port}/v1\n`);
});
process.once('SIGTERM', () => {
  process.stderr.write(`usage read: ${tokens} tokens\n`);
  server.close();
  server.closeAllConnections();
  void dispatcher.close().finally(() => process.exit(0));
});
