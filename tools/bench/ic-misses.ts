/**
 * Inline-cache misses per call of the whole gateway over HTTP: a built gateway (`dist/`) serves the
 * OpenAI-compatible endpoint from the zero-delay fake OpenAI server with the HTTP benchmark's policy
 * (as tools/bench/callgrind-http.ts does), under `node --log-ic`. V8 logs an IC event whenever an
 * inline cache changes state or, once megamorphic, misses the stub cache and asks the runtime: on a
 * steady path that is one runtime call each. The tool counts the events logged after the warm-up
 * (by the log's own clock, which starts with the process) per measured call, and lists where they
 * happen (issue 21: objects given a hidden class each, see test/unit/hidden-classes.test.ts).
 *
 *   npx tsx tools/bench/ic-misses.ts [--dist dist] [--warmup 2000] [--calls 3000] [--stream]
 *     [--redis redis://127.0.0.1:6391] [--top 25]
 *
 * The log slows the gateway several times over: the counts are what it is for, not its times.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { driveChat, gatewayEnv, httpBenchPolicy, killChildren, runBench, servingUrl, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    dist: { type: 'string', default: 'dist' },
    warmup: { type: 'string', default: '2000' },
    calls: { type: 'string', default: '3000' },
    stream: { type: 'boolean', default: false },
    redis: { type: 'string' },
    top: { type: 'string', default: '25' },
  },
});
const WARMUP = Number(values.warmup);
const CALLS = Number(values.calls);
const TOP = Number(values.top);
for (const [name, n] of [['--warmup', WARMUP], ['--calls', CALLS], ['--top', TOP]] as const) {
  if (!(Number.isSafeInteger(n) && n >= (name === '--calls' ? 1 : 0))) throw new Error(`${name} takes a whole number, got ${String(n)}`);
}
const KEY = 'tg-ic-key';

interface Code {
  start: number;
  end: number;
  name: string;
}

/** The code object holding `pc` (code objects sorted by start). */
function codeAt(codes: Code[], pc: number): Code | undefined {
  let lo = 0;
  let hi = codes.length - 1;
  let best: Code | undefined;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (codes[mid]!.start <= pc) {
      best = codes[mid];
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return best && pc < best.end ? best : undefined;
}

/** Where a code object's function lives: a package, a file of this repo's build, or a Node module. */
function placeOf(name: string): string {
  const m = /(node_modules\/(?:@[^/]+\/)?[^/:]+|src\/[^ :]+|node:[^ :]+)/.exec(name);
  return m ? m[1]! : name.slice(0, 40);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-ic-'));
  const log = join(dir, 'v8.log');
  try {
    const fake = await startChild(['tools/fake-providers/main.ts'], {}, /openai\s+(http\S+)/, 'stdout');
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, httpBenchPolicy(fake.match[1]!, KEY));
    const args = ['--log-ic', `--logfile=${log}`, '--no-logfile-per-isolate', resolve(values.dist, 'src/cli.js'), 'serve', '--port', '0', '--policy', policyFile];
    if (values.redis) args.push('--redis', values.redis);
    const env = gatewayEnv(dir, `tgic:${process.pid}:`, values.redis);
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const url = await servingUrl(child);
    await driveChat(url, KEY, WARMUP, 16, values.stream);
    // The log's times are microseconds since the gateway's logger started, about when it was spawned.
    const from = Number(process.hrtime.bigint() - started) / 1000;
    await driveChat(url, KEY, CALLS, 16, values.stream);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));

    const codes: Code[] = [];
    const events: { pc: number; site: string }[] = [];
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      if (line.startsWith('code-creation,')) {
        const f = line.split(',');
        const start = parseInt(f[4]!, 16);
        codes.push({ start, end: start + Number(f[5]), name: f.slice(6).join(',') });
      } else if (/^[A-Za-z]*IC,/.test(line)) {
        // type, pc, time, line, column, old state, new state, map, key
        const f = line.split(',');
        if (Number(f[2]) < from) continue;
        events.push({ pc: parseInt(f[1]!, 16), site: `${f[0]} ${f[5]}->${f[6]} line ${f[3]}:${f[4]} .${f[8]}` });
      }
    }
    codes.sort((a, b) => a.start - b.start);
    const byPlace = new Map<string, number>();
    const bySite = new Map<string, number>();
    for (const e of events) {
      const code = codeAt(codes, e.pc);
      const place = code ? placeOf(code.name) : '(unknown code)';
      byPlace.set(place, (byPlace.get(place) ?? 0) + 1);
      const site = `${place} ${e.site}`;
      bySite.set(site, (bySite.get(site) ?? 0) + 1);
    }
    const perCall = (n: number) => (n / CALLS).toFixed(2).padStart(7);
    process.stdout.write(`${values.dist} on ${values.redis ? 'Redis' : 'the memory store'}, ${values.stream ? 'streamed' : 'plain'}: ${WARMUP} warm-up calls, then ${CALLS} measured\n`);
    process.stdout.write(`IC events per measured call: ${(events.length / CALLS).toFixed(1)}\n\nby place (per call)\n`);
    for (const [place, n] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, TOP)) process.stdout.write(`${perCall(n)}  ${place}\n`);
    process.stdout.write(`\nby site (per call)\n`);
    for (const [site, n] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, TOP)) process.stdout.write(`${perCall(n)}  ${site}\n`);
  } finally {
    killChildren();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench('ic-misses', main, () => killChildren('SIGKILL'));
