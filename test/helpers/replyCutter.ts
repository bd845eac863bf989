import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a Redis that can lose one reply: `cutNextReply()` lets the next command
 * through to Redis (which runs it) and then closes the client's connection instead of passing
 * Redis's answer back, as a connection dropped at the worst moment would. Everything else passes
 * through untouched, and the client may connect again.
 */
export interface ReplyCutter {
  url: string;
  cutNextReply(): void;
  /** How many replies were cut. */
  cut: number;
  close(): Promise<void>;
}

export async function startReplyCutter(target: { host: string; port: number }): Promise<ReplyCutter> {
  let armed = false;
  const sockets = new Set<Socket>();
  const cutter = { cut: 0 } as ReplyCutter;
  const server: Server = createServer((client) => {
    const upstream = connect(target);
    sockets.add(client).add(upstream);
    let waitingForReply = false;
    client.on('data', (chunk) => {
      if (armed) {
        armed = false;
        waitingForReply = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (waitingForReply) {
        cutter.cut += 1;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  cutter.url = `redis://127.0.0.1:${port}`;
  cutter.cutNextReply = () => {
    armed = true;
  };
  cutter.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return cutter;
}
