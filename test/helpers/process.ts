/**
 * A tollgate server in its own process, as a replica runs in production: `tollgate serve` on a
 * free port, its decision events in a file the test reads back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface GatewayProcess {
  mcpUrl: string;
  child: ChildProcess;
  /** What the process wrote to stderr so far (its log lines). */
  stderr(): string;
  events(): Record<string, unknown>[];
  /**
   * Resolves with the decision events once the file holds at least `count` of them (the gateway
   * writes a call's event after its answer), or rejects after `timeoutMs` saying how many it holds.
   */
  eventsWhen(count: number, timeoutMs?: number): Promise<Record<string, unknown>[]>;
  stop(): Promise<void>;
  /** Ends the process at once, as a crash would: no settle, no release. */
  kill(): Promise<void>;
}

export async function spawnGateway(opts: {
  policyFile: string;
  eventsFile: string;
  env?: Record<string, string>;
  args?: string[];
  /** How long it may take to serve (default 20 s; a --workers gateway on a loaded machine takes longer). */
  startTimeoutMs?: number;
}): Promise<GatewayProcess> {
  const args = ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--policy', opts.policyFile, '--events', opts.eventsFile, ...(opts.args ?? [])];
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '', TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_DATA_DIR: `${opts.eventsFile}.data`, ...opts.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const mcpUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Not left behind: a gateway that never said it serves is no one's to stop (its workers exit with it).
      child.kill('SIGKILL');
      reject(new Error(`gateway did not start:\n${stderr}`));
    }, opts.startTimeoutMs ?? 20_000);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /serving MCP at (\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}:\n${stderr}`));
    });
  });
  const events = () => {
    let text = '';
    try {
      text = readFileSync(opts.eventsFile, 'utf8');
    } catch {
      return [];
    }
    // Only whole lines: the gateway may be halfway through writing the last one.
    return text
      .slice(0, text.lastIndexOf('\n') + 1)
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e.event === 'tollgate.decision');
  };
  const exited = () => (child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r())));
  return {
    mcpUrl,
    child,
    stderr: () => stderr,
    events,
    async eventsWhen(count, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = events();
        if (found.length >= count) return found;
        if (Date.now() > deadline) throw new Error(`${found.length} of ${count} decision events in ${opts.eventsFile} after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async stop() {
      child.kill('SIGTERM');
      await exited();
    },
    async kill() {
      child.kill('SIGKILL');
      await exited();
    },
  };
}

/**
 * The fields of /proc/<pid>/stat after the command name (Linux): [0] is the state, [1] the parent
 * pid, [11] and [12] the user and system CPU time in clock ticks.
 */
export function procStat(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The pids of a process's children (Linux /proc): a cluster primary's workers, say. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (Number(procStat(Number(entry))[1]) === pid) out.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}
