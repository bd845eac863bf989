/**
 * Disk-full drill: `tollgate serve` on the embedded store with its journal on a small tmpfs that
 * fills up under calls, then gets room again; the gateway is stopped, checked and started again:
 *   - every call is answered 200 or refused 503 QUOTA_STORE_UNAVAILABLE, none 500;
 *   - once there is room, every call has its decision event (the refusals' too) in the event log;
 *   - `tollgate audit verify` passes on the journal, and the next start opens it.
 *
 *   sudo npm run drill:diskfull -- [--calls 200] [--size-kb 256]
 *
 * Needs root (it mounts and unmounts the tmpfs) and a built dist/ (npm run build). Prints what it
 * saw and exits 1 if a promise is broken.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { killChildren, sleep, startChild } from './common.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '200' },
    'size-kb': { type: 'string', default: '256' },
  },
});
const CALLS = Number(values.calls);
const SIZE_KB = Number(values['size-kb']);
const CLI = resolve('dist/src/cli.js');

function mount(dir: string, sizeKb: number, remount = false): void {
  execFileSync('mount', ['-t', 'tmpfs', '-o', `${remount ? 'remount,' : ''}size=${sizeKb}k`, 'tmpfs', dir]);
}

async function serve(dataDir: string, events: string) {
  const { child, match } = await startChild([CLI, 'serve', '--port', '0', '--data-dir', dataDir, '--events', events], { TOLLGATE_LOG_LEVEL: 'warn' }, /serving MCP at (\S+)\/mcp/, 'stderr');
  return { child, url: match[1]! };
}

async function stop(child: ChildProcess): Promise<number | null> {
  child.kill('SIGTERM');
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

function eventLines(file: string): Record<string, unknown>[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the disk-full drill mounts a tmpfs: run it as root');
  if (!existsSync(CLI)) throw new Error('no dist/: run npm run build first');
  const work = mkdtempSync(join(tmpdir(), 'tollgate-diskfull-'));
  const disk = join(work, 'disk');
  mkdirSync(disk);
  mount(disk, SIZE_KB);
  const events = join(work, 'events.jsonl');
  const dataDir = join(disk, 'data');
  let broken = false;
  try {
    const first = await serve(dataDir, events);
    const codes = new Map<string, number>();
    for (let i = 0; i < CALLS; i++) {
      const r = await fetch(`${first.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer tg-demo-alice', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: `call ${i}` }], max_tokens: 16 }),
      });
      const body = (await r.json()) as { error?: { code?: string } };
      const key = r.status === 200 ? '200' : `${r.status} ${body.error?.code ?? '?'}`;
      codes.set(key, (codes.get(key) ?? 0) + 1);
    }
    const whileFull = eventLines(events).length;
    mount(disk, SIZE_KB * 8, true);
    // Kept entries are tried again every second.
    let after = 0;
    for (let t = 0; t < 50 && after < CALLS; t++) {
      await sleep(100);
      after = eventLines(events).length;
    }
    const code = await stop(first.child);
    const audit = (() => {
      try {
        return { ok: true, text: execFileSync(process.execPath, [CLI, 'audit', 'verify', '--data-dir', dataDir], { encoding: 'utf8' }).split('\n')[0]! };
      } catch (err) {
        return { ok: false, text: String((err as { stdout?: string }).stdout ?? err).split('\n').slice(0, 3).join(' ') };
      }
    })();
    const second = await serve(dataDir, events);
    await stop(second.child);
    const refused = eventLines(events).filter((e) => e['error.code'] === 'QUOTA_STORE_UNAVAILABLE').length;
    const answers = [...codes].map(([k, n]) => `${n} ${k}`).join(', ');
    process.stdout.write(`${CALLS} calls on a ${SIZE_KB} KB tmpfs: ${answers}\n`);
    process.stdout.write(`events: ${whileFull} while full, ${after} once there was room (${refused} refusals QUOTA_STORE_UNAVAILABLE)\n`);
    process.stdout.write(`shutdown exit code ${code}; audit: ${audit.text}; the next start opened the journal\n`);
    const other = [...codes.keys()].filter((k) => k !== '200' && k !== '503 QUOTA_STORE_UNAVAILABLE');
    if (other.length > 0) broken = true;
    if (after !== CALLS || !audit.ok || code !== 0) broken = true;
  } finally {
    killChildren('SIGKILL');
    await sleep(200);
    try {
      execFileSync('umount', [disk]);
    } catch {
      // a child still holding a file: the tmpfs goes at reboot
    }
    rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(broken ? 'a promise was broken\n' : 'every promise kept\n');
  process.exit(broken ? 1 : 0);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  killChildren('SIGKILL');
  process.exit(2);
});
