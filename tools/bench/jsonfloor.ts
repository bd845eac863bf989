/**
 * The floor under a large prompt's CPU a call for any gateway that reads the caller's JSON and
 * sends a request of its own: parsing the body, serialising the request again and encoding it to
 * UTF-8, timed in this process on the wire bench's prose prompt (`prosePrompt`, as `npm run bench
 * -- --prompt-chars N` sends it). Nothing of tollgate runs here: it is what the 200 KB target of
 * issue 21 (1 ms of CPU a call) leaves for everything else on a machine.
 *
 *   npx tsx tools/bench/jsonfloor.ts [--chars 200000] [--runs 9] [--calls 300]
 *
 * Prints, for each step, the median of --runs runs of --calls calls, in ms of CPU a call.
 */
import { parseArgs } from 'node:util';
import { prosePrompt } from './common.js';

const { values } = parseArgs({ options: { chars: { type: 'string', default: '200000' }, runs: { type: 'string', default: '9' }, calls: { type: 'string', default: '300' } } });
const CHARS = Number(values.chars);
const RUNS = Number(values.runs);
const CALLS = Number(values.calls);

const body = JSON.stringify({ model: 'standard', max_tokens: 64, messages: [{ role: 'user', content: prosePrompt(CHARS) }] });
const request = JSON.parse(body) as unknown;

/** Each step alone; `sink` keeps V8 from dropping a result nobody reads. */
let sink = 0;
const steps: Record<string, () => void> = {
  'JSON.parse of the body': () => {
    sink += (JSON.parse(body) as { max_tokens: number }).max_tokens;
  },
  'JSON.stringify of the request': () => {
    sink += JSON.stringify(request).length;
  },
  'UTF-8 encoding (Buffer.from)': () => {
    sink += Buffer.from(body).length;
  },
  'all three, as one call does them': () => {
    sink += Buffer.from(JSON.stringify(JSON.parse(body))).length;
  },
};

function cpuMsPerCall(step: () => void): number {
  const start = process.cpuUsage();
  for (let i = 0; i < CALLS; i++) step();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000 / CALLS;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const times = new Map<string, number[]>(Object.keys(steps).map((name) => [name, []]));
for (const step of Object.values(steps)) cpuMsPerCall(step); // warm-up
// Interleaved, so that the machine's speed moves every step alike.
for (let run = 0; run < RUNS; run++) for (const [name, step] of Object.entries(steps)) times.get(name)!.push(cpuMsPerCall(step));

process.stdout.write(`body: ${body.length} characters (${Buffer.byteLength(body)} bytes); node ${process.version}; median of ${RUNS} runs of ${CALLS} calls\n`);
for (const [name, ms] of times) process.stdout.write(`${name.padEnd(36)} ${median(ms).toFixed(3)} ms a call (runs ${Math.min(...ms).toFixed(3)} to ${Math.max(...ms).toFixed(3)})\n`);
if (sink === -1) process.stdout.write('\n');
