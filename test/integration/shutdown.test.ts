/**
 * Shutdown within a deadline (issue 16, item 6). The measured problem: with Redis unreachable, a
 * replica that had received SIGTERM was still alive 20 minutes later, and a second SIGTERM did not
 * end it. These drills run `tollgate serve` (and `stdio`, and a `--workers` primary) as real
 * processes against a private redis-server they may freeze (SIGSTOP: connections stay open and
 * nothing answers, like a host that has gone silent) or kill, and check that:
 * - the first SIGTERM stops new connections, lets calls in flight finish and their ledger writes
 *   land, and exits 0 when all of that happens in time;
 * - when it does not, the process exits 1 once TOLLGATE_SHUTDOWN_TIMEOUT_MS has passed, with one
 *   error line per settlement it could not write, naming the request id and the amounts;
 * - a second SIGTERM or SIGINT during the drain exits at once (143 or 130);
 * - with the embedded store, a call cut off at the deadline stays in the journal and the next start
 *   recovers it.
 * Calls are held by a provider the test answers when it chooses (an OpenAI-compatible server in
 * this process), so a call is in flight, reserved and dispatched, for exactly as long as a test
 * needs. Every wait is on a positive signal (the provider received the call, a log line, the
 * process's exit); the time bounds are generous ceilings, not sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client as StdioClient, type Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { createClient } from '@keyv/redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, basicPolicy, sha } from '../fixtures/policies.js';
import { connectHttp } from '../helpers/gateway.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';
import { readHead, readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { startPrivateRedis, uniquePrefix, type PrivateRedis } from '../helpers/redis.js';

/** The reservation keys under `prefix` (a line's `…:r`, `…:r:x`, `…:r:i`). */
async function reservationKeys(url: string, prefix: string): Promise<string[]> {
  const client = createClient({ url });
  client.on('error', () => {});
  await client.connect();
  const found: string[] = [];
  try {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) found.push(...keys.filter((k) => /:r(:x|:i)?$/.test(k)));
  } finally {
    client.destroy();
  }
  return found;
}

type LogLine = Record<string, unknown> & { event?: string; level?: number };
type Usage = { inputTokens: number; outputTokens: number };

/** The JSON log lines in a process's stderr (other lines, such as the banner, are skipped). */
function logLines(stderr: string): LogLine[] {
  return stderr.split('\n').flatMap((l) => {
    if (!l.startsWith('{')) return [];
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

/** How the process ended, and when (Date.now()). */
interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
}

function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode, at: Date.now() });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
}

/** The exit, or a rejection naming what the process logged if it is still alive after `ms`. */
async function exitWithin(child: ChildProcess, ms: number, stderr: () => string): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still running ${ms} ms after the signal; its stderr:\n${stderr()}`)), ms);
  });
  try {
    return await Promise.race([exitOf(child), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `count` log lines satisfy `match`; rejects if the process exits first, or after `ms`. */
async function logged(child: ChildProcess, stderr: () => string, match: (l: LogLine) => boolean, count = 1, ms = 60_000): Promise<LogLine[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = logLines(stderr()).filter(match);
    if (found.length >= count) return found;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the process exited before the log line; its stderr:\n${stderr()}`);
    if (Date.now() > deadline) throw new Error(`${found.length} of ${count} such log lines after ${ms} ms; stderr:\n${stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * An OpenAI-compatible provider that holds every chat completion until the test releases it: a
 * call it has received has been reserved and dispatched, and stays in flight until `release`.
 */
async function startHeldProvider() {
  const held: { res: ServerResponse; stream: boolean }[] = [];
  let releasing = false;
  let arrived = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const text = 'held and released';
  const usage = { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 };
  // A streamed call (an A2A task's) is answered with the chunks of the same text, its usage in the last.
  const answer = ({ res, stream }: { res: ServerResponse; stream: boolean }) => {
    if (res.destroyed) return;
    const head = { id: 'chatcmpl-held', created: Math.floor(Date.now() / 1000), model: 'held-model' };
    if (stream) {
      const chunks = [
        { ...head, object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: text }, logprobs: null, finish_reason: null }] },
        { ...head, object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }] },
        { ...head, object: 'chat.completion.chunk', choices: [], usage },
      ];
      res.writeHead(200, { 'content-type': 'text/event-stream' }).end(`${chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('')}data: [DONE]\n\n`);
      return;
    }
    const body = { ...head, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: 'stop' }], usage };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      arrived += 1;
      for (const w of waiters.filter((w) => arrived >= w.n)) w.resolve();
      const call = { res, stream: (JSON.parse(body) as { stream?: boolean }).stream === true };
      if (releasing) answer(call);
      else held.push(call);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    /** Resolves once `n` calls have reached the provider. */
    received: (n = 1) => new Promise<void>((resolve) => (arrived >= n ? resolve() : waiters.push({ n, resolve }))),
    /** Answers the calls held so far, and every later one at once. */
    release() {
      releasing = true;
      for (const call of held.splice(0)) answer(call);
    },
    close: () => {
      for (const { res } of held.splice(0)) res.destroy();
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
type HeldProvider = Awaited<ReturnType<typeof startHeldProvider>>;

/** One tier served by the held provider, and the usual user budget. */
const heldPolicy = (provider: HeldProvider) => `
version: 1
providers:
  held: { kind: openai, apiKey: sk-test, baseUrl: "${provider.url}", timeoutMs: 300000 }
egress: { allow: ["127.0.0.1"] }
models:
  held/held-model: { price: { inputPerMTok: 1, outputPerMTok: 2 } }
tiers:
  standard: [held/held-model]
defaultTier: standard
apiKeys:
  - { id: k-alice, sha256: ${sha(KEYS.alice)}, user: alice }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: 100000 }
`;

describe('shutdown within a deadline', () => {
  let dir: string;
  let redis: PrivateRedis | undefined;
  let provider: HeldProvider | undefined;
  const procs: ChildProcess[] = [];
  const clients: Client[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-shutdown-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => {});
    for (const p of procs.splice(0)) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      await exitOf(p);
    }
    await provider?.close();
    provider = undefined;
    redis?.thaw();
    await redis?.stop();
    redis = undefined;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  let started = 0;
  const serve = async (policy: string, env: Record<string, string>, args: string[] = []) => {
    const n = ++started;
    const policyFile = join(dir, `policy-${n}.yaml`);
    writeFileSync(policyFile, policy);
    redis ??= await startPrivateRedis();
    const g = await spawnGateway({
      policyFile,
      eventsFile: join(dir, `events-${n}.jsonl`),
      env: { REDIS_URL: redis.url, TOLLGATE_KEY_PREFIX: uniquePrefix('shutdown'), TOLLGATE_LOG_LEVEL: 'info', ...env },
      args,
      startTimeoutMs: 60_000,
    });
    procs.push(g.child);
    return g;
  };
  /** A gateway whose calls the held provider serves. */
  const serveHeld = async (env: Record<string, string>, args: string[] = []) => {
    provider = await startHeldProvider();
    return serve(heldPolicy(provider), env, args);
  };
  const connect = async (g: GatewayProcess, key: string) => {
    const c = await connectHttp(g.mcpUrl, key);
    clients.push(c);
    return c;
  };
  const complete = (c: Client) => c.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 50 } });
  const isShutdownStart = (l: LogLine) => l.event === 'shutdown_started';

  it('exits 0 at once on SIGTERM when nothing is pending', { timeout: 120_000 }, async () => {
    const g = await serve(basicPolicy(), { TOLLGATE_SHUTDOWN_TIMEOUT_MS: '10000' });
    const c = await connect(g, KEYS.alice);
    expect((await complete(c)).isError).toBeFalsy();
    await g.eventsWhen(1);

    const sent = Date.now();
    g.child.kill('SIGTERM');
    const exit = await exitWithin(g.child, 8000, g.stderr);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.at - sent).toBeLessThan(5000);
    expect(logLines(g.stderr()).filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
    expect(logLines(g.stderr()).find((l) => l.event === 'shutdown_complete')).toMatchObject({ code: 0, unsettled: 0 });
  });

  it('lets a call in flight finish and charge before exiting 0 (the --shutdown-timeout flag)', { timeout: 120_000 }, async () => {
    // The flag overrides the environment's deadline, which alone would cut the call short.
    const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: '100' }, ['--shutdown-timeout', '60000']);
    const c = await connect(g, KEYS.alice);
    const call = complete(c);
    await provider!.received();

    g.child.kill('SIGTERM');
    expect((await logged(g.child, g.stderr, isShutdownStart))[0]).toMatchObject({ deadlineMs: 60_000, inFlightRequests: 1 });
    provider!.release();
    const result = await call;
    expect(result.isError).toBeFalsy();
    const exit = await exitWithin(g.child, 30_000, g.stderr);
    expect(exit).toMatchObject({ code: 0, signal: null });
    // The charge landed before the process went: its decision event is in the file.
    expect(g.events()).toEqual([
      expect.objectContaining({ outcome: 'success', 'request.id': (result.structuredContent as { requestId: string }).requestId, 'tollgate.charged': [expect.objectContaining({ budget: 'user-weekly', amount: 10 })] }),
    ]);
  });

  it('exits 1 by its deadline when the store hangs, naming the settlement it could not write (issue 16)', { timeout: 120_000 }, async () => {
    const deadlineMs = 1500;
    const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: String(deadlineMs), TOLLGATE_STORE_TIMEOUT_MS: '300' });
    // An API key the policy does not list is looked up among the issued keys in Redis.
    await expect(connectHttp(g.mcpUrl, 'key-not-in-the-policy')).rejects.toThrow();
    const c = await connect(g, KEYS.alice);
    const call = complete(c);
    await provider!.received();

    // Redis goes silent while the call is with the provider: its settlement cannot be written, and
    // a request that needs an issued-key lookup is refused once the store timeout has passed.
    redis!.freeze();
    const stuck = connectHttp(g.mcpUrl, 'another-key-not-in-the-policy').catch((err: unknown) => err);
    provider!.release();
    const { requestId, usage } = (await call).structuredContent as { requestId: string; usage: Usage };
    await logged(g.child, g.stderr, (l) => l.event === 'quota_settle_queued' && l.requestId === requestId);

    g.child.kill('SIGTERM');
    const exit = await exitWithin(g.child, deadlineMs + 3000, g.stderr);
    expect(exit).toMatchObject({ code: 1, signal: null });
    // The lookup on the silent store was refused once the store timeout passed (it no longer waits
    // for ever), so no call holds the shutdown: it ends as soon as the store gives up the
    // settlement, by its deadline, and names it.
    expect(await stuck).toBeInstanceOf(Error);

    const lines = logLines(g.stderr());
    expect(lines.filter((l) => l.event === 'shutdown_unsettled')).toEqual([
      expect.objectContaining({ level: 50, requestId, lines: [{ budgetId: 'user-weekly', subject: 'alice', amount: usage.inputTokens + usage.outputTokens }] }),
    ]);
  });

  it('exits 1 without waiting for the deadline when the store is gone, naming the settlement', { timeout: 120_000 }, async () => {
    const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: '60000', TOLLGATE_STORE_TIMEOUT_MS: '300' });
    const c = await connect(g, KEYS.alice);
    const call = complete(c);
    await provider!.received();
    await redis!.kill();
    provider!.release();
    const { requestId, usage } = (await call).structuredContent as { requestId: string; usage: Usage };
    await logged(g.child, g.stderr, (l) => l.event === 'quota_settle_queued' && l.requestId === requestId);

    const sent = Date.now();
    g.child.kill('SIGTERM');
    const exit = await exitWithin(g.child, 30_000, g.stderr);
    expect(exit).toMatchObject({ code: 1, signal: null });
    expect(exit.at - sent).toBeLessThan(20_000);
    const lines = logLines(g.stderr());
    expect(lines.some((l) => l.event === 'shutdown_deadline')).toBe(false);
    expect(lines.filter((l) => l.event === 'shutdown_unsettled')).toEqual([
      expect.objectContaining({ level: 50, requestId, lines: [{ budgetId: 'user-weekly', subject: 'alice', amount: usage.inputTokens + usage.outputTokens }] }),
    ]);
  });

  it('embedded store: exits 0 at once on SIGTERM, its journal fsync\'d to the last entry (the head names it) and let go', { timeout: 120_000 }, async () => {
    const policyFile = join(dir, 'embedded-quiet.yaml');
    writeFileSync(policyFile, basicPolicy());
    const dataDir = join(dir, 'embedded-quiet-data');
    const g = await spawnGateway({ policyFile, eventsFile: join(dir, 'embedded-quiet.jsonl'), env: { TOLLGATE_DATA_DIR: dataDir, TOLLGATE_LOG_LEVEL: 'info', TOLLGATE_SHUTDOWN_TIMEOUT_MS: '10000' }, startTimeoutMs: 60_000 });
    procs.push(g.child);
    const c = await connect(g, KEYS.alice);
    for (let i = 0; i < 3; i++) expect((await complete(c)).isError).toBeFalsy();
    await g.eventsWhen(3);

    const sent = Date.now();
    g.child.kill('SIGTERM');
    const exit = await exitWithin(g.child, 8000, g.stderr);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.at - sent).toBeLessThan(5000);
    expect(logLines(g.stderr()).filter((l) => (l.level ?? 0) >= 40)).toEqual([]);
    const entries = segmentFiles(dataDir).flatMap((f) => readSegment(f).entries);
    // Two entries a served call: the reservation with its dispatch mark, and the settlement.
    expect(entries.map((e) => e.body.kind)).toEqual(['reserve', 'settle', 'reserve', 'settle', 'reserve', 'settle']);
    expect(readHead(dataDir)).toEqual({ seq: entries.at(-1)!.seq, link: entries.at(-1)!.link });
    expect(existsSync(join(dataDir, 'journal.lock'))).toBe(false);
  });

  it('embedded store: a call still at its provider at the deadline is cut, recorded CANCELLED and released; the next start has nothing to recover', { timeout: 120_000 }, async () => {
    provider = await startHeldProvider();
    const policyFile = join(dir, 'embedded.yaml');
    writeFileSync(policyFile, heldPolicy(provider));
    const dataDir = join(dir, 'embedded-data');
    const start = (n: number) =>
      spawnGateway({ policyFile, eventsFile: join(dir, `embedded-${n}.jsonl`), env: { TOLLGATE_DATA_DIR: dataDir, TOLLGATE_LOG_LEVEL: 'info', TOLLGATE_SHUTDOWN_TIMEOUT_MS: '1500' }, startTimeoutMs: 60_000 });
    const first = await start(1);
    procs.push(first.child);
    const c = await connect(first, KEYS.alice);
    const call = complete(c).catch((err: unknown) => err);
    await provider.received();

    first.child.kill('SIGTERM');
    const exit = await exitWithin(first.child, 1500 + 3000, first.stderr);
    expect(exit).toMatchObject({ code: 1, signal: null });
    expect(logLines(first.stderr()).find((l) => l.event === 'shutdown_deadline')).toMatchObject({ inFlightRequests: 1, runningCalls: 1 });
    expect(logLines(first.stderr()).find((l) => l.event === 'shutdown_complete')).toMatchObject({ code: 1, unsettled: 0 });
    expect(logLines(first.stderr()).filter((l) => l.event === 'shutdown_unsettled' || l.event === 'settle_failed')).toEqual([]);
    // The provider had not answered: nothing is charged, and the reservation is released with the call's one event.
    expect(first.events()).toEqual([
      expect.objectContaining({ outcome: 'failed', 'error.code': 'CANCELLED', reason: 'The gateway shut down before the call finished.', 'gen_ai.usage.input_tokens': 0, 'tollgate.cost_usd': 0 }),
    ]);
    expect(segmentFiles(dataDir).flatMap((f) => readSegment(f).entries).map((e) => e.body.kind)).toEqual(['reserve', 'release']);
    await call;

    const second = await start(2);
    procs.push(second.child);
    await second.stop();
    expect(logLines(second.stderr()).some((l) => l.event === 'journal_recovered')).toBe(false);
    expect(second.events()).toEqual([]);
  });

  /** A v0.3 `message/send` that asks not to wait (`configuration.blocking: false`): answered `submitted` while its call goes on. */
  const sendInBackground = async (g: GatewayProcess) => {
    const res = await fetch(g.mcpUrl.replace(/\/mcp$/, '/a2a'), {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'message/send',
        params: { configuration: { blocking: false }, message: { kind: 'message', messageId: 'm-1', role: 'user', parts: [{ kind: 'text', text: 'hello' }], metadata: { max_tokens: 50 } } },
      }),
    });
    return ((await res.json()) as { result: { status: { state: string } } }).result;
  };

  it('A2A: a task still running after its answer (blocking: false) finishes and is charged before exiting 0', { timeout: 120_000 }, async () => {
    provider = await startHeldProvider();
    const policyFile = join(dir, 'a2a.yaml');
    writeFileSync(policyFile, heldPolicy(provider));
    const dataDir = join(dir, 'a2a-data');
    const g = await spawnGateway({ policyFile, eventsFile: join(dir, 'a2a.jsonl'), env: { TOLLGATE_DATA_DIR: dataDir, TOLLGATE_LOG_LEVEL: 'info', TOLLGATE_SHUTDOWN_TIMEOUT_MS: '60000' }, startTimeoutMs: 60_000 });
    procs.push(g.child);
    expect((await sendInBackground(g)).status.state).toBe('submitted');
    await provider.received();

    g.child.kill('SIGTERM');
    // Its HTTP request is answered: only the pipeline knows of the call.
    expect((await logged(g.child, g.stderr, isShutdownStart))[0]).toMatchObject({ inFlightRequests: 0, runningCalls: 1 });
    provider.release();
    const exit = await exitWithin(g.child, 30_000, g.stderr);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(logLines(g.stderr()).find((l) => l.event === 'shutdown_complete')).toMatchObject({ code: 0, unsettled: 0 });
    expect(g.events()).toEqual([expect.objectContaining({ transport: 'a2a', outcome: 'success', 'tollgate.charged': [expect.objectContaining({ budget: 'user-weekly', amount: 10 })] })]);
    // Settled in the journal: no reservation is left for a recovery to charge.
    expect(segmentFiles(dataDir).flatMap((f) => readSegment(f).entries).map((e) => e.body.kind)).toEqual(['reserve', 'settle']);
  });

  it('A2A: a task still running after its answer is cut at the deadline, recorded CANCELLED and released, exit 1', { timeout: 120_000 }, async () => {
    const deadlineMs = 1500;
    const prefix = uniquePrefix('shutdown-a2a');
    const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: String(deadlineMs), TOLLGATE_KEY_PREFIX: prefix });
    expect((await sendInBackground(g)).status.state).toBe('submitted');
    await provider!.received();

    g.child.kill('SIGTERM');
    const exit = await exitWithin(g.child, deadlineMs + 3000, g.stderr);
    expect(exit).toMatchObject({ code: 1, signal: null });
    expect(logLines(g.stderr()).find((l) => l.event === 'shutdown_deadline')).toMatchObject({ inFlightRequests: 0, runningCalls: 1 });
    expect(g.events()).toEqual([
      expect.objectContaining({ transport: 'a2a', outcome: 'failed', 'error.code': 'CANCELLED', reason: 'The gateway shut down before the call finished.', 'gen_ai.usage.input_tokens': 0, 'tollgate.cost_usd': 0 }),
    ]);
    // Released in Redis: a line's reservation keys go once they hold nothing.
    expect(await reservationKeys(redis!.url, prefix)).toEqual([]);
  });

  for (const [signal, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const) {
    it(`exits at once on a second ${signal} during a long drain (code ${code})`, { timeout: 120_000 }, async () => {
      const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: '300000' });
      const c = await connect(g, KEYS.alice);
      const call = complete(c).catch((err: unknown) => err);
      await provider!.received();

      g.child.kill(signal);
      expect((await logged(g.child, g.stderr, isShutdownStart))[0]).toMatchObject({ inFlightRequests: 1 });
      const sent = Date.now();
      g.child.kill(signal);
      const exit = await exitWithin(g.child, 30_000, g.stderr);
      expect(exit).toMatchObject({ code, signal: null });
      expect(exit.at - sent).toBeLessThan(10_000);
      expect(logLines(g.stderr()).find((l) => l.event === 'shutdown_forced')).toMatchObject({ level: 50, signal, inFlightRequests: 1 });
      await call;
    });
  }

  it('stops a --workers primary: the call in flight finishes, then every process exits 0', { timeout: 120_000 }, async () => {
    const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: '60000', TOLLGATE_WORKERS: '2' });
    const c = await connect(g, KEYS.alice);
    const call = complete(c);
    await provider!.received();

    g.child.kill('SIGTERM');
    // Each worker was asked (over the cluster's channel) and is draining.
    await logged(g.child, g.stderr, isShutdownStart, 2);
    provider!.release();
    expect((await call).isError).toBeFalsy();
    const exit = await exitWithin(g.child, 30_000, g.stderr);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(logLines(g.stderr()).filter((l) => l.event === 'shutdown_complete').map((l) => l.code)).toEqual([0, 0]);
  });

  it('a second SIGTERM to a --workers primary ends the workers and the primary at once (143)', { timeout: 120_000 }, async () => {
    const g = await serveHeld({ TOLLGATE_SHUTDOWN_TIMEOUT_MS: '300000', TOLLGATE_WORKERS: '2' });
    const c = await connect(g, KEYS.alice);
    const call = complete(c).catch((err: unknown) => err);
    await provider!.received();

    g.child.kill('SIGTERM');
    await logged(g.child, g.stderr, isShutdownStart, 2);
    const sent = Date.now();
    g.child.kill('SIGTERM');
    const exit = await exitWithin(g.child, 30_000, g.stderr);
    expect(exit).toMatchObject({ code: 143, signal: null });
    expect(exit.at - sent).toBeLessThan(10_000);
    // The worker holding the call says so as it goes.
    expect(logLines(g.stderr()).filter((l) => l.event === 'shutdown_forced').map((l) => l.inFlightRequests)).toContain(1);
    await call;
  });

  it('stdio: a client that closes mid-call gets the call cancelled and recorded before the journal closes', { timeout: 120_000 }, async () => {
    provider = await startHeldProvider();
    const policyFile = join(dir, 'stdio-close.yaml');
    writeFileSync(policyFile, heldPolicy(provider));
    const eventsFile = join(dir, 'stdio-close.jsonl');
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policyFile, '--data-dir', join(dir, 'stdio-close-data')],
      env: { PATH: process.env.PATH ?? '', TOLLGATE_API_KEY: KEYS.alice, TOLLGATE_LOG_LEVEL: 'info', TOLLGATE_EVENTS_FILE: eventsFile, TOLLGATE_SHUTDOWN_TIMEOUT_MS: '60000' },
      stderr: 'pipe',
    });
    let stderr = '';
    transport.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const client = new StdioClient({ name: 'drill', version: '1' });
    await client.connect(transport);
    const call = complete(client).catch((err: unknown) => err);
    await provider.received();

    // Closes stdin and waits for the process to exit (the SDK sends SIGTERM after 2 s).
    await client.close();
    await call;
    const lines = logLines(stderr);
    expect(lines.find((l) => l.event === 'shutdown_complete')).toMatchObject({ code: 0, unsettled: 0 });
    expect(lines.filter((l) => l.event === 'settle_failed' || l.event === 'shutdown_forced')).toEqual([]);
    const events = readFileSync(eventsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.event === 'tollgate.decision');
    expect(events).toEqual([expect.objectContaining({ transport: 'stdio', outcome: 'failed', 'error.code': 'CANCELLED', 'gen_ai.usage.input_tokens': 0, 'tollgate.cost_usd': 0 })]);
  });

  it('stdio: SIGTERM answers the call in flight, then exits 0', { timeout: 120_000 }, async () => {
    redis = await startPrivateRedis();
    provider = await startHeldProvider();
    const policyFile = join(dir, 'stdio.yaml');
    writeFileSync(policyFile, heldPolicy(provider));
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policyFile], {
      env: {
        PATH: process.env.PATH ?? '',
        TOLLGATE_API_KEY: KEYS.alice,
        REDIS_URL: redis.url,
        TOLLGATE_KEY_PREFIX: uniquePrefix('shutdown-stdio'),
        TOLLGATE_LOG_LEVEL: 'info',
        TOLLGATE_EVENTS_FILE: join(dir, 'stdio.jsonl'),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    procs.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const send = (msg: object) => child.stdin!.write(`${JSON.stringify(msg)}\n`);
    send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'drill', version: '1' } } });
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'complete', arguments: { prompt: 'hello', max_tokens: 50 } } });
    await provider.received();

    child.kill('SIGTERM');
    expect((await logged(child, () => stderr, isShutdownStart))[0]).toMatchObject({ inFlightRequests: 1 });
    provider.release();
    const exit = await exitWithin(child, 30_000, () => stderr);
    expect(exit).toMatchObject({ code: 0, signal: null });
    const answers = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id?: number; result?: { isError?: boolean; structuredContent?: unknown } });
    expect(answers.find((a) => a.id === 2)?.result).toMatchObject({ structuredContent: { model: 'held/held-model' } });
    expect(answers.find((a) => a.id === 2)?.result?.isError).toBeFalsy();
  });
});
