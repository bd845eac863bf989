/**
 * A light load generator for the benchmark: MCP over streamable HTTP spoken with node:http and
 * pre-built request bodies, so that the generator spends as little of the machine's CPU as it can
 * and the servers get the rest. Each virtual client opens its own MCP session (initialize, then
 * notifications/initialized) and calls tools/call back to back on a kept-alive connection.
 */
import { Agent, request } from 'node:http';
import { procStat } from '../../test/helpers/process.js';
import { processTree } from './common.js';

export interface RawClient {
  sessionId: string;
  nextId: number;
}

export interface RawTarget {
  url: URL;
  agent: Agent;
  key: string;
}

export function rawTarget(url: string, key: string, sockets: number): RawTarget {
  return { url: new URL(url), agent: new Agent({ keepAlive: true, maxSockets: sockets }), key };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function post(t: RawTarget, body: string, sessionId?: string, method = 'POST'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      authorization: `Bearer ${t.key}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
    };
    if (sessionId) headers['mcp-session-id'] = sessionId;
    if (body) headers['content-length'] = String(Buffer.byteLength(body));
    const req = request({ host: t.url.hostname, port: t.url.port, path: t.url.pathname, method, headers, agent: t.agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The JSON-RPC message in a reply that is either application/json or one SSE event. */
function message(r: Reply): { result?: { isError?: boolean }; error?: unknown } {
  const ct = String(r.headers['content-type'] ?? '');
  if (ct.startsWith('text/event-stream')) {
    const line = r.body.split('\n').filter((l) => l.startsWith('data:')).pop();
    return line ? JSON.parse(line.slice(5)) : {};
  }
  return r.body ? JSON.parse(r.body) : {};
}

export async function openRawClient(t: RawTarget): Promise<RawClient> {
  const init = await post(
    t,
    JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench-raw', version: '1' } } }),
  );
  const sessionId = init.headers['mcp-session-id'];
  if (init.status !== 200 || typeof sessionId !== 'string') throw new Error(`initialize failed: HTTP ${init.status} ${init.body.slice(0, 300)}`);
  const note = await post(t, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), sessionId);
  if (note.status !== 202) throw new Error(`notifications/initialized failed: HTTP ${note.status}`);
  return { sessionId, nextId: 1 };
}

export async function closeRawClient(t: RawTarget, c: RawClient): Promise<void> {
  await post(t, '', c.sessionId, 'DELETE').catch(() => undefined);
}

/** One tools/call; resolves true when the tool answered without isError. */
export async function rawCall(t: RawTarget, c: RawClient, name: string, args: Record<string, unknown>): Promise<boolean> {
  const body = `{"jsonrpc":"2.0","id":${c.nextId++},"method":"tools/call","params":{"name":${JSON.stringify(name)},"arguments":${JSON.stringify(args)}}}`;
  const r = await post(t, body, c.sessionId);
  if (r.status !== 200) return false;
  const m = message(r);
  return !m.error && m.result !== undefined && m.result.isError !== true;
}

/**
 * CPU time (user + system) a process and its descendants have used so far, in ms (Linux /proc,
 * clock ticks of 10 ms).
 */
export function cpuMs(pid: number): number {
  let ms = 0;
  for (const p of processTree(pid)) {
    const fields = procStat(p);
    ms += (Number(fields[11]) + Number(fields[12])) * 10;
  }
  return ms;
}

/** What a closed loop saw in its measured window. */
export interface LoopWindow {
  /** Latencies (ms) of the calls answered in the window, sorted. */
  lat: number[];
  errors: number;
  /** Seconds the window lasted. */
  elapsed: number;
  /** CPU ms of each of `pids` (with their children) over the window. */
  cpu: number[];
  /** CPU ms of this load generator over the window. */
  loadCpu: number;
}

/**
 * `n` clients calling back to back (client `i` runs `call(i)`, which says whether the call was
 * answered); after `warmupS` seconds the next `seconds` are measured: latencies, errors, and the CPU
 * of `pids` and of this process. Every loop has ended when it returns.
 */
export async function closedLoop(n: number, call: (i: number) => Promise<boolean>, warmupS: number, seconds: number, pids: number[]): Promise<LoopWindow> {
  const lat: number[] = [];
  let errors = 0;
  let measuring = false;
  let stop = false;
  const loop = async (i: number) => {
    while (!stop) {
      const t0 = performance.now();
      const ok = await call(i).catch(() => false);
      const ms = performance.now() - t0;
      if (!measuring) continue;
      if (ok) lat.push(ms);
      else errors++;
    }
  };
  const running = Array.from({ length: n }, (_, i) => loop(i));
  await new Promise((r) => setTimeout(r, warmupS * 1000));
  const cpu0 = pids.map(cpuMs);
  const self0 = process.cpuUsage();
  measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = pids.map((p, i) => cpuMs(p) - cpu0[i]!);
  const self = process.cpuUsage(self0);
  stop = true;
  await Promise.all(running);
  lat.sort((a, b) => a - b);
  return { lat, errors, elapsed, cpu, loadCpu: (self.user + self.system) / 1000 };
}
