/**
 * How long `npm start` takes to serve (issue 18 item 10): the time from running it to the line
 * "serving MCP at", on a clean checkout (no dist/: a full build) and again with nothing changed
 * (tools/build-if-changed.mjs finds dist/ up to date and skips the compiler), over several rounds, each with the CPU time its
 * processes had used when it served. Then the build step alone,
 * with nothing changed, under /usr/bin/time: its CPU time (user + sys) is steadier than wall time
 * on a shared machine.
 *
 *   npm run bench:start [-- --rounds 3]
 *
 * It deletes and rebuilds this checkout's dist/. Each start serves on a free port with no data
 * directory, in a process group of its own, ended with SIGTERM once it serves.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);

/**
 * CPU seconds (user + sys) the processes of group `pgid` have used, with the children they have
 * reaped (so the finished build step counts), from /proc/<pid>/stat (clock ticks of 1/100 s).
 */
function groupCpuSeconds(pgid: number): number {
  let ticks = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after the command name (which may hold spaces) start at field 3.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) !== pgid) continue;
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return ticks / 100;
}

interface Start {
  wallMs: number;
  cpuS: number;
}

/** Runs `npm start` until it serves; returns the wall time to serving and the CPU its processes used. */
function startToServing(): Promise<Start> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('npm', ['start', '--silent', '--', '--port', '0', '--data-dir', 'none', '--no-watch'], {
      env: { ...process.env, TOLLGATE_LOG_LEVEL: 'error' },
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    let stderr = '';
    let served: Start | undefined;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (!served && stderr.includes('serving MCP at')) {
        served = { wallMs: performance.now() - t0, cpuS: groupCpuSeconds(child.pid!) };
        process.kill(-child.pid!, 'SIGTERM');
      }
    });
    child.on('error', reject);
    child.on('exit', () => (served ? resolve(served) : reject(new Error(`npm start did not serve:\n${stderr}`))));
  });
}

/** `npm run build` with nothing to do: wall and CPU seconds as /usr/bin/time reports them. */
function upToDateBuild(): string {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', 'npm', 'run', 'build', '--silent'], { encoding: 'utf8' });
  const [wall, user, sys] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) as [number, number, number];
  return `${wall.toFixed(2)} s wall, ${(user + sys).toFixed(2)} s CPU`;
}

const s = (r: Start) => `${(r.wallMs / 1000).toFixed(2)} s (${r.cpuS.toFixed(2)} s CPU)`;
for (let i = 1; i <= rounds; i++) {
  rmSync('dist', { recursive: true, force: true });
  const cold = await startToServing();
  const second = await startToServing();
  const third = await startToServing();
  console.log(`round ${i}: npm start to serving: clean dist/ ${s(cold)}, second start ${s(second)}, third ${s(third)}; build with nothing changed: ${upToDateBuild()}`);
}
