/**
 * What the event log file costs per event: the synchronous writer the file sink uses now (each line
 * in the file when `emit` returns, so a kill loses none) against the asynchronous one it used
 * (sonic-boom buffering lines while a write is in flight). Writes --events lines of about 1.4 KB
 * (a decision event's size) in one burst, as many calls settling at once do, --rounds times each,
 * alternating, and prints CPU and wall microseconds per event, median of the rounds.
 *
 *   npm run bench:eventsink -- [--events 50000] [--rounds 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';

const { values } = parseArgs({ options: { events: { type: 'string', default: '50000' }, rounds: { type: 'string', default: '3' } } });
const EVENTS = Number(values.events);
const ROUNDS = Number(values.rounds);
const line = `${JSON.stringify({ level: 30, event: 'tollgate.decision', reason: 'x'.repeat(1400) })}\n`;
const dir = mkdtempSync(join(tmpdir(), 'tollgate-eventsink-'));

async function round(sync: boolean, n: number): Promise<{ cpu: number; wall: number }> {
  const dest = pino.destination({ dest: join(dir, `events-${sync}-${n}.jsonl`), sync, mkdir: true });
  if (!sync) await new Promise<void>((resolve) => dest.once('ready', () => resolve()));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < EVENTS; i++) dest.write(line);
  await new Promise<void>((resolve) => {
    dest.once('close', () => resolve());
    dest.end();
  });
  const c = process.cpuUsage(c0);
  return { cpu: (c.user + c.system) / EVENTS, wall: ((performance.now() - t0) * 1000) / EVENTS };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results = { sync: [] as { cpu: number; wall: number }[], async: [] as { cpu: number; wall: number }[] };
for (let r = 0; r < ROUNDS; r++) {
  results.async.push(await round(false, r));
  results.sync.push(await round(true, r));
}
rmSync(dir, { recursive: true, force: true });
for (const kind of ['sync', 'async'] as const) {
  const rs = results[kind];
  console.log(`${kind.padEnd(5)}  cpu ${median(rs.map((x) => x.cpu)).toFixed(2)} µs/event  wall ${median(rs.map((x) => x.wall)).toFixed(2)} µs/event  (${EVENTS} events of ${line.length} bytes, median of ${ROUNDS})`);
}
