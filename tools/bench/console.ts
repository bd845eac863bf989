/**
 * The console overview's server time with a month of data (issue 20 item 6): 1,000 users x 30 days,
 * one call per user per day, written through the gateway itself (in process, demo provider, a clock
 * set to each day) into an embedded journal, or with --redis into Redis under a key prefix of its
 * own (deleted at the end); then the function the overview route runs (read the rollups of the
 * month, build the breakdowns, render the page) timed over several runs, with its parts: reading
 * the rollups, and rendering the page from the figures.
 *
 * On the embedded journal it also times the first view of a process, which rolls up the journal's
 * ended segments: after a restart (their rollups saved beside them, `rollups/`), and with none saved.
 *
 *   npm run bench:console [-- --users 1000 --days 30 --runs 7] [--data-dir DIR] [--redis redis://127.0.0.1:6379]
 *
 * --data-dir keeps the journal written in DIR, and reads it again instead of writing when DIR
 * already holds one (the same data for runs of different code).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { findDecision, overview, rangeOf, refusals, rollupsIn, type ConsoleSources } from '../../src/console/data.js';
import { overviewPage } from '../../src/console/pages.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { RedisQuotaStore } from '../../src/quota/redis.js';
import { deleteKeys } from '../../test/helpers/redis.js';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '1000' },
    days: { type: 'string', default: '30' },
    runs: { type: 'string', default: '7' },
    'data-dir': { type: 'string' },
    redis: { type: 'string' },
  },
});
const users = Number(values.users);
const days = Number(values.days);
const runs = Number(values.runs);
const DAY = 86_400_000;
const policy = `
version: 1
providers:
  demo: { kind: demo }
tiers:
  premium: [demo/large]
  standard: [demo/medium]
defaultTier: standard
budgets:
  - { id: user-monthly, scope: user, window: { calendar: month }, limit: { tokens: 100000000 } }
  - { id: team-usd, scope: team, window: { calendar: month }, limit: { usd: 1000000 } }
`;

const end = Date.UTC(2026, 10, 30, 12); // the last day written; the month window is November 2026
let t = end - (days - 1) * DAY;
const clock = () => t;
const work = mkdtempSync(join(tmpdir(), 'tollgate-bench-console-'));
const dir = values['data-dir'] ?? join(work, 'data');
const prefix = `tgbench-console:${randomBytes(4).toString('hex')}:`;

async function write(runtime: Runtime): Promise<void> {
  const principals: Principal[] = Array.from({ length: users }, (_, i) => ({ user: `user-${i}`, teams: [`team-${i % 40}`], costCenter: `cc-${i % 8}`, groups: [], roles: [], authMethod: 'api_key' }));
  const written = process.hrtime.bigint();
  for (let d = 0; d < days; d++) {
    t = end - (days - 1 - d) * DAY;
    for (let i = 0; i < users; i++) {
      const tier = (i + d) % 3 === 0 ? 'premium' : 'standard';
      await runtime.gateway.complete({ principal: principals[i]!, transport: 'cli', request: { messages: [{ role: 'user', content: `question ${d} from ${i}` }], maxTokens: 20, tier } });
    }
    process.stderr.write(`day ${d + 1}/${days} written\n`);
  }
  await runtime.gateway.idle();
  process.stdout.write(`wrote ${users * days} calls in ${Number(process.hrtime.bigint() - written) / 1e9} s\n`);
}

/** Wall and CPU ms of one run of `fn`. */
async function timed<T>(fn: () => Promise<T>): Promise<{ wall: number; cpu: number; value: T }> {
  const c0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  const value = await fn();
  const wall = Number(process.hrtime.bigint() - w0) / 1e6;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000, value };
}

const stat = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${s[Math.floor(s.length / 2)]!.toFixed(1)}  p95 ${s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)]!.toFixed(1)}`;
};

try {
  let runtime: Runtime;
  let reuse = false;
  if (values.redis) {
    const store = new RedisQuotaStore({ url: values.redis, prefix, now: clock });
    runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent', TOLLGATE_KEY_PREFIX: prefix }), { policy: parsePolicy(policy, 'bench.yaml'), store, sink: memorySink(), now: clock });
  } else {
    reuse = existsSync(join(dir, 'journal.jsonl'));
    const { journal, replay } = FileJournal.open({ dir, now: clock });
    const store = new MemoryQuotaStore(clock, journal);
    store.restore(replay);
    journal.snapshotSource = () => store.snapshot();
    runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), { policy: parsePolicy(policy, 'bench.yaml'), store, sink: memorySink(), now: clock });
  }
  if (reuse) {
    t = end;
    process.stdout.write(`read the journal already in ${dir}\n`);
  } else await write(runtime);

  const where = values.redis ? 'Redis' : 'embedded journal';
  const sources = (): ConsoleSources => ({ gateway: runtime.gateway, keyPrefix: values.redis ? prefix : 'tollgate:', dataDir: values.redis ? undefined : dir, now: clock });
  const viewer = { user: 'bench', role: 'read-only' as const, csrf: 'x' };
  const range = rangeOf('month', clock());
  const view = (src: ConsoleSources) => async () => overviewPage(viewer, await overview(src, range));
  if (!values.redis) {
    rmSync(join(dir, 'rollups'), { recursive: true, force: true });
    const none = await timed(view(sources()));
    const saved = await timed(view(sources()));
    process.stdout.write(`first view of a process (month, ${users} users x ${days} days, ${where}):\n`);
    process.stdout.write(`  no rollups saved: wall ${none.wall.toFixed(1)} ms, CPU ${none.cpu.toFixed(1)} ms\n`);
    process.stdout.write(`  rollups saved (a restart): wall ${saved.wall.toFixed(1)} ms, CPU ${saved.cpu.toFixed(1)} ms\n`);
  }
  // Between two measured views one more call is made (today's rollups change, as they do under
  // traffic): what was kept of today is read again, the other days are not.
  const caller: Principal = { user: 'user-0', teams: ['team-0'], costCenter: 'cc-0', groups: [], roles: [], authMethod: 'api_key' };
  let lastId = '';
  const oneCall = async () => {
    lastId = (await runtime.gateway.complete({ principal: caller, transport: 'cli', request: { messages: [{ role: 'user', content: 'one more' }], maxTokens: 20 } })).requestId;
    await runtime.gateway.idle();
  };
  const src = sources();
  const first = await timed(view(src));
  const all = { wall: [] as number[], cpu: [] as number[] };
  const cold = { wall: [] as number[], cpu: [] as number[] };
  const read = { wall: [] as number[], cpu: [] as number[] };
  const whole = { wall: [] as number[], cpu: [] as number[] };
  const render = { wall: [] as number[], cpu: [] as number[] };
  const push = (to: { wall: number[]; cpu: number[] }, m: { wall: number; cpu: number }) => {
    to.wall.push(m.wall);
    to.cpu.push(m.cpu);
  };
  let bytes = 0;
  let rows = 0;
  let readWhole = 0;
  for (let r = 0; r < runs; r++) {
    await oneCall();
    const a = await timed(view(src));
    push(all, a);
    bytes = a.value.length;
    readWhole = src.redisRollups?.lastReadWhole ?? 0;
    if (values.redis) {
      // The first view of a process: nothing kept, every hash of the month read whole.
      push(cold, await timed(view(sources())));
      const store = runtime.gateway.store as RedisQuotaStore;
      push(whole, await timed(() => store.rollups(range.start, '2026-11-30')));
    }
    await oneCall();
    const b = await timed(() => rollupsIn(src, range));
    push(read, b);
    rows = b.value.length;
    const figures = await overview(src, range);
    push(render, await timed(async () => overviewPage(viewer, figures)));
  }
  process.stdout.write(`overview (month, ${users} users x ${days} days, ${where}, ${rows} rollup rows), ${runs} runs, page ${bytes} chars\n`);
  process.stdout.write(`  whole view, one call since the last  wall ms: ${stat(all.wall)}   CPU ms (user+sys): ${stat(all.cpu)}\n`);
  if (values.redis) {
    process.stdout.write(`    (hashes read whole: ${readWhole} of ${days}; the others kept, checked by version)\n`);
    process.stdout.write(`  whole view, nothing kept (a new RedisRollups each run) wall ms: ${stat(cold.wall)}   CPU ms (user+sys): ${stat(cold.cpu)}\n`);
    process.stdout.write(`  the very first view of this process (nothing kept, nothing compiled yet): wall ${first.wall.toFixed(1)} ms, CPU ${first.cpu.toFixed(1)} ms\n`);
    process.stdout.write(`  read every hash whole (store.rollups, as usage report --redis) wall ms: ${stat(whole.wall)}   CPU ms: ${stat(whole.cpu)}\n`);
  }
  process.stdout.write(`  read rollups, one call since the last wall ms: ${stat(read.wall)}   CPU ms: ${stat(read.cpu)}\n`);
  process.stdout.write(`  render page  wall ms: ${stat(render.wall)}   CPU ms: ${stat(render.cpu)}\n`);
  // The refusals page's figures (and a refused request's lookup): the first read is a pass over the
  // whole journal, later ones read what was written since.
  const refusalsSrc = sources();
  const firstRefusals = await timed(() => refusals(refusalsSrc, range));
  const nextRefusals = { wall: [] as number[], cpu: [] as number[] };
  for (let r = 0; r < runs; r++) {
    await oneCall();
    push(nextRefusals, await timed(() => refusals(refusalsSrc, range)));
  }
  // A request's page: the decision of a served call (not a refusal), found by id.
  const lookupSrc = sources();
  await oneCall();
  const firstLookup = await timed(() => findDecision(lookupSrc, lastId));
  const nextLookup = { wall: [] as number[], cpu: [] as number[] };
  for (let r = 0; r < runs; r++) {
    await oneCall();
    const m = await timed(() => findDecision(lookupSrc, lastId));
    if (m.value?.event['request.id'] !== lastId) throw new Error('the request was not found');
    push(nextLookup, m);
  }
  process.stdout.write(`  request page lookup, first of a new reader wall ${firstLookup.wall.toFixed(1)} ms, CPU ${firstLookup.cpu.toFixed(1)} ms\n`);
  process.stdout.write(`  request page lookup, one call since the last wall ms: ${stat(nextLookup.wall)}   CPU ms: ${stat(nextLookup.cpu)}\n`);
  process.stdout.write(`  refusals, first read of a new reader (Redis: a pass over the stream; embedded: saved rollups and the current segment) wall ${firstRefusals.wall.toFixed(1)} ms, CPU ${firstRefusals.cpu.toFixed(1)} ms\n`);
  process.stdout.write(`  refusals, one call since the last   wall ms: ${stat(nextRefusals.wall)}   CPU ms: ${stat(nextRefusals.cpu)}\n`);
  process.stdout.write(`  under 300 ms (median wall of the whole view): ${[...all.wall].sort((a, b) => a - b)[Math.floor(runs / 2)]! < 300 ? 'yes' : 'no'}\n`);
  await runtime.close();
} finally {
  if (values.redis) await deleteKeys(values.redis, prefix);
  rmSync(work, { recursive: true, force: true });
}
