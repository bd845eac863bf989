/**
 * Kill drill: mixed load on a `tollgate serve` (MCP, OpenAI- and Anthropic-compatible JSON and
 * streams, A2A), the gateway SIGKILLed mid-load and started again on the same journal, then the
 * journal checked against what the clients were answered:
 *   - every answered call is charged (a settle, or a recovery at its reservation);
 *   - every charge in the journal carries its event, with the same amounts;
 *   - every event the event log printed with a charge has that charge in the journal;
 *   - the chain verifies.
 *
 *   npm run drill:kill -- [--runs 10] [--calls 300] [--store embedded|redis] [--redis URL]
 *
 * Prints one line per run and exits 1 if any run breaks a promise.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { readHead, readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { verifyChain, type EntryBody, type JournalEntry } from '../../src/quota/journal.js';
import { startChild } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '10' },
    calls: { type: 'string', default: '300' },
    concurrency: { type: 'string', default: '16' },
    store: { type: 'string', default: 'embedded' },
    redis: { type: 'string' },
    'latency-ms': { type: 'string', default: '25' },
    keep: { type: 'boolean', default: false },
    'settle-before-reply': { type: 'boolean', default: false },
  },
});
const RUNS = Number(values.runs);
const CALLS = Number(values.calls);
const CONCURRENCY = Number(values.concurrency);
const KEY = 'drill-key';
/** Short, so that on Redis the killed replica's reservations expire (and are recovered) within the run. */
const RESERVATION_TTL_S = 5;

function policy(latencyMs: number, settleBeforeReply: boolean): string {
  const sha = createHash('sha256').update(KEY).digest('hex');
  return `version: 1
providers:
  demo: { kind: demo, latencyMs: ${latencyMs} }
tiers:
  standard: [demo/medium]
  economy: [demo/small]
apiKeys:
  - { id: k-drill, sha256: ${sha}, user: drill, teams: [ops], costCenter: cc-9 }
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week }
    limit: { tokens: 1000000000 }
  - id: team-monthly
    scope: team
    window: { calendar: month }
    limit: { usd: 1000000 }
limits: { settleBeforeReply: ${settleBeforeReply}, reservationTtlSeconds: ${RESERVATION_TTL_S} }
`;
}

type Kind = 'mcp' | 'openai' | 'openai-stream' | 'anthropic' | 'anthropic-stream' | 'a2a';
const KINDS: Kind[] = ['mcp', 'openai', 'openai-stream', 'anthropic', 'anthropic-stream', 'a2a'];

/** One call of `kind`; resolves with its request id once the whole answer arrived, throws otherwise. */
async function call(base: string, kind: Kind, mcp: () => Promise<Client>): Promise<string> {
  const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
  const prompt = `drill ${randomUUID().slice(0, 8)}`;
  switch (kind) {
    case 'mcp': {
      const r = await (await mcp()).callTool({ name: 'complete', arguments: { prompt, max_tokens: 12 } });
      if (r.isError) throw new Error(JSON.stringify(r.content));
      return (r.structuredContent as { requestId: string }).requestId;
    }
    case 'openai':
    case 'openai-stream': {
      const stream = kind === 'openai-stream';
      const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: auth, body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: prompt }], max_tokens: 12, stream }) });
      const text = await res.text();
      if (res.status !== 200 || (stream && !text.includes('data: [DONE]'))) throw new Error(`openai ${res.status}`);
      return res.headers.get('x-request-id')!;
    }
    case 'anthropic':
    case 'anthropic-stream': {
      const stream = kind === 'anthropic-stream';
      const res = await fetch(`${base}/v1/messages`, { method: 'POST', headers: auth, body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: prompt }], max_tokens: 12, stream }) });
      const text = await res.text();
      if (res.status !== 200 || (stream && !text.includes('event: message_stop'))) throw new Error(`anthropic ${res.status}`);
      return res.headers.get('x-request-id')!;
    }
    case 'a2a': {
      const message = { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: prompt }], metadata: { max_tokens: 12 } };
      const res = await fetch(`${base}/a2a`, { method: 'POST', headers: { ...auth, 'a2a-version': '1.0' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } }) });
      const body = (await res.json()) as { result?: { task?: { status?: { state?: string }; metadata?: Record<string, { requestId?: string }> } } };
      const task = body.result?.task;
      if (task?.status?.state !== 'TASK_STATE_COMPLETED') throw new Error(`a2a ${JSON.stringify(body).slice(0, 200)}`);
      return task.metadata!['io.tollgate/result']!.requestId!;
    }
  }
}

interface Gateway {
  base: string;
  child: ChildProcess;
  events: string;
}

async function startGateway(dir: string, n: number, env: Record<string, string>): Promise<Gateway> {
  const events = join(dir, `events-${n}.jsonl`);
  const args = ['src/cli.ts', 'serve', '--port', '0', '--policy', join(dir, 'policy.yaml'), '--events', events, '--no-watch'];
  const g = await startChild(args, { TOLLGATE_LOG_LEVEL: 'error', ...env }, /serving MCP at (\S+)\/mcp/, 'stderr');
  return { base: g.match[1]!, child: g.child, events };
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

/** Runs load against whatever gateway `current()` is until `answered` reaches `target`. */
async function load(current: () => Gateway, answered: Set<string>, target: number): Promise<number> {
  let failures = 0;
  let i = 0;
  const worker = async (w: number) => {
    let client: Client | undefined;
    let clientFor: string | undefined;
    const mcp = async () => {
      const base = current().base;
      if (!client || clientFor !== base) {
        client = new Client({ name: 'killdrill', version: '1' });
        await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: { authorization: `Bearer ${KEY}` } } }));
        clientFor = base;
      }
      return client;
    };
    while (answered.size < target) {
      const kind = KINDS[(i++ + w) % KINDS.length]!;
      try {
        answered.add(await call(current().base, kind, mcp));
      } catch {
        failures += 1;
        client = undefined;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, (_, w) => worker(w)));
  return failures;
}

interface RunResult {
  answered: number;
  charged: number;
  recovered: number;
  /** Answered calls whose settlement the crash lost, charged at their reservation by recovery. */
  answeredRecovered: number;
  released: number;
  uncharged: string[];
  chargeWithoutEvent: string[];
  eventWithoutCharge: string[];
  chain: string;
}

function check(entries: JournalEntry[], fault: string | undefined, answered: Set<string>, eventFiles: string[]): RunResult {
  const charges = new Map<string, EntryBody>();
  let recovered = 0;
  let released = 0;
  for (const e of entries) {
    // One request's charge may span entries (Redis recovers line by line; the event rides on one of them).
    if (e.body.kind === 'settle' || e.body.kind === 'recover') {
      const prior = charges.get(e.body.id);
      charges.set(e.body.id, prior ? { ...prior, lines: [...(prior.lines ?? []), ...(e.body.lines ?? [])], event: prior.event ?? e.body.event } : e.body);
    }
    if (e.body.kind === 'recover' && e.body.event) recovered += 1;
    if (e.body.kind === 'release' && e.body.event?.['tollgate.settled_by'] === 'recovery') released += 1;
  }
  // Per budget line, in any order (the Redis store keeps lines sorted by key; the event in policy order).
  type Charge = { amount: number; budgetId?: string; budget?: string; subject?: string };
  const amounts = (lines: Charge[] | undefined) => JSON.stringify((lines ?? []).map((l) => `${l.budgetId ?? l.budget}|${l.subject}=${l.amount}`).sort());
  const chargeWithoutEvent = [...charges].filter(([id, b]) => b.event?.['request.id'] !== id || amounts(b.event['tollgate.charged'] as Charge[]) !== amounts(b.lines)).map(([id]) => id);
  const eventWithoutCharge: string[] = [];
  for (const file of eventFiles) {
    if (!existsSync(file)) continue;
    for (const l of readFileSync(file, 'utf8').split('\n')) {
      if (!l.trim()) continue;
      const ev = JSON.parse(l) as Record<string, unknown>;
      const charged = ev['tollgate.charged'] as Charge[] | undefined;
      if (!charged?.length) continue;
      const b = charges.get(String(ev['request.id']));
      if (!b || amounts(b.lines) !== amounts(charged)) eventWithoutCharge.push(String(ev['request.id']));
    }
  }
  return {
    answered: answered.size,
    charged: charges.size,
    recovered,
    answeredRecovered: [...answered].filter((id) => charges.get(id)?.kind === 'recover').length,
    released,
    uncharged: [...answered].filter((id) => !charges.has(id)),
    chargeWithoutEvent,
    eventWithoutCharge,
    chain: fault ?? 'ok',
  };
}

/** The journal of an embedded store: every segment, and the chain checked against the head. */
function embeddedJournal(dataDir: string): { entries: JournalEntry[]; fault?: string } {
  const entries: JournalEntry[] = segmentFiles(dataDir).flatMap((f) => readSegment(f).entries);
  const fault = verifyChain(entries, { head: readHead(dataDir) });
  return { entries, fault: fault ? `broken at ${fault.seq}: ${fault.reason}` : undefined };
}

/** The journal on Redis under `prefix`: every stream's entries, and the store's own audit (chain, counters, events, rollups). */
async function redisJournal(url: string, prefix: string): Promise<{ entries: JournalEntry[]; fault?: string }> {
  const { RedisQuotaStore } = await import('../../src/quota/redis.js');
  const store = new RedisQuotaStore({ url, prefix, recover: false, logger: { info() {}, warn() {}, error() {} } });
  try {
    const entries: JournalEntry[] = [];
    for await (const { entry } of store.journalEntries()) entries.push(entry);
    const report = await store.verify();
    const faults = [
      ...report.streams.flatMap((st) => ((st as { fault?: { seq: number; reason: string } }).fault ? [`${(st as { stream: string }).stream}: ${(st as { fault: { reason: string } }).fault.reason}`] : [])),
      ...report.counters.mismatches.map((m) => `counter ${m.usageKey}: ${m.counter} vs journal ${m.journal}`),
      ...report.events.missing.map((m) => `charge without event ${m.id}`),
      ...report.rollups.mismatches.map((m) => `rollup ${m.key} ${m.field}`),
    ];
    return { entries, fault: report.ok ? undefined : faults.slice(0, 3).join('; ') || 'verify failed' };
  } finally {
    await store.close();
  }
}

async function run(n: number): Promise<boolean> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-killdrill-'));
  writeFileSync(join(dir, 'policy.yaml'), policy(Number(values['latency-ms']), values['settle-before-reply']!));
  const dataDir = join(dir, 'data');
  const redis = values.store === 'redis';
  if (redis && !values.redis) throw new Error('--store redis needs --redis <url>');
  const prefix = `killdrill-${process.pid}-${n}-${randomUUID().slice(0, 8)}:`;
  // With Redis the data directory only keeps writes an outage leaves queued: the run's own, not the working directory's.
  const env: Record<string, string> = redis ? { REDIS_URL: values.redis!, TOLLGATE_KEY_PREFIX: prefix, TOLLGATE_DATA_DIR: dataDir } : { TOLLGATE_DATA_DIR: dataDir };
  const answered = new Set<string>();
  let gw = await startGateway(dir, 1, env);
  const eventFiles = [gw.events];
  const current = () => gw;
  // Kill somewhere in the middle of the run, while every worker has a call in flight.
  const killAt = Math.floor(CALLS * (0.3 + Math.random() * 0.4));
  const loading = load(current, answered, CALLS);
  while (answered.size < killAt) await new Promise((r) => setTimeout(r, 2));
  gw.child.kill('SIGKILL');
  await exited(gw.child);
  gw = await startGateway(dir, 2, env);
  eventFiles.push(gw.events);
  await loading;
  // On Redis the dead replica's reservations are recovered when they expire: give the surviving
  // replica's sweep (every 10 s) time to find them after the TTL.
  if (redis) await new Promise((r) => setTimeout(r, (RESERVATION_TTL_S + 15) * 1000));
  gw.child.kill('SIGTERM');
  await exited(gw.child);
  const journal = redis ? await redisJournal(values.redis!, prefix) : embeddedJournal(dataDir);
  const r = check(journal.entries, journal.fault, answered, eventFiles);
  const ok = r.uncharged.length === 0 && r.chargeWithoutEvent.length === 0 && r.eventWithoutCharge.length === 0 && r.chain === 'ok';
  process.stdout.write(
    `run ${n} (${values.store}): answered ${r.answered}, charged ${r.charged} (recovered ${r.recovered}, of them answered ${r.answeredRecovered}; released by recovery ${r.released}); ` +
      `answered uncharged ${r.uncharged.length}, charges without event ${r.chargeWithoutEvent.length}, events without charge ${r.eventWithoutCharge.length}, journal ${r.chain}${ok ? '' : '  FAIL'}\n`,
  );
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
  else process.stdout.write(`  kept ${dir}\n`);
  return ok;
}

let failed = 0;
for (let n = 1; n <= RUNS; n++) if (!(await run(n))) failed += 1;
process.stdout.write(`${RUNS - failed}/${RUNS} runs kept every promise\n`);
process.exit(failed ? 1 : 0);
