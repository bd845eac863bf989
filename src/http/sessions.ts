/**
 * MCP sessions on the streamable HTTP transport: one Server and transport pair per session, bound
 * to the principal that opened it. Sessions never expire by themselves in the SDK, so idle ones
 * are swept and their number is capped.
 */
import { randomUUID } from 'node:crypto';
import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

export interface Session {
  id: string;
  /** Who opened the session; later requests must come from the same caller. */
  owner: string;
  transport: StreamableHTTPServerTransport;
  server: Server;
  lastSeen: number;
}

export interface SessionTableOptions {
  maxSessions: number;
  idleMs: number;
  now?: () => number;
}

export class SessionTable {
  private readonly sessions = new Map<string, Session>();
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;

  constructor(private readonly opts: SessionTableOptions) {
    this.now = opts.now ?? Date.now;
    this.timer = setInterval(() => void this.sweep(), Math.min(60_000, Math.max(1000, opts.idleMs / 2)));
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  get(id: string): Session | undefined {
    const s = this.sessions.get(id);
    if (s) s.lastSeen = this.now();
    return s;
  }

  /** Opens a session, or returns undefined when the table is full even after sweeping idle ones. */
  async open(owner: string, makeServer: () => Server): Promise<Session | undefined> {
    if (this.sessions.size >= this.opts.maxSessions) await this.sweep();
    if (this.sessions.size >= this.opts.maxSessions) return undefined;
    const server = makeServer();
    const session: Session = { id: '', owner, server, lastSeen: this.now(), transport: undefined as unknown as StreamableHTTPServerTransport };
    session.transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        session.id = id;
        this.sessions.set(id, session);
      },
      onsessionclosed: (id) => {
        this.sessions.delete(id);
      },
    });
    session.transport.onclose = () => {
      if (session.id) this.sessions.delete(session.id);
    };
    await server.connect(session.transport);
    return session;
  }

  /** Closes sessions idle for longer than idleMs. */
  async sweep(): Promise<void> {
    const cutoff = this.now() - this.opts.idleMs;
    const idle = [...this.sessions.values()].filter((s) => s.lastSeen < cutoff);
    for (const s of idle) {
      this.sessions.delete(s.id);
      await s.server.close().catch(() => undefined);
    }
  }

  async closeAll(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map((s) => s.server.close().catch(() => undefined)));
  }
}
