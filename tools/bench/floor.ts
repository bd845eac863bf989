/**
 * The benchmark's reference points on a provider wire: Debian's nginx as a plain reverse proxy (the
 * floor a proxy in front of the provider cannot beat) and Portkey's open-source gateway (a peer),
 * each started by the benchmark in front of the same fake provider server, and stopped with it.
 * nginx runs from a configuration of its own in a temporary directory: it reads nothing under
 * /etc/nginx and leaves the system's service alone.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { children, freePort, sleep, startChild } from './common.js';

export interface FloorServer {
  /** The base URL an OpenAI client would use (ends in /v1). */
  baseUrl: string;
  pid: number;
  /** Headers the server needs on every call besides the key. */
  headers: Record<string, string>;
}

export const NGINX = process.env.NGINX_BIN ?? '/usr/sbin/nginx';

/**
 * nginx with one worker (one core's worth, like each Node target), kept-alive connections to the
 * fake, no buffering of streamed answers, no access log. `upstream` is the fake's origin.
 */
function nginxConfig(dir: string, port: number, upstream: URL): string {
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `${user}daemon off;
master_process on;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  upstream fake { server ${upstream.host}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 4m;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`;
}

/** Starts nginx in `dir` (its config, pid file, logs and temp files) and resolves once it answers. */
export async function startNginx(dir: string, upstreamBaseUrl: string): Promise<FloorServer | undefined> {
  if (!existsSync(NGINX)) return undefined;
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConfig(dir, port, new URL(upstreamBaseUrl)));
  // -e: the error log before the config is read (otherwise nginx opens the system's own log).
  const child = spawn(NGINX, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const base = `http://127.0.0.1:${port}/v1`;
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${stderr}`);
    const up = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.body?.cancel().then(() => true), () => false);
    if (up) return { baseUrl: base, pid: child.pid!, headers: {} };
    await sleep(100);
  }
  throw new Error(`nginx did not answer on port ${port}: ${stderr}`);
}

/** Where the peer gateway is installed: a package of its own, so its dependencies stay out of tollgate's tree. */
export const PEER_DIR = join(dirname(fileURLToPath(import.meta.url)), 'peer');

/**
 * Portkey's gateway from its npm package (pinned in tools/bench/peer), headless, routing every call
 * to the fake as a custom host of the given provider (`x-portkey-provider`, `x-portkey-custom-host`;
 * loopback is on its default list of trusted custom hosts). `upstreamBaseUrl` ends in /v1 on both
 * wires: Portkey puts its provider's endpoint (`/chat/completions`, `/messages`) after it.
 * Undefined when that package is not installed.
 */
export async function startPortkey(upstreamBaseUrl: string, provider: 'openai' | 'anthropic' = 'openai'): Promise<FloorServer | undefined> {
  let entry: string;
  try {
    const pkg = createRequire(join(PEER_DIR, 'package.json')).resolve('@portkey-ai/gateway/package.json');
    entry = join(pkg, '..', 'build', 'start-server.js');
  } catch {
    return undefined;
  }
  const port = await freePort();
  const p = await startChild([entry, `--port=${port}`, '--headless'], { NODE_ENV: 'production' }, /Ready for connections/, 'stdout');
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    pid: p.child.pid!,
    headers: { 'x-portkey-provider': provider, 'x-portkey-custom-host': upstreamBaseUrl },
  };
}
