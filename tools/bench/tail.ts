/**
 * Where the sequential p99 goes (issue 21: "sequential p99 overhead over nginx of at most 1.5 ms").
 * Calls are sent one at a time, as the wire benchmark's sequential phase sends them, to the fake
 * OpenAI server directly and to tollgate in front of it (memory store, the benchmark's policy),
 * in alternating blocks. Beside them a probe process does nothing but wake every millisecond and
 * note each wake-up that came more than `--gap-ms` late: what the machine's scheduler does to a
 * process that asks for no CPU. The report says, for each target, how many calls were slower than
 * its median by `--gap-ms` or more, and how many of those overlapped one of the probe's late
 * wake-ups. For tollgate it also reads the decision events: in how many slow calls the time was
 * inside tollgate's span (`tollgate.latency_ms`, from the request's arrival to its event) rather
 * than on the way in or out, and in how many of those it was in the upstream leg
 * (`tollgate.upstream_ms`, from the dispatch to the answer read, within 1 ms of the latency).
 *
 *   npx tsx tools/bench/tail.ts [--calls 4000] [--blocks 3] [--gap-ms 3]
 *
 * Uses this checkout's dist/ (npm run build first). Prints figures; asserts nothing.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { httpBenchPolicy, killChildren, medianOf, pct, runBench, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '4000' },
    blocks: { type: 'string', default: '3' },
    'gap-ms': { type: 'string', default: '3' },
    warmup: { type: 'string', default: '2000' },
  },
});
const CALLS = Number(values.calls);
const BLOCKS = Number(values.blocks);
const GAP_MS = Number(values['gap-ms']);
const WARMUP = Number(values.warmup);
const KEY = 'tg-bench-tail';

/** The probe: a 1 ms interval; each late wake-up printed as `<epoch ms at the previous one> <gap ms>`. */
const PROBE = `
const { performance } = require('node:perf_hooks');
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  if (now - last > ${GAP_MS} + 1) process.stdout.write((performance.timeOrigin + last).toFixed(2) + ' ' + (now - last - 1).toFixed(2) + '\\n');
  last = now;
}, 1);
process.stdout.write('probing\\n');`;

interface Call {
  /** Epoch ms when it was sent. */
  at: number;
  ms: number;
  requestId?: string;
}

interface Gap {
  at: number;
  ms: number;
}

/** Not one of common.ts's children (it is no server): stopped here, whatever ends the run. */
let probe: ChildProcess | undefined;

runBench('tail', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-tail-'));
  try {
    const fakes = await startChild(['tools/fake-providers/main.ts'], {}, /anthropic\s+(http\S+)\s+openai\s+(http\S+)/, 'stdout');
    const openaiUrl = fakes.match[2]!;
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, httpBenchPolicy(openaiUrl, KEY));
    const events = join(dir, 'events.jsonl');
    const env = { TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: events, TOLLGATE_DATA_DIR: join(dir, 'data'), REDIS_URL: '', REDIS_CLUSTER_NODES: '' };
    const gateway = await startChild(['dist/src/cli.js', 'serve', '--port', '0', '--policy', policy], env, /serving MCP at (\S+)\/mcp/, 'stderr');
    const targets = { upstream: openaiUrl.replace(/\/v1$/, ''), tollgate: gateway.match[1]! };

    probe = spawn(process.execPath, ['-e', PROBE], { stdio: ['ignore', 'pipe', 'inherit'] });
    const gaps: Gap[] = [];
    let pending = '';
    await new Promise<void>((ready) =>
      probe!.stdout!.on('data', (d: Buffer) => {
        pending += d.toString();
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const line of lines) {
          if (line === 'probing') ready();
          else {
            const [at, ms] = line.split(' ');
            gaps.push({ at: Number(at), ms: Number(ms) });
          }
        }
      }),
    );

    const agent = new Agent({ connections: 1, keepAliveTimeout: 30_000 });
    const body = JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'Say hello to the bench.' }] });
    const send = async (base: string): Promise<Call> => {
      const start = performance.now();
      const res = await request(`${base}/v1/chat/completions`, { method: 'POST', dispatcher: agent, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body });
      await res.body.text();
      const ms = performance.now() - start;
      if (res.statusCode !== 200) throw new Error(`${base} answered ${res.statusCode}`);
      const id = res.headers['x-request-id'];
      return { at: performance.timeOrigin + start, ms, requestId: typeof id === 'string' ? id : undefined };
    };
    for (const base of Object.values(targets)) for (let i = 0; i < WARMUP; i++) await send(base);

    const calls: Record<string, Call[]> = { upstream: [], tollgate: [] };
    const windows: Record<string, number> = { upstream: 0, tollgate: 0 };
    const gapsIn: Record<string, Gap[]> = { upstream: [], tollgate: [] };
    for (let block = 0; block < BLOCKS; block++) {
      for (const [name, base] of Object.entries(targets)) {
        const from = performance.timeOrigin + performance.now();
        for (let i = 0; i < CALLS; i++) calls[name]!.push(await send(base));
        const to = performance.timeOrigin + performance.now();
        await new Promise((r) => setTimeout(r, 50)); // the probe's last lines
        windows[name]! += (to - from) / 1000;
        gapsIn[name]!.push(...gaps.filter((g) => g.at >= from && g.at <= to));
      }
    }
    probe.kill();
    probe = undefined;

    // The decision events of tollgate's calls, by request id (written after the answer: wait for the last).
    await new Promise((r) => setTimeout(r, 500));
    const byId = new Map<string, { latency: number; upstream: number }>();
    for (const line of readFileSync(events, 'utf8').split('\n')) {
      if (!line) continue;
      const e = JSON.parse(line) as Record<string, unknown>;
      if (typeof e['request.id'] === 'string') byId.set(e['request.id'], { latency: Number(e['tollgate.latency_ms']), upstream: Number(e['tollgate.upstream_ms']) });
    }

    const out = [
      `sequential calls, ${BLOCKS} blocks of ${CALLS} per target; slow = slower than the median by ${GAP_MS} ms or more; ` +
        `a probe gap = the idle probe woke more than ${GAP_MS} ms late`,
      'target      p50 ms  p99 ms  slow calls  slow /s  probe gaps /s  slow calls during a probe gap  where tollgate\'s slow calls spent the time (its events)',
    ];
    for (const name of Object.keys(targets)) {
      const all = calls[name]!;
      const ms = all.map((c) => c.ms).sort((a, b) => a - b);
      const p50 = medianOf(ms);
      const slow = all.filter((c) => c.ms >= p50 + GAP_MS);
      const duringGap = slow.filter((c) => gapsIn[name]!.some((g) => g.at <= c.at + c.ms && g.at + g.ms + 1 >= c.at)).length;
      let upstream = 'n/a';
      if (name === 'tollgate') {
        const known = slow.map((c) => (c.requestId ? byId.get(c.requestId) : undefined)).filter((e) => e !== undefined);
        // Event times are whole milliseconds: a slow call's time counts as inside tollgate's span when
        // the event's latency holds most of it, and as the upstream's when upstream_ms holds that.
        const inside = known.filter((e) => e.latency >= p50 + GAP_MS - 1);
        upstream = `${inside.length} of ${known.length} inside tollgate's span, ${inside.filter((e) => e.upstream >= e.latency - 1).length} of those in the upstream leg`;
      }
      out.push(
        `${name.padEnd(10)} ${p50.toFixed(2).padStart(6)} ${pct(ms, 99).toFixed(2).padStart(7)} ${String(slow.length).padStart(11)} ` +
          `${(slow.length / windows[name]!).toFixed(1).padStart(8)} ${(gapsIn[name]!.length / windows[name]!).toFixed(1).padStart(14)} ` +
          `${`${duringGap} of ${slow.length}`.padStart(30)}  ${upstream}`,
      );
    }
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    probe?.kill();
    killChildren();
    rmSync(dir, { recursive: true, force: true });
  }
}, () => {
  probe?.kill();
  killChildren();
});
