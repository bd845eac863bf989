/**
 * The console overview's server time with a month of data (issue 20 item 6): 1,000 users x 30 days,
 * one call per user per day, written through the gateway itself (in process, demo provider, a clock
 * set to each day) into an embedded journal; then the function the overview route runs (read the
 * rollups of the month, build the breakdowns, render the page) timed over several runs.
 *
 *   npm run bench:console [-- --users 1000 --days 30 --runs 7]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { overview, rangeOf } from '../../src/console/data.js';
import { overviewPage } from '../../src/console/pages.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { FileJournal } from '../../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';

const { values } = parseArgs({ options: { users: { type: 'string', default: '1000' }, days: { type: 'string', default: '30' }, runs: { type: 'string', default: '7' } } });
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
const dir = join(work, 'data');
try {
  const { journal, replay } = FileJournal.open({ dir, now: clock });
  const store = new MemoryQuotaStore(clock, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  const runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), { policy: parsePolicy(policy, 'bench.yaml'), store, sink: memorySink(), now: clock });
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

  const src = { gateway: runtime.gateway, keyPrefix: 'tollgate:', dataDir: dir, now: clock };
  const viewer = { user: 'bench', role: 'read-only' as const, csrf: 'x' };
  const wall: number[] = [];
  const cpu: number[] = [];
  let bytes = 0;
  for (let r = 0; r < runs; r++) {
    const c0 = process.cpuUsage();
    const w0 = process.hrtime.bigint();
    const page = overviewPage(viewer, await overview(src, rangeOf('month', clock())));
    wall.push(Number(process.hrtime.bigint() - w0) / 1e6);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    bytes = page.length;
  }
  const stat = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return { median: s[Math.floor(s.length / 2)]!, p95: s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)]! };
  };
  const w = stat(wall);
  const c = stat(cpu);
  process.stdout.write(`overview (month, ${users} users x ${days} days, embedded journal), ${runs} runs, page ${bytes} chars\n`);
  process.stdout.write(`  wall ms: median ${w.median.toFixed(1)}  p95 ${w.p95.toFixed(1)}\n`);
  process.stdout.write(`  CPU ms (user+sys): median ${c.median.toFixed(1)}  p95 ${c.p95.toFixed(1)}\n`);
  process.stdout.write(`  under 300 ms (median wall): ${w.median < 300 ? 'yes' : 'no'}\n`);
  await runtime.close();
} finally {
  rmSync(work, { recursive: true, force: true });
}
