/**
 * The shared quota ledger on Redis, so every gateway replica enforces one budget exactly.
 *
 * Design (docs/quota.md has the long form):
 * - Counters change only inside Lua scripts (check-and-add is atomic; never get-then-set). A budget
 *   line's keys share its `{budget|subject}` hash tag. On a single node one script carries every
 *   line of a call, so a call costs one command per phase (read, reserve, settle) and its
 *   reservation is atomic across lines. On a Redis Cluster each script carries one line, so no
 *   script spans slots; the lines go in a fixed order (sorted by reservedKey), and when one
 *   refuses, the lines already reserved are released again: all lines or none either way.
 * - A reservation is a per-request entry on its line (hash requestId -> amount, sorted set
 *   requestId -> expiry). Every script purges expired entries first, using the `now` the store
 *   passes in, so a crashed replica's reservations lapse after their TTL.
 * - settle() charges each line once: a per-line, per-request marker (kept a day) makes a repeated
 *   or replayed settle a no-op, and a reserve after settle returns ok without reserving.
 * - Outage: offline commands are rejected at once (no offline queue), commands time out after
 *   `commandTimeoutMs`, and the client reconnects by itself. Reserve, release and read then throw
 *   QUOTA_STORE_UNAVAILABLE; the pipeline applies the budget's fail mode. A settle that cannot be
 *   written is queued in process (bounded) and replayed when the connection is ready again.
 * - Keyv (@keyv/redis) is the store's face for plain records: which reservedKeys a request holds,
 *   so release(requestId) works from any replica. Lua runs through the client it exposes.
 * - Redis Cluster (`clusterNodes`): the same scripts, each routed to its line's master by the first
 *   key; scripts are loaded and SCAN runs on every master; node errors and failed scripts trigger a
 *   check of the slot map, so a failover is followed (src/quota/redisCluster.ts).
 */
import KeyvRedis, { Keyv, createClient } from '@keyv/redis';
import { pino, type Logger } from 'pino';
import { createClusterClient, watchCluster, type NodeDefaults } from './redisCluster.js';
import { ADJUST, READ, RELEASE, RESERVE, SETTLE, ScriptRunner, asStoreError, isOutage, type LuaScript, type RedisConnection, type RedisNode } from './redisScripts.js';
import type { DecisionRecord, EventListener, LedgerLine, LineState, QuotaStore, ReserveOutcome } from './store.js';

export interface RedisQuotaStoreOptions {
  /** `redis://` or `rediss://` URL of a single Redis node. Ignored when `clusterNodes` is set. */
  url?: string;
  /**
   * URLs of some nodes of a Redis Cluster (one is enough, several survive one being down); the rest
   * of the cluster is discovered. Credentials and TLS of the first URL apply to every node.
   */
  clusterNodes?: string[];
  /** Prefix of the store's own keys (ledger keys arrive with the prefix already applied). */
  prefix: string;
  /** The clock that decides reservation expiry; injectable for tests. */
  now?: () => number;
  /** A command without a reply after this long fails as QUOTA_STORE_UNAVAILABLE. Default 1000. */
  commandTimeoutMs?: number;
  /** Most settlements kept for replay during an outage; the oldest is dropped beyond it. Default 10000. */
  maxPendingReplays?: number;
  /** Where connection changes, queued and dropped settlements are reported. Default: stderr at info. */
  logger?: Pick<Logger, 'info' | 'warn' | 'error'>;
}

interface Replay {
  requestId: string;
  lines: LedgerLine[];
  event?: DecisionRecord;
}

/** How long a settled marker is kept: a replayed or repeated settle within it counts once. */
const SETTLED_MARKER_MS = 24 * 3600_000;
/** Request records outlive their reservation by this much, so a late release still finds them. */
const RECORD_SLACK_MS = 60_000;
/** Requests whose reserved lines are remembered in process; beyond this the Keyv record is used. */
const LOCAL_RECORDS_MAX = 100_000;

/** Amounts go into INCRBY and Lua arithmetic: whole numbers only, and never negative outside adjust(). */
function assertAmount(n: number, what: string, signed = false): void {
  if (!Number.isSafeInteger(n) || (!signed && n < 0)) throw new RangeError(`${what} must be a ${signed ? '' : 'non-negative '}safe integer, got ${n}`);
}

/** The QuotaStore shared by every replica; see the design notes at the top of this file. */
export class RedisQuotaStore implements QuotaStore {
  readonly kind = 'redis';
  private readonly client: RedisConnection;
  private readonly scripts: ScriptRunner;
  private readonly records: Keyv<string[]>;
  private readonly now: () => number;
  private readonly maxReplays: number;
  private readonly log: Pick<Logger, 'info' | 'warn' | 'error'>;
  private readonly replays: Replay[] = [];
  private readonly held = new Map<string, string[]>();
  private readonly listeners: EventListener[] = [];
  private flushing: Promise<void> | undefined;
  private connectedOnce = false;
  private reportedDown = false;
  private closed = false;
  private droppedReplays = 0;
  /** On a cluster: checks the slot map (throttled) when a command finds no working master. */
  private readonly refreshSlots: (() => void) | undefined;
  /** On a cluster every line is its own script (its own slot); on one node a call's lines go together. */
  private readonly linePerScript: boolean;

  constructor(opts: RedisQuotaStoreOptions) {
    this.now = opts.now ?? Date.now;
    const timeoutMs = opts.commandTimeoutMs ?? 1000;
    this.maxReplays = opts.maxPendingReplays ?? 10_000;
    this.log = opts.logger ?? pino({ name: 'tollgate-quota', level: 'info' }, pino.destination({ dest: 2, sync: false }));
    // Never give up: back off to 2 s between attempts, with jitter so replicas do not stampede.
    const backoff = (attempt: number) => Math.min(50 * 2 ** attempt, 2000) + Math.floor(Math.random() * 100);
    const defaults: NodeDefaults = {
      // Fail fast while disconnected instead of queueing; the pipeline decides open or closed.
      disableOfflineQueue: true,
      // While a server hangs, unanswered commands pile up; beyond this they fail at once.
      commandsQueueMaxLength: 10_000,
      socket: { connectTimeout: Math.max(timeoutMs, 1000), reconnectStrategy: backoff },
    };
    const cluster = opts.clusterNodes?.length ? createClusterClient(opts.clusterNodes, defaults) : undefined;
    if (!cluster && !opts.url) throw new RangeError('RedisQuotaStore needs a url or clusterNodes');
    this.linePerScript = cluster !== undefined;
    // No node-redis per-command `timeout`: it costs an AbortSignal timer per command (a tenth of the
    // store's CPU in the benchmark), and ScriptRunner.timed already bounds every command we send.
    const client = cluster ?? createClient({ url: opts.url, ...defaults });
    const adapter = new KeyvRedis<string[]>(client, { namespace: `${opts.prefix}kv`, throwOnErrors: true, throwOnConnectError: true });
    this.records = new Keyv<string[]>({ store: adapter, useKeyPrefix: false, throwOnErrors: true });
    // Scripts run on the very client the Keyv adapter exposes.
    this.client = adapter.client as RedisConnection;
    this.scripts = new ScriptRunner(this.client, timeoutMs, backoff);
    if (cluster) {
      this.refreshSlots = watchCluster(cluster, { down: (err) => this.down(err), nodeReady: (node) => this.up(node), stopped: () => this.closed, timeoutMs });
    } else {
      this.client.on('error', (err: unknown) => this.down(err));
      this.client.on('ready', () => this.up());
    }
    this.records.on('error', () => {
      // Reported through the client's own error event and the thrown error; nothing to add here.
    });
    this.scripts.start((err) => this.log.error({ err, event: 'quota_store_connect_failed' }, 'quota store connection failed'));
  }

  async reserve(requestId: string, lines: LedgerLine[], ttlMs: number): Promise<ReserveOutcome> {
    for (const l of lines) {
      assertAmount(l.amount, 'amount');
      if (!Number.isFinite(l.limit)) throw new RangeError(`limit must be finite, got ${l.limit}`);
    }
    const now = this.now();
    const ordered = [...lines].sort((a, b) => (a.reservedKey < b.reservedKey ? -1 : a.reservedKey > b.reservedKey ? 1 : 0));
    if (ordered.length === 0) return { ok: true };
    const keys = ordered.map((l) => l.reservedKey);
    // Every script is sent at once, in the fixed order: one round trip. Each is atomic over its
    // lines; on a cluster (a script per line) a refusal on any line gives back the others.
    const groups = this.groups(ordered);
    const scripts = groups.map((group) =>
      this.run(
        RESERVE,
        group.flatMap((l) => [l.reservedKey, `${l.reservedKey}:x`, markerKey(l.reservedKey, requestId), ...l.readKeys]),
        [requestId, now, now + ttlMs, ...group.flatMap((l) => [3 + l.readKeys.length, l.amount, l.limit])],
      ),
    );
    // The request record, which lets another replica release this reservation, goes in the same
    // flight; on a refusal it is deleted again (and would lapse with the reservation's TTL anyway).
    const settled = await Promise.allSettled([...scripts, this.writeRecord(requestId, keys, ttlMs)]);
    const dropRecord = () => void this.deleteRecord(requestId).catch(() => undefined);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // What this call reserved lapses by TTL anyway; give it back now without making the caller
      // wait. Every line is included: a timed-out script may still run, and a release sent later
      // on the same connection runs after it.
      this.releaseLines(requestId, keys, now).catch(() => undefined);
      dropRecord();
      throw asStoreError(failed.reason);
    }
    const states = settled.slice(0, groups.length).flatMap((r) => (r as PromiseFulfilledResult<unknown>).value as [number, number, number][]);
    const taken = ordered.filter((_, i) => states[i]![0] === 1).map((l) => l.reservedKey);
    const refusedAt = states.findIndex((s) => s[0] === 0);
    if (refusedAt >= 0 || states.some((s) => s[0] === 2)) {
      // A refusal, or a request that already holds (or has settled) a reservation: like the memory
      // store, the repeat is a no-op, so whatever this call took is given back.
      await this.releaseLines(requestId, taken, now);
      const held = refusedAt < 0 ? this.held.get(requestId) : undefined;
      if (held) {
        // A repeat of a reservation this request still holds: its record must list what it holds,
        // not what the repeat asked for.
        await this.writeRecord(requestId, held, ttlMs).catch(() => undefined);
      } else dropRecord();
      if (refusedAt < 0) return { ok: true };
      const line = ordered[refusedAt]!;
      const [, used, reserved] = states[refusedAt]!;
      return { ok: false, budgetId: line.budgetId, subject: line.subject, used, reserved, limit: line.limit, requested: line.amount };
    }
    this.remember(requestId, keys);
    return { ok: true };
  }

  async settle(requestId: string, lines: LedgerLine[], event?: DecisionRecord): Promise<void> {
    for (const l of lines) assertAmount(l.amount, 'amount');
    try {
      await this.settleNow(requestId, lines);
      if (event) this.emit(event);
    } catch (err) {
      if (!isOutage(err)) throw err;
      this.enqueue({ requestId, lines, event });
      this.log.warn({ err, requestId, event: 'quota_settle_queued', pending: this.replays.length }, 'settlement queued for replay');
    }
  }

  async dispatch(_requestId: string): Promise<void> {
    // The dispatch mark lives with the reservation; see the journal notes in docs/quota.md.
  }

  async record(event: DecisionRecord): Promise<void> {
    this.emit(event);
  }

  onEvent(listener: EventListener): void {
    this.listeners.push(listener);
  }

  async release(requestId: string, event?: DecisionRecord): Promise<void> {
    if (event) this.emit(event);
    try {
      await this.scripts.ready();
      const keys = this.held.get(requestId) ?? (await this.scripts.timed(this.records.get(recordKey(requestId)))) ?? [];
      await this.releaseLines(requestId, keys, this.now());
      this.held.delete(requestId);
      await this.deleteRecord(requestId);
    } catch (err) {
      throw asStoreError(err);
    }
  }

  async read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    const now = this.now();
    try {
      const replies = await Promise.all(
        this.groups(lines).map(
          (group) =>
            this.run(
              READ,
              group.flatMap((l) => [l.reservedKey, `${l.reservedKey}:x`, ...l.readKeys]),
              [now, ...group.map((l) => 2 + l.readKeys.length)],
            ) as Promise<[number, number][]>,
        ),
      );
      return replies.flat().map(([used, reserved]) => ({ used, reserved }));
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Adds `delta` (negative for a credit) to a usage counter outside any request, e.g. an admin
   * correction. Returns the counter's new value. Not idempotent: call it once per correction.
   */
  async adjust(usageKey: string, delta: number, expiresAt: number): Promise<number> {
    assertAmount(delta, 'delta', true);
    try {
      return (await this.run(ADJUST, [usageKey], [delta, expiresAt - this.now()])) as number;
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Settled usage counters whose key matches the Redis glob `pattern`, e.g.
   * `tollgate:{team-weekly|*}:u:*`, sorted by key. SCAN-based, so its cost grows with the key
   * space: for reports and admin views, not the call path.
   */
  async listUsage(pattern: string): Promise<{ key: string; used: number }[]> {
    const found: { key: string; used: number }[] = [];
    try {
      // On a cluster every master holds its own share of the keys: each is scanned in turn.
      for (const node of await this.scripts.nodes()) {
        let cursor = '0';
        do {
          const page = await this.scripts.timed(node.scan(cursor, { MATCH: pattern, COUNT: 1000, TYPE: 'string' }));
          cursor = String(page.cursor);
          const keys = page.keys.map(String).filter((k) => /:u:-?\d+$/.test(k));
          const values = await Promise.all(keys.map((k) => this.scripts.get(k)));
          keys.forEach((key, i) => {
            const v = values[i];
            if (v !== null && v !== undefined) found.push({ key, used: Number(v) });
          });
        } while (cursor !== '0');
      }
    } catch (err) {
      throw asStoreError(err);
    }
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Settlements waiting for the store to come back (one being replayed right now is not counted). */
  pendingReplays(): number {
    return this.replays.length;
  }

  /** Settlements dropped because the replay queue was full (also logged as they happen). */
  droppedReplayCount(): number {
    return this.droppedReplays;
  }

  /**
   * Writes queued settlements in order, each exactly once thanks to the settled markers. Concurrent
   * calls share one pass. Rejects with QUOTA_STORE_UNAVAILABLE (keeping the rest) if the store drops again.
   */
  flushReplays(): Promise<void> {
    this.flushing ??= this.drain().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.replays.length > 0 && this.scripts.isReady()) await this.flushReplays().catch(() => undefined);
    if (this.replays.length > 0) {
      this.log.error({ event: 'quota_replay_lost', pending: this.replays.length }, 'closing with settlements that could not be written');
    }
    await this.scripts.stop();
  }

  /** A connection failed; node-redis reports every failed reconnect attempt, one line per outage is enough. */
  private down(err: unknown): void {
    if (!this.reportedDown) this.log.warn({ err, event: 'quota_store_down' }, 'quota store unreachable; reconnecting');
    this.reportedDown = true;
  }

  /** The node (or one cluster master, `node`) is ready again: reload scripts there and replay. */
  private up(node?: RedisNode): void {
    if (this.connectedOnce && (this.reportedDown || !node)) this.log.info({ event: 'quota_store_up' }, 'quota store reconnected');
    this.connectedOnce = true;
    this.reportedDown = false;
    this.scripts.preload(node).catch((err: unknown) => this.log.warn({ err, event: 'quota_script_load_failed' }, 'could not preload quota scripts'));
    if (this.replays.length > 0) this.flushInBackground();
  }

  private async drain(): Promise<void> {
    // Taken off the queue while in flight, so an overflow meanwhile drops a waiting entry, not this one.
    for (let next = this.replays.shift(); next; next = this.replays.shift()) {
      try {
        await this.settleNow(next.requestId, next.lines);
        if (next.event) this.emit(next.event);
      } catch (err) {
        if (isOutage(err)) {
          this.replays.unshift(next);
          throw asStoreError(err);
        }
        this.log.error({ err, requestId: next.requestId, event: 'quota_replay_failed' }, 'settlement replay failed and was dropped');
      }
    }
  }

  private async settleNow(requestId: string, lines: LedgerLine[]): Promise<void> {
    const now = this.now();
    // Lines reserved but not charged (not normally the case) are released, as the memory store does.
    const charged = new Set(lines.map((l) => l.reservedKey));
    const rest = (this.held.get(requestId) ?? []).filter((k) => !charged.has(k));
    // One flight: the settle scripts, the releases and the record's deletion. Settling is idempotent
    // (per-request markers), so a settle that fails here and is replayed later still counts once;
    // until then its reservation lapses by TTL whether or not the record is still there.
    const record = this.deleteRecord(requestId).catch(() => undefined);
    await Promise.all([
      ...this.groups(lines).map((group) =>
        this.run(
          SETTLE,
          group.flatMap((l) => [l.reservedKey, `${l.reservedKey}:x`, markerKey(l.reservedKey, requestId), l.usageKey]),
          [requestId, now, ...group.flatMap((l) => [l.amount, l.expiresAt - now, Math.max(SETTLED_MARKER_MS, l.expiresAt - now)])],
        ),
      ),
      this.releaseLines(requestId, rest, now),
      record,
    ]);
    this.held.delete(requestId);
  }

  /**
   * The request record: which reserved keys a request holds, so that another replica can release
   * them. Both wait for the connection like the scripts do, so they can go in the scripts' flight.
   */
  private async writeRecord(requestId: string, keys: string[], ttlMs: number): Promise<void> {
    await this.scripts.ready();
    await this.scripts.timed(this.records.set(recordKey(requestId), keys, ttlMs + RECORD_SLACK_MS));
  }

  private async deleteRecord(requestId: string): Promise<void> {
    await this.scripts.ready();
    await this.scripts.timed(this.records.delete(recordKey(requestId)));
  }

  private async releaseLines(requestId: string, reservedKeys: string[], now: number): Promise<void> {
    await Promise.all(this.groups(reservedKeys).map((group) => this.run(RELEASE, group.flatMap((k) => [k, `${k}:x`]), [requestId, now])));
  }

  /** The scripts a call's lines go in: all in one on a single node, one each on a cluster. */
  private groups<T>(items: T[]): T[][] {
    if (items.length === 0) return [];
    return this.linePerScript ? items.map((item) => [item]) : [items];
  }

  private emit(event: DecisionRecord): void {
    for (const l of this.listeners) l(event);
  }

  private enqueue(replay: Replay): void {
    this.replays.push(replay);
    if (this.replays.length > this.maxReplays) {
      const dropped = this.replays.shift()!;
      this.droppedReplays += 1;
      this.log.error(
        { event: 'quota_replay_overflow', requestId: dropped.requestId, dropped: this.droppedReplays, max: this.maxReplays },
        'settlement replay queue full; oldest settlement dropped uncharged',
      );
    }
  }

  private remember(requestId: string, keys: string[]): void {
    this.held.set(requestId, keys);
    if (this.held.size > LOCAL_RECORDS_MAX) this.held.delete(this.held.keys().next().value!);
  }

  private async run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown> {
    let reply: unknown;
    try {
      reply = await this.scripts.run(script, keys, args);
    } catch (err) {
      // A hung master reports nothing; if a replica replaced it, only a new slot map shows that.
      if (this.refreshSlots && isOutage(err)) this.refreshSlots();
      throw err;
    }
    // A hung server that recovers never fires 'ready' again; the first answer is the cue to replay.
    if (this.replays.length > 0 && !this.flushing && !this.closed) this.flushInBackground();
    return reply;
  }

  private flushInBackground(): void {
    this.flushReplays().catch((err: unknown) => this.log.warn({ err, event: 'quota_replay_deferred' }, 'settlement replay deferred'));
  }
}

function markerKey(reservedKey: string, requestId: string): string {
  return `${reservedKey}:s:${requestId}`;
}

function recordKey(requestId: string): string {
  return `req:${requestId}`;
}
