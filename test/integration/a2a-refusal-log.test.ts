/**
 * A request the A2A SDK refuses (no A2A-Version header, params that are not A2A, an unknown task)
 * is the caller's fault: it is answered with a JSON-RPC error and recorded as one decision event,
 * and it must not write a stack trace to the gateway's stderr. Seen before this test: the SDK's
 * JSON-RPC handler printed "Unhandled error in JSON-RPC POST handler: VersionNotSupportedError ..."
 * with its stack for every request without the header, so any caller could fill the operator's
 * log. The gateway runs in its own process here, so stderr is what an operator would read.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';

const message = { messageId: 'm-1', role: 'ROLE_USER', parts: [{ text: 'Hello' }] };
const v1 = { 'a2a-version': '1.0' };

/** Requests the SDK refuses, each with the JSON-RPC code it answers and the code the event records. */
const REFUSED: [string, Record<string, string>, unknown, number, string][] = [
  ['SendMessage without A2A-Version', {}, { jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } }, -32009, 'INVALID_REQUEST'],
  ['SendStreamingMessage without A2A-Version', {}, { jsonrpc: '2.0', id: 2, method: 'SendStreamingMessage', params: { message } }, -32009, 'INVALID_REQUEST'],
  ['an unsupported A2A-Version', { 'a2a-version': '9.9' }, { jsonrpc: '2.0', id: 3, method: 'SendMessage', params: { message } }, -32009, 'INVALID_REQUEST'],
  ['a message without messageId', v1, { jsonrpc: '2.0', id: 4, method: 'SendMessage', params: { message: { role: 'ROLE_USER', parts: [{ text: 'Hello' }] } } }, -32602, 'INVALID_REQUEST'],
  ['an unknown method', v1, { jsonrpc: '2.0', id: 5, method: 'DropTables', params: {} }, -32601, 'INVALID_REQUEST'],
  ['an unknown task', v1, { jsonrpc: '2.0', id: 6, method: 'GetTask', params: { id: 'no-such-task' } }, -32001, 'NOT_FOUND'],
  ['a stream for an unknown task', v1, { jsonrpc: '2.0', id: 7, method: 'SubscribeToTask', params: { id: 'no-such-task' } }, -32001, 'NOT_FOUND'],
  ['a streamed message to an unknown task', v1, { jsonrpc: '2.0', id: 8, method: 'SendStreamingMessage', params: { message: { ...message, messageId: 'm-8', taskId: 'no-such-task' } } }, -32001, 'NOT_FOUND'],
];

describe('A2A refusals in the gateway log', () => {
  let dir: string;
  let child: GatewayProcess;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-a2a-log-'));
    writeFileSync(join(dir, 'policy.yaml'), basicPolicy());
    child = await spawnGateway({ policyFile: join(dir, 'policy.yaml'), eventsFile: join(dir, 'events.jsonl'), env: { TOLLGATE_LOG_LEVEL: 'debug' } });
    // The start-up record goes through the asynchronous logger and may reach the pipe after the
    // "serving MCP" line the helper waits for: the log the test reads starts after it.
    const deadline = Date.now() + 10_000;
    while (!child.stderr().includes('"event":"started"')) {
      if (Date.now() > deadline) throw new Error(`no start-up record in the gateway's log:\n${child.stderr()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }, 60_000);
  afterAll(async () => {
    await child?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes no stack trace for requests the A2A SDK refuses, and records each as one event with its code', async () => {
    const base = child.mcpUrl.replace(/\/mcp$/, '');
    const logBefore = child.stderr().length;
    for (let round = 0; round < 3; round++) {
      for (const [what, headers, body, rpcCode] of REFUSED) {
        const res = await fetch(`${base}/a2a`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
        const text = await res.text();
        // A streamed refusal arrives as one SSE event; a plain one as the JSON body.
        const answer = JSON.parse(text.startsWith('data:') ? text.slice(5).trim() : text) as { error: { code: number } };
        expect([res.status, answer.error.code], what).toEqual([200, rpcCode]);
      }
    }
    const events = await child.eventsWhen(3 * REFUSED.length);
    expect(events.map((e) => [e.transport, e['error.code'], e['user.id']])).toEqual(Array.from({ length: 3 }, () => REFUSED.map(([, , , , code]) => ['a2a', code, 'alice'])).flat());
    for (const [i, [what, , , rpcCode]] of REFUSED.entries()) expect(events[i]!.reason, what).toContain(`JSON-RPC ${rpcCode}`);
    // Let anything written late reach the pipe.
    await new Promise((r) => setTimeout(r, 200));
    const log = child.stderr().slice(logBefore);
    expect(log).not.toMatch(/^\s+at /m);
    // At debug level, at most one JSON record per request, without a stack, and nothing above debug.
    const records = log
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { level: number; event?: string; err?: unknown });
    expect(records.length).toBeLessThanOrEqual(3 * REFUSED.length);
    expect(records.filter((r) => r.level > 20)).toEqual([]);
    expect(log).not.toContain('stack');
    expect(new Set(records.map((r) => r.event))).toEqual(new Set(['a2a_refused']));
  });
});
