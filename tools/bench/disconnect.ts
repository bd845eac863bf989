/**
 * Disconnect drill: clients that leave a few milliseconds after sending, on every way in (MCP over
 * HTTP with a JSON and an SSE answer, the OpenAI- and Anthropic-compatible endpoints plain and
 * streamed, A2A SendMessage and SendStreamingMessage), against a `tollgate serve` on the embedded
 * journal whose upstreams are the fake Anthropic and OpenAI servers (tools/fake-providers), slow
 * enough that every call is still with its provider when its client leaves. Then it checks:
 *   - the upstream requests the fakes received were aborted, not answered (target: 99 % or more,
 *     when every client leaves before its provider can answer: --leave-max-ms below --latency-ms);
 *   - no call the provider had begun answering (it sent its answer's head) is recorded as CANCELLED
 *     with nothing charged (each client is its own user, so its decision event is matched to its
 *     upstream request);
 *   - every leaver whose request was sent in full (Node's fetch reported its body sent) has a
 *     decision event: a call that reached the gateway is recorded, whenever its caller left. A
 *     leaver whose request was never sent in full may have no event (no call reached the gateway);
 *     those are counted apart;
 *   - the ledger equals the events: per budget, the charges in the journal (settle and recover
 *     entries), the charges the decision events carry, and the store's counters (my_budget) agree,
 *     and the journal's chain verifies.
 * A few calls that stay to the end follow the leavers (one per transport), so the ledger holds
 * real charges as well.
 *
 *   npm run drill:disconnect -- [--runs 1] [--clients 200] [--leave-min-ms 1] [--leave-max-ms 50]
 *     [--latency-ms 400] [--word-ms 30] [--end-ms 0] [--spread-ms 1000]
 *
 * --latency-ms is the providers' time to their answer's head, --word-ms the pause before each
 * streamed word, --end-ms the pause before an answer's last bytes (a plain answer's body, a
 * stream's end after its last event). Clients start over --spread-ms.
 *
 * Prints a few lines per run and exits 1 if a run misses the target, leaves a call its provider
 * finished uncharged or a call sent in full unrecorded, or finds the ledger and the events apart.
 */
import { createHash, randomUUID } from 'node:crypto';
import { subscribe } from 'node:diagnostics_channel';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { toLedger, type BudgetView } from '../../src/call/budget.js';
import { readHead, readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { verifyChain, type JournalEntry } from '../../src/quota/journal.js';
import { startFakeAnthropic } from '../fake-providers/anthropic.js';
import { startFakeOpenAI } from '../fake-providers/openai.js';
import type { FakeProviderServer } from '../fake-providers/types.js';
import { openMcpSession, send, TRANSPORTS, type Transport } from './clients.js';
import { killChildren, sleep, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '1' },
    clients: { type: 'string', default: '200' },
    'leave-min-ms': { type: 'string', default: '1' },
    'leave-max-ms': { type: 'string', default: '50' },
    'latency-ms': { type: 'string', default: '400' },
    'word-ms': { type: 'string', default: '30' },
    'end-ms': { type: 'string', default: '0' },
    'spread-ms': { type: 'string', default: '1000' },
    keep: { type: 'boolean', default: false },
  },
});
const RUNS = Number(values.runs);
const CLIENTS = Number(values.clients);
const LEAVE_MIN = Number(values['leave-min-ms']);
const LEAVE_MAX = Number(values['leave-max-ms']);
const LATENCY = Number(values['latency-ms']);
/** The 99 % target holds when every client leaves before its provider can answer; later leavers are only reported. */
const TARGET = LEAVE_MAX < LATENCY;
const MAX_TOKENS = 40;
/** Each client calls as a user of its own, so its decision event can be told from the others'. */
const keyOf = (i: number) => `drill-key-${i}`;
const userOf = (i: number) => `drill-${i}`;
/** The stayers' key. */
const STAYER = -1;
const TIERS = { claude: 'anthropic', gpt: 'openai' } as const;
type Tier = keyof typeof TIERS;

function policy(anthropic: FakeProviderServer, openai: FakeProviderServer): string {
  const sha = (i: number) => createHash('sha256').update(keyOf(i)).digest('hex');
  const keys = [STAYER, ...Array.from({ length: CLIENTS }, (_, i) => i)].map((i) => `  - { id: k-${i}, sha256: ${sha(i)}, user: ${userOf(i)}, teams: [ops], costCenter: cc-9 }`);
  return `version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-drill, baseUrl: "${anthropic.url}", timeoutMs: 30000 }
  openai: { kind: openai, apiKey: sk-drill, baseUrl: "${openai.url}", timeoutMs: 30000 }
egress: { allow: ["127.0.0.1"] }
models:
  anthropic/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
tiers:
  claude: [anthropic/claude-sonnet-4-5]
  gpt: [openai/gpt-5-mini]
defaultTier: claude
apiKeys:
${keys.join('\n')}
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week }
    limit: { tokens: 1000000000 }
  - id: team-monthly
    scope: team
    window: { calendar: month }
    limit: { usd: 1000000 }
`;
}

interface Client {
  i: number;
  /** Node's fetch reported the request's body sent (undici's `undici:request:bodySent`). */
  sent?: boolean;
  kind: Transport;
  tier: Tier;
  prompt: string;
  leaveMs: number;
  /** When it actually left, in ms after it began sending (its timer can fire late on a busy machine). */
  leftAfterMs?: number;
  /** How the client's own request ended: it left (aborted), or an answer arrived before it could leave. */
  ended?: 'left' | 'answered';
}

/** Decision events the gateway wrote to its event log. */
function readEvents(file: string): Record<string, unknown>[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, 'utf8');
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((e) => e.event === 'tollgate.decision');
}

const inFlight = (f: FakeProviderServer) => f.counts.received - f.counts.completed - f.counts.aborted;

/** Waits until no upstream request is open and the event log has not grown for `quietMs`. */
async function settle(fakes: FakeProviderServer[], events: string, quietMs = 1500, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = -1;
  let since = Date.now();
  for (;;) {
    const n = readEvents(events).length;
    const open = fakes.reduce((s, f) => s + inFlight(f), 0);
    if (n !== last || open > 0) {
      last = n;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    if (Date.now() > end) throw new Error(`not settled after ${timeoutMs} ms: ${open} upstream requests open`);
    await sleep(100);
  }
}

/** Per budget, in ledger units (tokens, micro-dollars). */
type Sums = Map<string, number>;
const add = (m: Sums, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
const show = (m: Sums) => [...m].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
const same = (a: Sums, b: Sums) => [...new Set([...a.keys(), ...b.keys()])].every((k) => (a.get(k) ?? 0) === (b.get(k) ?? 0));

async function myBudgets(base: string, key: string): Promise<BudgetView[]> {
  const session = await openMcpSession(base, key);
  const res = await fetch(`${base}/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'my_budget', arguments: {} } }),
  });
  const body = (await res.json()) as { result?: { structuredContent?: { budgets?: BudgetView[] } } };
  const budgets = body.result?.structuredContent?.budgets;
  if (!budgets) throw new Error(`my_budget answered ${JSON.stringify(body).slice(0, 200)}`);
  return budgets;
}

/** The gateway's longest event-loop stall since the previous scrape of its /metrics, in seconds. */
async function loopStall(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('tollgate_event_loop_stall_seconds '));
  if (!line) throw new Error('the gateway reports no tollgate_event_loop_stall_seconds');
  return Number(line.split(' ')[1]);
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

/** Clients (by the index in their key) whose request Node's fetch has sent in full, body included. */
const sentInFull = new Set<number>();
subscribe('undici:request:bodySent', (message) => {
  const { request } = message as { request: { headers?: unknown } };
  const key = /drill-key-(\d+)/.exec(JSON.stringify(request.headers ?? ''));
  if (key) sentInFull.add(Number(key[1]));
});

async function run(n: number): Promise<boolean> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-disconnect-'));
  const [anthropic, openai] = await Promise.all([startFakeAnthropic(), startFakeOpenAI()]);
  for (const f of [anthropic, openai]) {
    f.setLatency(LATENCY);
    f.setWordDelay(Number(values['word-ms']));
    f.setEndDelay(Number(values['end-ms']));
  }
  const policyFile = join(dir, 'policy.yaml');
  const events = join(dir, 'events.jsonl');
  const dataDir = join(dir, 'data');
  writeFileSync(policyFile, policy(anthropic, openai));
  const g = await startChild(['src/cli.ts', 'serve', '--port', '0', '--policy', policyFile, '--events', events, '--data-dir', dataDir, '--no-watch'], { TOLLGATE_LOG_LEVEL: 'error' }, /serving MCP at (\S+)\/mcp/, 'stderr');
  const base = g.match[1]!;
  try {
    // The leavers: every transport in turn, both upstreams, each leaving 1-50 ms after it sent.
    const clients: Client[] = Array.from({ length: CLIENTS }, (_, i) => ({
      i,
      kind: TRANSPORTS[i % TRANSPORTS.length]!,
      tier: (Math.floor(i / TRANSPORTS.length) % 2 === 0 ? 'claude' : 'gpt') as Tier,
      prompt: `drill ${n}-${i} ${randomUUID().slice(0, 8)} summarise the incident`,
      leaveMs: LEAVE_MIN + Math.floor(Math.random() * (LEAVE_MAX - LEAVE_MIN + 1)),
    }));
    // An MCP client opens its session first; leaving is about the call.
    const sessions = new Map<number, string>();
    for (const c of clients) if (c.kind.startsWith('mcp')) sessions.set(c.i, await openMcpSession(base, keyOf(c.i)));
    const spread = Number(values['spread-ms']);
    sentInFull.clear();
    // The gateway's longest event-loop stall while the leavers call (the scrape before starts the
    // window): a stall, such as a module loaded midway, delays every hang-up and timer the calls depend on.
    await loopStall(base);
    await Promise.all(
      clients.map(async (c) => {
        await sleep(Math.random() * spread);
        const ac = new AbortController();
        const began = performance.now();
        const timer = setTimeout(() => {
          c.leftAfterMs = Math.round(performance.now() - began);
          ac.abort();
        }, c.leaveMs);
        try {
          await send(c.kind, { base, token: keyOf(c.i), tier: c.tier, prompt: c.prompt, maxTokens: MAX_TOKENS, session: sessions.get(c.i), signal: ac.signal });
          c.ended = 'answered';
        } catch {
          c.ended = 'left';
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    const stall = await loopStall(base);
    await settle([anthropic, openai], events);
    const leaverEvents = readEvents(events).length;
    for (const c of clients) c.sent = sentInFull.has(c.i);

    // Per client: its upstream request (matched by prompt) and its decision event (by user).
    const upstream = [...anthropic.requests, ...openai.requests];
    const promptOf = (body: unknown): string => JSON.stringify(body ?? '');
    const eventsByUser = new Map<string, Record<string, unknown>[]>();
    for (const e of readEvents(events)) eventsByUser.set(String(e['user.id']), [...(eventsByUser.get(String(e['user.id'])) ?? []), e]);
    const perKind = new Map<Transport, { clients: number; sent: number; reached: number; aborted: number; completed: number; events: number; charged: number }>();
    /** Clients whose provider had begun answering (sent its head), by how their call was recorded. */
    const finished = { success: 0, cancelledCharged: 0, cancelledUncharged: 0, other: 0 };
    const uncharged: string[] = [];
    /** Leavers whose request was sent in full and who have no decision event: a call lost. */
    const unrecorded: string[] = [];
    for (const c of clients) {
      const row = perKind.get(c.kind) ?? { clients: 0, sent: 0, reached: 0, aborted: 0, completed: 0, events: 0, charged: 0 };
      row.clients += 1;
      const req = upstream.find((r) => promptOf(r.body).includes(c.prompt));
      const mine = eventsByUser.get(userOf(c.i)) ?? [];
      row.events += mine.length;
      if (c.sent) row.sent += 1;
      if (c.sent && mine.length === 0) unrecorded.push(`${c.kind} ${c.tier} left at ${c.leftAfterMs ?? '-'} ms (${c.ended}), upstream request ${req ? (req.aborted ? 'aborted' : 'received') : 'never made'}`);
      const charged = mine.some((e) => ((e['tollgate.charged'] as { amount: number }[] | undefined) ?? []).some((l) => l.amount > 0));
      if (charged) row.charged += 1;
      if (req) {
        row.reached += 1;
        if (req.aborted) row.aborted += 1;
        if (req.completed) row.completed += 1;
        if (req.answered) {
          const e = mine[0];
          if (e?.outcome === 'success') finished.success += 1;
          else if (e?.['error.code'] === 'CANCELLED') {
            finished[charged ? 'cancelledCharged' : 'cancelledUncharged'] += 1;
            if (!charged) uncharged.push(`${c.kind} ${c.tier} left at ${c.leftAfterMs ?? '-'} ms (timer set for ${c.leaveMs}), upstream ${String(e['tollgate.upstream_ms'])} ms, attempts ${JSON.stringify(e['tollgate.attempts'])}`);
          }
          else finished.other += 1;
        }
      }
      perKind.set(c.kind, row);
    }
    const counts = { received: anthropic.counts.received + openai.counts.received, aborted: anthropic.counts.aborted + openai.counts.aborted, completed: anthropic.counts.completed + openai.counts.completed };
    const abortedPct = counts.received === 0 ? 100 : (100 * counts.aborted) / counts.received;

    // Stayers: one call per transport that waits for its answer, so the ledger holds real charges.
    for (const f of [anthropic, openai]) {
      f.setLatency(50);
      f.setEndDelay(0);
    }
    let stayed = 0;
    for (const [i, kind] of TRANSPORTS.entries()) {
      const session = kind.startsWith('mcp') ? await openMcpSession(base, keyOf(STAYER)) : undefined;
      const a = await send(kind, { base, token: keyOf(STAYER), tier: i % 2 === 0 ? 'claude' : 'gpt', prompt: `stayer ${n}-${i} summarise the incident`, maxTokens: MAX_TOKENS, session });
      if (a.status === 200) stayed += 1;
    }
    await settle([anthropic, openai], events);
    // The store's counters: every caller's user budget, and the team budget they share (once).
    const budgets: BudgetView[] = [];
    for (const i of [STAYER, ...clients.map((c) => c.i)]) {
      const mine = await myBudgets(base, keyOf(i));
      budgets.push(...mine.filter((b) => b.scope === 'user' || i === STAYER));
    }
    g.child.kill('SIGTERM');
    await exited(g.child);

    // The ledger three ways: the journal's charges, the events' charges, the store's counters.
    const all = readEvents(events);
    const fromEvents: Sums = new Map();
    for (const e of all) for (const c of (e['tollgate.charged'] as { budget: string; amount: number }[] | undefined) ?? []) add(fromEvents, c.budget, c.amount);
    const entries: JournalEntry[] = segmentFiles(dataDir).flatMap((f) => readSegment(f).entries);
    const chain = verifyChain(entries, { head: readHead(dataDir) });
    const fromJournal: Sums = new Map();
    for (const e of entries) if (e.body.kind === 'settle' || e.body.kind === 'recover') for (const l of e.body.lines ?? []) add(fromJournal, l.budgetId, l.amount);
    const fromStore: Sums = new Map();
    for (const b of budgets) add(fromStore, b.id, toLedger(b.unit, b.used));
    const reserved = budgets.reduce((s, b) => s + b.reserved, 0);
    const ledgerOk = same(fromEvents, fromJournal) && same(fromJournal, fromStore) && !chain && reserved === 0;

    const outcomes = new Map<string, number>();
    for (const e of all.slice(0, leaverEvents)) {
      const key = `${String(e.outcome)}${e['error.code'] ? ` ${String(e['error.code'])}` : ''}`;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }
    const left = clients.filter((c) => c.ended === 'left').length;
    const ok = (!TARGET || abortedPct >= 99) && finished.cancelledUncharged === 0 && unrecorded.length === 0 && ledgerOk && stayed === TRANSPORTS.length;
    const out = process.stdout;
    out.write(`run ${n}: ${CLIENTS} clients (${left} left, ${CLIENTS - left} answered first), leaving after ${LEAVE_MIN}-${LEAVE_MAX} ms; upstream latency ${LATENCY} ms, ${values['word-ms']} ms a word, ${values['end-ms']} ms before the end\n`);
    const verdict = !TARGET ? ' (no target: clients may stay past the answer)' : abortedPct >= 99 ? '' : '  BELOW 99 %';
    out.write(`  upstream: ${counts.received} requests received, ${counts.aborted} aborted, ${counts.completed} answered to the end: ${abortedPct.toFixed(2)} % aborted${verdict}\n`);
    for (const [kind, r] of perKind) {
      out.write(`    ${kind.padEnd(17)} ${r.clients} clients: ${r.sent} sent in full, ${r.reached} reached the provider, ${r.aborted} aborted there, ${r.completed} answered to the end; ${r.events} events, ${r.charged} charged\n`);
    }
    out.write(`  provider had begun answering: ${finished.success} recorded served, ${finished.cancelledCharged} CANCELLED and charged, ${finished.cancelledUncharged} CANCELLED with nothing charged${finished.cancelledUncharged ? '  FAIL' : ''}${finished.other ? `, ${finished.other} other` : ''}\n`);
    for (const u of uncharged) out.write(`    ${u}\n`);
    out.write(`  the gateway's longest event-loop stall while the leavers called: ${(stall * 1000).toFixed(0)} ms\n`);
    out.write(`  decision events for the leavers: ${leaverEvents} (${[...outcomes].map(([k, v]) => `${v} ${k}`).join(', ')})\n`);
    const unsent = clients.filter((c) => !c.sent);
    out.write(`  leavers whose request was sent in full: ${CLIENTS - unsent.length}, without a decision event: ${unrecorded.length}${unrecorded.length ? '  FAIL' : ''}; left before it was: ${unsent.length} (${unsent.filter((c) => eventsByUser.has(userOf(c.i))).length} of them recorded all the same)\n`);
    for (const u of unrecorded) out.write(`    ${u}\n`);
    out.write(`  stayers answered: ${stayed}/${TRANSPORTS.length}\n`);
    out.write(`  ledger: journal ${show(fromJournal)}; events ${show(fromEvents)}; store ${show(fromStore)}; reserved ${reserved}; chain ${chain ? `broken at ${chain.seq}: ${chain.reason}` : 'ok'}  ${ledgerOk ? 'EQUAL' : 'MISMATCH'}\n`);
    if (values.keep) out.write(`  kept ${dir}\n`);
    return ok;
  } finally {
    killChildren();
    await Promise.all([anthropic.close(), openai.close()]);
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
}

let failed = 0;
for (let n = 1; n <= RUNS; n++) if (!(await run(n))) failed += 1;
process.stdout.write(
  `${RUNS - failed}/${RUNS} runs kept every promise (${TARGET ? '99 % of upstream calls aborted, ' : ''}no call its provider had begun answering left uncharged, the ledger equal to the events)\n`,
);
process.exit(failed ? 1 : 0);
