/**
 * Where a process's memory is, every 5 s, as JSON lines: a preload for the soak's gateway
 * (issue 21), to tell the JS heap from V8's other spaces and from memory outside V8.
 *
 *   MEMLOG_DIR=<dir> npm run bench -- --targets memory --sequential 0 --seconds 0 --soak 600 \
 *     --clients 8 '--node-options=--max-old-space-size=256 --require ./tools/bench/memlog.cjs'
 *
 * Writes `memlog-<pid>.jsonl` in MEMLOG_DIR (default: the working directory), one line every 5 s:
 * seconds since start, RSS and its anonymous and file-backed parts (/proc/self/status), V8's heap
 * committed and used, `external` and `arrayBuffers`, and each heap space as used/committed MB.
 * RSS anonymous minus heap committed minus external is what neither V8's heap nor the buffers it
 * knows of hold (malloc'd memory of Node and its libraries). MEMLOG_SNAPSHOTS=300,540 also writes
 * a heap snapshot at those seconds (it stops the process for seconds and raises RSS: not for a
 * measured run). CommonJS so that plain `node` preloads it into the built gateway.
 */
'use strict';
const { appendFileSync, readFileSync } = require('node:fs');
const { join } = require('node:path');
const { getHeapSpaceStatistics, writeHeapSnapshot } = require('node:v8');

const dir = process.env.MEMLOG_DIR || process.cwd();
const file = join(dir, `memlog-${process.pid}.jsonl`);
const snapshots = (process.env.MEMLOG_SNAPSHOTS || '').split(',').filter(Boolean).map(Number);
const t0 = Date.now();
const mb = (bytes) => Math.round(bytes / 104857.6) / 10;

function status(field, text) {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(text);
  return m ? mb(Number(m[1]) * 1024) : undefined;
}

function write(extra) {
  const m = process.memoryUsage();
  const st = readFileSync('/proc/self/status', 'utf8');
  const spaces = {};
  for (const s of getHeapSpaceStatistics()) spaces[s.space_name.replace(/_space$/, '')] = `${mb(s.space_used_size)}/${mb(s.space_size)}`;
  const line = {
    t: Math.round((Date.now() - t0) / 1000),
    rss: mb(m.rss),
    rssAnon: status('RssAnon', st),
    rssFile: status('RssFile', st),
    heapTotal: mb(m.heapTotal),
    heapUsed: mb(m.heapUsed),
    external: mb(m.external),
    arrayBuffers: mb(m.arrayBuffers),
    spaces,
    ...extra,
  };
  appendFileSync(file, `${JSON.stringify(line)}\n`);
}

setInterval(() => {
  write();
  while (snapshots.length > 0 && (Date.now() - t0) / 1000 >= snapshots[0]) {
    const at = snapshots.shift();
    write({ snapshot: writeHeapSnapshot(join(dir, `memlog-${process.pid}-${at}.heapsnapshot`)) });
  }
}, 5000).unref();
