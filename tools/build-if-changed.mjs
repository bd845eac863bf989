// `npm start`'s build step (issue 18 item 10): runs `tsc -b tsconfig.build.json` only when a source
// may have changed since the last build, so a second start goes straight to serving. Even with
// nothing to do, tsc -b costs about a second of CPU to load the compiler and compare its build
// info; this compares modification times instead (tens of milliseconds). It is plain JavaScript so
// that nothing has to be compiled or loaded first.
//
// A build is due when dist/.tsbuildinfo or dist/src/cli.js is missing, or when a file or directory
// under src/ (a directory's time changes when a file in it is added, removed or renamed), a
// tsconfig, package.json or package-lock.json is newer than dist/.tsbuildinfo. After a build the
// build info's time is set to now, also when tsc found nothing to compile (it then leaves the file
// alone), so the next start does not ask it again. The check errs only towards building.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const BUILD_INFO = 'dist/.tsbuildinfo';

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The newest modification time of `dir` and everything under it. */
function newestUnder(dir) {
  let newest = mtime(dir) ?? 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestUnder(path) : (mtime(path) ?? 0));
  }
  return newest;
}

const built = mtime(BUILD_INFO);
const inputs = Math.max(newestUnder('src'), ...['tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json'].map((f) => mtime(f) ?? 0));
if (built === undefined || mtime('dist/src/cli.js') === undefined || inputs > built) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const started = new Date();
  const r = spawnSync(process.execPath, [tsc, '-b', 'tsconfig.build.json'], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
  // The time the inputs were found up to date, not later: a file saved during the build is built next time.
  utimesSync(BUILD_INFO, started, started);
}
