/**
 * Instructions per call of the whole gateway over HTTP, under callgrind: a built gateway (`dist/`,
 * as deployed) serves the OpenAI-compatible endpoint from the zero-delay fake OpenAI server (or,
 * with `--api anthropic`, from the fake Anthropic server through an Anthropic provider), with
 * the HTTP benchmark's policy (three budgets, one CEL rule, decision events to a file), on the
 * memory store or on Redis. valgrind starts with instrumentation off; after the warm-up calls it is
 * switched on for the measured calls alone, then the count is dumped. Instruction counts do not
 * move with the machine's load as CPU time does (two runs of one build agree within about 1 %), so
 * two builds can be compared on a busy machine; `--single-threaded` keeps V8's compiler and GC on
 * the main thread, in the count.
 *
 *   npx tsx tools/bench/callgrind-http.ts [--dist dist] [--redis redis://127.0.0.1:6391] [--warmup 3000]
 *     [--calls 600] [--concurrency 32] [--keep DIR] [--openai-client sdk|direct]
 *     [--api openai|anthropic] [--anthropic-client sdk|direct] [--stream]
 *
 * Give each run a Redis of its own (its keys are flushed under a prefix of the run's own, but
 * another client's commands would share the server). --keep copies callgrind's output to DIR, for
 * `callgrind_annotate --inclusive=no DIR/callgrind.out.*` (JavaScript shows as unnamed addresses;
 * V8's C++ and the builtins are named). Needs valgrind (Debian's `valgrind` package).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { driveChat, gatewayEnv, httpBenchPolicy, killChildren, runBench, servingUrl, sleep, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    dist: { type: 'string', default: 'dist' },
    redis: { type: 'string' },
    warmup: { type: 'string', default: '3000' },
    calls: { type: 'string', default: '600' },
    concurrency: { type: 'string', default: '32' },
    keep: { type: 'string' },
    /** The OpenAI provider's `client` in the policy (sdk or direct); the policy's default when not given. */
    'openai-client': { type: 'string' },
    /** Which provider serves the calls: the fake OpenAI server (default) or the fake Anthropic one. */
    api: { type: 'string', default: 'openai' },
    /** The Anthropic provider's `client` in the policy (sdk or direct), with --api anthropic; the policy's default when not given. */
    'anthropic-client': { type: 'string' },
    /** Streamed calls (`stream: true` with the usage chunk) instead of plain ones. */
    stream: { type: 'boolean', default: false },
  },
});
const WARMUP = Number(values.warmup);
const CALLS = Number(values.calls);
const CONCURRENCY = Number(values.concurrency);
for (const [name, n] of [['--warmup', WARMUP], ['--calls', CALLS], ['--concurrency', CONCURRENCY]] as const) {
  if (!(Number.isSafeInteger(n) && n >= (name === '--warmup' ? 0 : 1))) throw new Error(`${name} takes a whole number${name === '--warmup' ? '' : ' of at least 1'}, got ${String(n)}`);
}
if (values.api !== 'openai' && values.api !== 'anthropic') throw new Error(`--api takes openai or anthropic, got ${values.api}`);
if (values['anthropic-client'] && values.api !== 'anthropic') throw new Error('--anthropic-client goes with --api anthropic');
const KEY = 'tg-callgrind-key';

function control(pid: number, ...args: string[]): void {
  const r = spawnSync('callgrind_control', [...args, String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`callgrind_control ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
}

async function main(): Promise<void> {
  if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed (apt-get install valgrind)');
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-callgrind-http-'));
  let gateway: ChildProcess | undefined;
  try {
    const fake = await startChild(['tools/fake-providers/main.ts'], {}, /anthropic\s+(http\S+)\s+openai\s+(http\S+)/, 'stdout');
    const policyFile = join(dir, 'policy.yaml');
    const anthropic = values.api === 'anthropic' ? { url: fake.match[1]!, client: values['anthropic-client'] } : undefined;
    writeFileSync(policyFile, httpBenchPolicy(fake.match[2]!, KEY, { client: values['openai-client'], anthropic }));
    const out = join(dir, 'callgrind.out');
    const cli = resolve(values.dist, 'src/cli.js');
    const args = ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`, process.execPath, '--single-threaded', cli, 'serve', '--port', '0', '--policy', policyFile];
    if (values.redis) args.push('--redis', values.redis);
    // Under valgrind every command's answer is slow to be read: not an outage.
    const env = gatewayEnv(dir, `tgcg:${process.pid}:`, values.redis, { TOLLGATE_STORE_TIMEOUT_MS: '120000' });
    const child = spawn('valgrind', args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    gateway = child;
    const url = await servingUrl(child);
    const client = values.api === 'anthropic' ? values['anthropic-client'] : values['openai-client'];
    process.stdout.write(`${values.dist}, ${values.api}${client ? ` (client ${client})` : ''} on ${values.redis ? `Redis (${values.redis})` : 'the memory store'}: ${WARMUP} warm-up ${values.stream ? 'streamed ' : ''}calls, then ${CALLS} measured, ${CONCURRENCY} at a time\n`);
    await driveChat(url, KEY, WARMUP, CONCURRENCY, values.stream);
    await sleep(1000);
    control(child.pid!, '-i', 'on');
    const t = Date.now();
    await driveChat(url, KEY, CALLS, CONCURRENCY, values.stream);
    // Settlements after the answer (settleBeforeReply: false) belong to the measured calls.
    await sleep(2000);
    control(child.pid!, '-d');
    control(child.pid!, '-i', 'off');
    const wall = Date.now() - t;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    const dumps = readdirSync(dir).filter((f) => f.startsWith('callgrind.out.'));
    let total = 0;
    for (const f of dumps) {
      const m = /^summary:\s+(\d+)/m.exec(readFileSync(join(dir, f), 'utf8'));
      if (m) total += Number(m[1]);
    }
    if (total === 0) throw new Error('callgrind dumped no count');
    if (values.keep) {
      mkdirSync(values.keep, { recursive: true });
      for (const f of dumps) copyFileSync(join(dir, f), join(values.keep, f));
    }
    process.stdout.write(`measured ${CALLS} calls in ${wall} ms under valgrind\ninstructions per call: ${Math.round(total / CALLS)}\n`);
  } finally {
    // A call that fails leaves the gateway serving under valgrind; it is not one of common.ts's children.
    if (gateway && gateway.exitCode === null && gateway.signalCode === null) gateway.kill('SIGKILL');
    killChildren();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench('callgrind-http', main, () => killChildren('SIGKILL'));
