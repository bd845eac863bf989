/**
 * A fake OpenFGA server speaking the Check API as the official SDK calls it:
 * POST /stores/{store_id}/check with {tuple_key, contextual_tuples, authorization_model_id?},
 * answering {allowed, resolution}. Grants are "user relation object" strings; every request body is kept.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeOpenFga {
  url: string;
  /** Bodies received, in order, with the store id from the path. */
  requests: { storeId: string; body: Record<string, unknown> }[];
  grant(user: string, relation: string, object: string): void;
  close(): Promise<void>;
}

export async function startFakeOpenFga(): Promise<FakeOpenFga> {
  const grants = new Set<string>();
  const requests: FakeOpenFga['requests'] = [];
  const server: Server = createServer((req, res) => {
    const m = /^\/stores\/([^/]+)\/check$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !m) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'undefined_endpoint', message: 'Not Found' }));
      return;
    }
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (raw += c));
    req.on('end', () => {
      const body = JSON.parse(raw) as { tuple_key: { user: string; relation: string; object: string } };
      requests.push({ storeId: decodeURIComponent(m[1]!), body });
      const { user, relation, object } = body.tuple_key;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ allowed: grants.has(`${user} ${relation} ${object}`), resolution: '' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    grant: (user, relation, object) => void grants.add(`${user} ${relation} ${object}`),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A loopback URL where nothing listens (a port that was just freed). */
export async function deadUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
