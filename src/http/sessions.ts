/**
 * MCP sessions on the streamable HTTP transport. A session is a small record (who opened it, when
 * it was last used, which of its requests are in flight), not a live SDK object: each HTTP request
 * is served by a fresh SDK Server and stateless transport, which costs about a microsecond, so ten
 * thousand idle agents cost a few MB rather than an SDK object graph each.
 *
 * Session ids are signed for the principal that opened them. With a secret shared between
 * processes (TOLLGATE_SESSION_SECRET, or the workers of one `--workers` gateway) any of them accepts
 * a session another one opened, so replicas need no sticky routing. Without one, the secret is
 * random per process and a session is only known where it was opened.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

/** Delivers a message to the SDK Server that is serving one in-flight request. */
export type Deliver = (msg: JSONRPCMessage) => void;

export interface Session {
  id: string;
  /** Who opened the session; later requests must come from the same caller. */
  owner: string;
  lastSeen: number;
  /** Requests of this session being served now, by JSON-RPC id, for notifications/cancelled. */
  inflight?: Map<string | number, Deliver>;
}

export interface SessionTableOptions {
  maxSessions: number;
  /**
   * Sessions one caller may hold. Opening one more ends that caller's least recently used idle
   * session, so an agent that never ends its sessions cannot fill the table for everyone else.
   */
  maxPerCaller?: number;
  idleMs: number;
  /** Key for signing session ids; processes that share it accept each other's sessions. */
  secret?: string;
  now?: () => number;
}

export type Lookup = { session: Session } | { error: 'not_found' | 'forbidden' };

const ID_PART = /^[A-Za-z0-9_-]{22}$/;
const MAX_ENDED = 100_000;

/** The reason of the cancellation a request in flight gets when its session is ended (DELETE). */
export const SESSION_ENDED = 'session ended';

export class SessionTable {
  private readonly sessions = new Map<string, Session>();
  /** The same sessions by owner, for the per-caller cap. */
  private readonly byOwner = new Map<string, Set<Session>>();
  /** Ids ended here (DELETE or idle), so a shared-secret table does not take them back. */
  private readonly ended = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly key: Buffer;
  /** Whether sessions opened elsewhere are accepted: only with a secret shared by configuration. */
  private readonly adopts: boolean;

  constructor(private readonly opts: SessionTableOptions) {
    this.now = opts.now ?? Date.now;
    this.key = opts.secret ? Buffer.from(opts.secret, 'utf8') : randomBytes(32);
    this.adopts = Boolean(opts.secret);
    this.timer = setInterval(() => this.sweep(), Math.min(60_000, Math.max(1000, opts.idleMs / 2)));
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  private sign(nonce: string, owner: string): string {
    return createHmac('sha256', this.key).update(`${nonce}\n${owner}`).digest('base64url').slice(0, 22);
  }

  /** Opens a session for `owner`, or returns undefined when the table is full even after sweeping. */
  open(owner: string): Session | undefined {
    if (!this.roomFor(owner)) return undefined;
    const nonce = randomBytes(16).toString('base64url');
    return this.add({ id: `${nonce}.${this.sign(nonce, owner)}`, owner, lastSeen: this.now() });
  }

  private add(session: Session): Session {
    this.sessions.set(session.id, session);
    let mine = this.byOwner.get(session.owner);
    if (!mine) this.byOwner.set(session.owner, (mine = new Set()));
    mine.add(session);
    return session;
  }

  private drop(s: Session): void {
    this.sessions.delete(s.id);
    const mine = this.byOwner.get(s.owner);
    mine?.delete(s);
    if (mine?.size === 0) this.byOwner.delete(s.owner);
  }

  /** The session `id` names, if it exists and belongs to `owner`. */
  lookup(id: string, owner: string): Lookup {
    const known = this.sessions.get(id);
    if (known) {
      if (known.owner !== owner) return { error: 'forbidden' };
      known.lastSeen = this.now();
      return { session: known };
    }
    if (!this.adopts || this.ended.has(id) || !this.verifies(id, owner) || !this.roomFor(owner)) return { error: 'not_found' };
    return { session: this.add({ id, owner, lastSeen: this.now() }) };
  }

  private verifies(id: string, owner: string): boolean {
    const dot = id.indexOf('.');
    const nonce = id.slice(0, dot);
    const mac = id.slice(dot + 1);
    if (dot < 0 || !ID_PART.test(nonce) || !ID_PART.test(mac)) return false;
    return timingSafeEqual(Buffer.from(mac), Buffer.from(this.sign(nonce, owner)));
  }

  /** Makes room for one more session of `owner`, if it can: false when none can be made. */
  private roomFor(owner: string): boolean {
    const mine = this.byOwner.get(owner);
    const cap = this.opts.maxPerCaller ?? Number.POSITIVE_INFINITY;
    if (mine && mine.size >= cap) {
      let oldest: Session | undefined;
      for (const s of mine) if (!s.inflight && (!oldest || s.lastSeen < oldest.lastSeen)) oldest = s;
      if (!oldest) return false;
      this.close(oldest.id);
    }
    if (this.sessions.size >= this.opts.maxSessions) this.sweep();
    return this.sessions.size < this.opts.maxSessions;
  }

  /** Ends a session (DELETE): its id is refused from now on. */
  close(id: string): void {
    const s = this.sessions.get(id);
    if (!s) return;
    this.drop(s);
    this.remember(id, this.now());
    for (const requestId of [...(s.inflight?.keys() ?? [])]) this.cancel(s, requestId, SESSION_ENDED);
  }

  private remember(id: string, at: number): void {
    if (!this.adopts) return;
    this.ended.set(id, at);
    // Bounded, oldest first: under heavy churn an old ended id may be forgotten early, which only
    // lets its own caller resume it (the id stays bound to that caller).
    if (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.keys().next().value!);
  }

  /** Records a request as in flight until `done` is called. */
  track(session: Session, requestId: string | number, deliver: Deliver): () => void {
    session.inflight ??= new Map();
    session.inflight.set(requestId, deliver);
    return () => {
      if (session.inflight?.get(requestId) === deliver) session.inflight.delete(requestId);
      if (session.inflight?.size === 0) session.inflight = undefined;
    };
  }

  /** Routes a client's notifications/cancelled to the Server serving that request, if any. */
  cancel(session: Session, requestId: string | number, reason?: string): void {
    session.inflight?.get(requestId)?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, ...(reason ? { reason } : {}) } });
  }

  /** Ends sessions idle for longer than idleMs (a session with a request in flight is not idle). */
  sweep(): void {
    const now = this.now();
    const cutoff = now - this.opts.idleMs;
    for (const [id, s] of this.sessions) {
      if (s.lastSeen < cutoff && !s.inflight) {
        this.drop(s);
        this.remember(id, now);
      }
    }
    // An ended id is remembered for two idle periods; one presented later is long past any client.
    for (const [id, at] of this.ended) {
      if (at >= now - 2 * this.opts.idleMs) break;
      this.ended.delete(id);
    }
  }

  closeAll(): void {
    clearInterval(this.timer);
    for (const id of [...this.sessions.keys()]) this.close(id);
  }
}
