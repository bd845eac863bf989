/**
 * MCP over stdio against JSON-RPC 2.0 (section 5: every request gets a response, -32700 for text
 * that is not JSON, -32600 for JSON that is not a request, the id null when it cannot be read) and
 * the MCP stdio transport (one message per line, nothing but messages on stdout). Raw lines, as a
 * protocol test suite writes them: the official client never sends a malformed one.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };
const INITIALIZED = { jsonrpc: '2.0', method: 'notifications/initialized' };

interface Reply {
  jsonrpc?: unknown;
  id?: unknown;
  result?: unknown;
  error?: { code: number; message: string };
}

/** One session of raw lines; each test reads the answers to its own lines (their ids do not collide). */
const LINES: (string | object)[] = [
  INIT,
  INITIALIZED,
  '{"jsonrpc": "2.0", "id": 2, "method": ',
  { jsonrpc: '2.0', id: 3, method: 'ping' },
  { id: 99, method: 'tools/list' },
  { jsonrpc: '2.0', id: 'x', method: 42 },
  [{ jsonrpc: '2.0', id: 5, method: 'ping' }, { jsonrpc: '2.0', id: 6, method: 'ping' }],
  '',
  '   ',
  { jsonrpc: '2.0', id: 7, result: 'not an object' },
  { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { name: 'complete', arguments: { prompt: 'hi', max_tokens: 8 }, _meta: { progressToken: 't' } } },
];

describe('MCP stdio framing and JSON-RPC errors', () => {
  let dir: string;
  let out: string[];
  let replies: Reply[];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-conformance-'));
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, basicPolicy());
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policy], {
      env: { PATH: process.env.PATH ?? '', TOLLGATE_API_KEY: KEYS.alice, TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_DATA_DIR: join(dir, 'data'), TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl') },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString('utf8')));
    // Closing stdin ends the session once every request read is answered.
    child.stdin.end(LINES.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
    await new Promise((resolve, reject) => child.once('exit', resolve).once('error', reject));
    out = text.split('\n').filter(Boolean);
    replies = out.map((l) => JSON.parse(l) as Reply);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const errorsWithNullId = () => replies.filter((m) => m.error && m.id === null).map((m) => m.error);

  it('answers a line that is not JSON with -32700 and id null, and goes on serving', () => {
    expect(errorsWithNullId()).toContainEqual({ code: -32700, message: 'Parse error: the line is not valid JSON.' });
    expect(replies.find((m) => m.id === 3)).toEqual({ jsonrpc: '2.0', id: 3, result: {} });
  });

  it('answers a request that is not JSON-RPC with -32600 under its id, so the client is not left waiting', () => {
    expect(replies.find((m) => m.id === 99)).toEqual({ jsonrpc: '2.0', id: 99, error: { code: -32600, message: 'Invalid Request: not a JSON-RPC 2.0 message.' } });
    expect(replies.find((m) => m.id === 'x')).toEqual({ jsonrpc: '2.0', id: 'x', error: { code: -32600, message: 'Invalid Request: not a JSON-RPC 2.0 message.' } });
  });

  it('answers a batch with one -32600 (id null), and leaves blank lines and malformed responses unanswered', () => {
    expect(errorsWithNullId()).toEqual([
      { code: -32700, message: 'Parse error: the line is not valid JSON.' },
      { code: -32600, message: 'Invalid Request: send one message per line; JSON-RPC batches are not supported.' },
    ]);
    const answered = replies.filter((m) => m.error || m.result).map((m) => m.id);
    expect(answered.sort()).toEqual([1, 3, 8, 99, null, null, 'x']);
  });

  it('records each line it answered with an error as an INVALID_REQUEST of the caller', () => {
    const events = readFileSync(join(dir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const refused = events.filter((e) => e['error.code'] === 'INVALID_REQUEST').map((e) => [e.transport, e['user.id'], e.reason]);
    expect(refused).toEqual([
      ['stdio', 'alice', 'Parse error: the line is not valid JSON.'],
      ['stdio', 'alice', 'Invalid Request: not a JSON-RPC 2.0 message.'],
      ['stdio', 'alice', 'Invalid Request: not a JSON-RPC 2.0 message.'],
      ['stdio', 'alice', 'Invalid Request: send one message per line; JSON-RPC batches are not supported.'],
    ]);
  });

  it('writes nothing but JSON-RPC 2.0 messages to stdout, one per line, progress included', () => {
    for (const line of out) expect(JSON.parse(line)).toMatchObject({ jsonrpc: '2.0' });
    expect(replies.filter((m) => (m as { method?: string }).method === 'notifications/progress').length).toBeGreaterThan(0);
    expect(replies.find((m) => m.id === 8)).toMatchObject({ result: { structuredContent: { model: 'demo/medium' } } });
  });
});
