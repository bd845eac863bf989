/**
 * The fetch the Anthropic and OpenAI SDKs are given (undici `request` underneath) must behave like
 * fetch where the SDKs and adapters look: status, headers, streamed bodies, no redirects, and the
 * errors fetch raises on abort and on a connection cut mid-body.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestFetch } from '../../src/providers/fetchSdk.js';

describe('requestFetch', () => {
  let server: Server;
  let base: string;
  const seen: { method?: string; headers: IncomingMessage['headers']; body: string }[] = [];
  /** The `/stream` answer in progress: its first chunk is out, the second waits for `more()`. */
  let streaming: { more(): void; closed: Promise<void> } | undefined;
  /** Resolves when `/hang` has a request it will never answer. */
  let hung!: () => void;
  const hanging = new Promise<void>((resolve) => (hung = resolve));
  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
    '/json': (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-multi', ['a', 'b']);
      res.end('{"ok":true}');
    },
    '/redirect': (_req, res) => {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' });
      res.end();
    },
    '/empty': (_req, res) => {
      res.writeHead(204);
      res.end();
    },
    '/stream': (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: one\n\n');
      streaming = { more: () => res.end('data: two\n\n'), closed: new Promise((resolve) => res.once('close', () => resolve())) };
    },
    '/cut': (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // Cut once the first chunk has gone out.
      res.write('data: one\n\n', () => res.socket?.destroy());
    },
    '/hang': () => hung(),
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        seen.push({ method: req.method, headers: req.headers, body });
        routes[req.url ?? '']!(req, res);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const f = requestFetch();

  it('sends method, headers and body, and answers status, headers and body', async () => {
    const headers = new Headers({ 'content-type': 'application/json', authorization: 'Bearer k' });
    const res = await f(`${base}/json`, { method: 'POST', headers, body: '{"q":1}' });
    expect(res.status).toBe(200);
    expect(res.ok).toBe(true);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-multi')).toBe('a, b');
    expect(await res.json()).toEqual({ ok: true });
    expect(seen.at(-1)).toMatchObject({ method: 'POST', body: '{"q":1}', headers: { authorization: 'Bearer k', 'content-type': 'application/json' } });
  });

  it('does not follow a redirect', async () => {
    const res = await f(`${base}/redirect`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('http://169.254.169.254/latest/meta-data');
  });

  it('answers a 204 with no body', async () => {
    const res = await f(`${base}/empty`, { method: 'DELETE' });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
  });

  it('streams a body as it arrives', async () => {
    const res = await f(`${base}/stream`);
    const reader = res.body!.getReader();
    // The first chunk reads while the server still holds back the second.
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('data: one\n\n');
    streaming!.more();
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    expect(rest).toBe('data: two\n\n');
  });

  it('lets the reader cancel a body mid-stream while the server is still sending', async () => {
    const res = await f(`${base}/stream`);
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('data: one\n\n');
    await reader.cancel();
    // The server sends its second chunk after the cancel and ends; nothing may throw when it does.
    streaming!.more();
    await streaming!.closed;
    expect(await reader.read()).toEqual({ done: true, value: undefined });
  });

  it('fails a body cut mid-stream with TypeError("terminated"), as fetch does', async () => {
    const res = await f(`${base}/cut`);
    const err = await res.text().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toBe('terminated');
  });

  it('rejects with the abort reason when aborted before the answer', async () => {
    const controller = new AbortController();
    const pending = f(`${base}/hang`, { signal: controller.signal });
    await hanging; // the server has the request and will not answer
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('rejects with TypeError("fetch failed") when nothing listens', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const err = await f(`http://127.0.0.1:${port}/`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toBe('fetch failed');
    expect((err as Error & { cause: { code: string } }).cause.code).toBe('ECONNREFUSED');
  });
});
