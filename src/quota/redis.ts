/**
 * The shared quota ledger on Redis, so every gateway replica enforces one budget exactly.
 *
 * Design (docs/quota.md has the long form):
 * - Counters change only inside Lua scripts (check-and-add is atomic; never get-then-set). A budget
 *   line's keys share its `{budget|subject}` hash tag. On a single node one script carries every
 *   line of a call, so a call costs one command per phase (read, reserve, dispatch, settle) and its
 *   reservation is atomic across lines. On a Redis Cluster each script carries one line, so no
 *   script spans slots; the lines go in a fixed order (sorted by reservedKey), and when one
 *   refuses, the lines already reserved are released again: all lines or none either way.
 * - The journal: every script that closes a call or changes a counter appends its entry (settle
 *   with its decision event, release with its event, recover, refuse, admin) to a hash-chained
 *   Redis Stream and adds the event's rollups in the same atomic step, so a charge and its event
 *   cannot be apart (src/quota/redisJournal.ts, src/quota/redisScripts.ts). One entry per call: a
 *   reservation is journaled by the entry that closes it (the recover or release recovery writes
 *   carries it at its reserved amount). Listeners hear an event once its entry is written.
 * - A reservation is a per-request entry on its line (hash requestId -> amount, sorted set
 *   requestId -> expiry, and what recovery needs). Every script purges expired entries first, using
 *   the `now` the store passes in, and a sweep on every replica visits lines nobody touches:
 *   purging is recovery, atomic in Lua so it happens once whichever replica runs it. An expired
 *   reservation that was dispatched is charged at its reservation (`settled_by: recovery`); any
 *   other is released.
 * - settle() charges each line once: a per-request marker (one per call on a single node, one per
 *   line on a cluster) makes a repeated or replayed settle a no-op, and a reserve after settle returns ok without reserving. The marker is kept
 *   `settledMarkerMs` (default a day; at least the reservation's TTL + 1 h), and a settle is written
 *   only within that long of its reservation: a later one (queued through a long outage) is dropped
 *   and logged (`quota_settle_expired`), since by then the marker that would stop it counting twice
 *   may be gone; recovery has charged its reservation instead (docs/quota.md, "Redis memory").
 * - Outage: offline commands are rejected at once (no offline queue), commands time out after
 *   `commandTimeoutMs`, and the client reconnects by itself. Reserve, dispatch and read then throw
 *   QUOTA_STORE_UNAVAILABLE; the pipeline applies the budget's fail mode. A settle, release or
 *   refusal that cannot be written is queued in process (bounded) and written, in order, when the
 *   connection is ready again.
 * - Keyv (@keyv/redis) is the store's face for plain records: which reservedKeys a request holds,
 *   so release(requestId) works from any replica. Lua runs through the client it exposes.
 * - Redis Cluster (`clusterNodes`): the same scripts, each routed to its line's master by the first
 *   key; scripts are loaded and SCAN runs on every master; node errors and failed scripts trigger a
 *   check of the slot map, so a failover is followed (src/quota/redisCluster.ts).
 */
import { randomUUID } from 'node:crypto';
import KeyvRedis, { Keyv, createClient } from '@keyv/redis';
import { pino, type Logger } from 'pino';
import { CAP_UNIT, limitUnitsOf, type EntryBody, type EntryLine, type JournalEntry } from './journal.js';
import { createClusterClient, watchCluster, type NodeDefaults } from './redisCluster.js';
import { evictionRisk, evictionState, type EvictionRisk } from './redisEviction.js';
import { ReplaySpill } from './spill.js';
import {
  dayOf,
  daysBetween,
  globalJournalBase,
  journalKeys,
  prepare,
  recoveryInfo,
  verifyRedisJournal,
  type JournalReader,
  type JournalVerifyReport,
  type VerifyOptions,
} from './redisJournal.js';
import { mergeRollupHashes, rollupArgs, rollupHash, ROLLUP_VERSION_FIELD, type RollupHash, type RollupNames, type UsageRollup } from './rollups.js';
import {
  ADJUST,
  ALERT,
  ALERT_COUNT,
  CHAIN,
  DISPATCH,
  EXTEND,
  DUE,
  INDEX,
  READ,
  RELEASE,
  RESERVE,
  SETTLE,
  SWEEP,
  ScriptRunner,
  asStoreError,
  isOutage,
  type LuaScript,
  type RedisClient,
  type RedisConnection,
  type RedisNode,
} from './redisScripts.js';
import { ClockSkewError, type AlertLedger, type DecisionRecord, type EventListener, type LedgerLine, type LineState, type QuotaStore, type ReserveOptions, type ReserveOutcome } from './store.js';

export type { JournalVerifyReport } from './redisJournal.js';
export type { RollupHash, UsageRollup } from './rollups.js';

/** A rollup hash and the UTC day it adds up (`YYYY-MM-DD`). */
export interface RollupKey {
  key: string;
  day: string;
}

/** Rollup hashes read at once (readRollups). */
const ROLLUP_READS_AT_ONCE = 4;

/** What a map reply is decoded to: @redis/client's RESP_TYPES.MAP ('%'), mapped to Array (flat). */
const RESP_MAP = 37;

export interface RedisJournalOptions {
  /**
   * Keep about this many entries per stream (`XADD … MAXLEN ~ n`; Redis trims whole macro-nodes,
   * so a few more may stay). Trimming removes the chain's beginning: export first (docs/quota.md).
   */
  maxLen?: number;
  /**
   * Or keep entries younger than this (`XADD … MINID ~ <Redis time - maxAgeMs>`: stream ids are
   * Redis's clock). Ignored when maxLen is set.
   */
  maxAgeMs?: number;
  /** How long a day's rollup hash is kept. Default 400 days. */
  rollupTtlMs?: number;
}

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
  /**
   * Whether a line's bucket is checked against Redis's TIME (LedgerLine.bucket, ClockSkewError).
   * Default: when `now` is the real clock; a test whose injected clock stands for a machine's
   * skewed clock (not for a time Redis never sees) turns it on.
   */
  checkBuckets?: boolean;
  /** A command without a reply after this long fails as QUOTA_STORE_UNAVAILABLE. Default 1000. */
  commandTimeoutMs?: number;
  /**
   * Most writes (settlements, releases, refusals) kept in memory for replay during an outage. Beyond
   * it, with a spill (`spillDir`), further writes are kept on disk only, up to `maxSpilledReplays`;
   * past both (or without a spill), the oldest in memory is dropped. Default 10000.
   */
  maxPendingReplays?: number;
  /** Most writes kept on disk only once the queue in memory is full (`spillDir`). Default 1,000,000. */
  maxSpilledReplays?: number;
  /** Where connection changes, queued and dropped writes are reported. Default: stderr at info. */
  logger?: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** Retention of the journal streams and rollups. Default: keep every entry. */
  journal?: RedisJournalOptions;
  /**
   * How long a settled marker is kept (a replayed or repeated settle within it counts once), and so
   * how late after its reservation a settle may still be written. At least the reservation's TTL +
   * 1 h is used whatever this says; at most a day (recovery's markers are kept a day). Default a day.
   */
  settledMarkerMs?: number;
  /**
   * How often this replica sweeps lines with expired reservations (recovery for lines no call
   * touches), with ±20 % jitter. 0 turns the timer off (`sweep()` still works). Default 10000.
   */
  sweepIntervalMs?: number;
  /**
   * false: this store never closes expired reservations (recovery): its reads count them as still
   * held, and it has no sweep timer. For a process that has no event sinks, such as the CLI: a
   * reservation it recovered would be charged and journaled, but its decision event would reach
   * none of the gateways' sinks (event log, SIEM, metrics), which hear only the recoveries their
   * own process makes. The gateways' sweeps close them instead. Default true.
   */
  recover?: boolean;
  /**
   * A directory where the writes queued during an outage are also kept on disk (src/quota/spill.ts),
   * each synced before its caller goes on, so that a process that dies before Redis is back does not
   * take them with it: the next store opened on the directory writes them. Files of processes
   * still running are left alone. Default: none (the queue is in memory only).
   */
  spillDir?: string;
}

/** A ledger write the store could not make yet, kept for replay in order. */
type Replay =
  /** `markerMs`: the settled markers' lifetime; `notAfter`: the last moment the settle may be written (see settleWindow). */
  // lost: an earlier attempt failed in a way that may have left it applied (its reply lost), so
  // finding the write already made means it was made by that attempt, and its event is the sinks'.
  | { kind: 'settle'; requestId: string; lines: LedgerLine[]; event?: DecisionRecord; markerMs: number; notAfter: number; lost?: boolean }
  | { kind: 'release'; requestId: string; keys?: string[]; event?: DecisionRecord; lost?: boolean }
  | { kind: 'record'; requestId: string; event: DecisionRecord; lost?: boolean };

/** What a write achieved: its event once journaled, and on a failure the error and what is left to write. */
interface WriteOutcome {
  event?: DecisionRecord;
  err?: unknown;
  rest: Replay[];
}

/** How long a settled marker is kept by default, and at most (recovery's markers, set in Lua, are kept DAY_MS). */
const SETTLED_MARKER_MS = 24 * 3600_000;
/** A settle may come this long after its reservation's expiry (a call that outlived it, a short outage) and still be written. */
const MARKER_SLACK_MS = 3600_000;
/** Request records outlive their reservation by this much, so a late release still finds them. */
const RECORD_SLACK_MS = 60_000;
/** Requests whose reserved lines are remembered in process; beyond this the Keyv record is used. */
const LOCAL_RECORDS_MAX = 100_000;
const DEFAULT_ROLLUP_TTL_MS = 400 * 86_400_000;
/** Lines kept for indexing again at most (a cluster whose `{journal}` master is unreachable). */
const UNINDEXED_MAX = 100_000;
/** Lines the sweep visits per pass at most. */
const SWEEP_BATCH = 200;
/** How often writes queued in an outage are tried again while nothing else cues a replay. */
const REPLAY_RETRY_MS = 1_000;

/** How many written profiles a store remembers, and for how long (R:p keeps them 2 days: PROFILE_TTL_MS). */
const PROFILES_REMEMBERED = 10_000;
const PROFILE_RESEND_MS = 3_600_000;

/** Amounts go into INCRBY and Lua arithmetic: whole numbers only, and never negative outside adjust(). */
function assertAmount(n: number, what: string, signed = false): void {
  if (!Number.isSafeInteger(n) || (!signed && n < 0)) throw new RangeError(`${what} must be a ${signed ? '' : 'non-negative '}safe integer, got ${n}`);
}

/** A reservation this replica made: its lines' reserved keys, when and for how long, and whether its dispatch mark went with it. */
interface Held {
  keys: string[];
  at: number;
  ttlMs: number;
  /** Reserved with `dispatching`, and dispatch() not called since: it has nothing to write. */
  marked: boolean;
  /** The R of each cap line (a reservation that is the count) with its amount: a renewal makes it again if it is gone (EXTEND). */
  caps?: Map<string, number>;
}

function byReservedKey<T extends { reservedKey: string }>(a: T, b: T): number {
  return a.reservedKey < b.reservedKey ? -1 : a.reservedKey > b.reservedKey ? 1 : 0;
}

/** Reservation keys made so far, by R: a line's are the same strings on every call in its window. */
const reservationKeyCache = new Map<string, readonly [string, string, string]>();

/** A line's reservation keys, in the order the scripts take them: R, R:x, R:i. */
function reservationKeys(r: string): readonly [string, string, string] {
  let keys = reservationKeyCache.get(r);
  if (keys === undefined) {
    // Bounded: lines come and go with their windows; the cache starts again when it is full.
    if (reservationKeyCache.size >= 10_000) reservationKeyCache.clear();
    keys = [r, `${r}:x`, `${r}:i`];
    reservationKeyCache.set(r, keys);
  }
  return keys;
}

/** Appends a line's reservation keys to `out`. */
function pushReservationKeys(out: string[], r: string): void {
  const keys = reservationKeys(r);
  out.push(keys[0], keys[1], keys[2]);
}

/** The QuotaStore shared by every replica; see the design notes at the top of this file. */
/** The cap lines among `lines` (by the reservation's meta: limits.<id> is the cap unit), by R, with their amounts. */
function capsOf(lines: readonly LedgerLine[], meta: DecisionRecord | undefined): Map<string, number> | undefined {
  const units = limitUnitsOf(meta ?? {});
  let caps: Map<string, number> | undefined;
  for (const l of lines) if (units.get(l.budgetId) === CAP_UNIT && l.amount > 0) (caps ??= new Map()).set(l.reservedKey, l.amount);
  return caps;
}

/** A line without late keys (LedgerLine.lateKeys). */
const NO_KEYS: readonly string[] = [];

export class RedisQuotaStore implements QuotaStore, AlertLedger {
  readonly kind = 'redis';
  readonly guarded: boolean = true;
  private readonly client: RedisConnection;
  /** The same connection, answering HGETALL as Redis sends it: field, value, field, value... */
  private readonly flatReplies: { hGetAll(key: string): Promise<string[]> };
  private readonly scripts: ScriptRunner;
  private readonly records: Keyv<string[]>;
  /** This process's clock (options.now). */
  private readonly clock: () => number;
  /** How far Redis's clock is ahead of `clock`, as far as measured (learnTime): always within `offsetBounds` once measured. */
  private offsetMs = 0;
  /**
   * What the measurements prove about that offset, [lowest, highest] in ms: the intersection of every
   * measurement's range since the clocks last stepped apart (learnTime).
   */
  private offsetBounds: [number, number] | undefined;
  /** Whether this store closes expired reservations (options.recover). */
  private readonly recovers: boolean;
  private readonly maxReplays: number;
  private readonly maxSpilled: number;
  /** Whether this store's clock is one Redis's TIME can be compared with (options.checkBuckets). */
  private readonly ownClock: boolean;
  private readonly log: Pick<Logger, 'info' | 'warn' | 'error'>;
  private readonly replays: Replay[] = [];
  /** The queue on disk, when `spillDir` is set; `spilled` numbers each queued write in it. */
  private readonly spill: ReplaySpill<Replay> | undefined;
  private readonly spilled = new WeakMap<Replay, number>();
  /** The reservations this replica made and has not closed, by request id. */
  private readonly held = new Map<string, Held>();
  private readonly markerMs: number;
  private expiredSettles = 0;
  private readonly listeners: EventListener[] = [];
  private flushing: Promise<void> | undefined;
  /** The write `drain` is making now (off the queue while in flight). */
  private replaying: Replay | undefined;
  private connectedOnce = false;
  private reportedDown = false;
  private closed = false;
  private droppedReplays = 0;
  /** On a cluster: checks the slot map (throttled) when a command finds no working master. */
  private readonly refreshSlots: (() => void) | undefined;
  /** On a cluster every line is its own script (its own slot); on one node a call's lines go together. */
  private readonly linePerScript: boolean;
  /** `<prefix>{journal}`: the single node's journal, and the cluster's for entries without a line. */
  private readonly globalBase: string;
  /** Lines with open reservations, scored by their latest expiry, for the sweep. */
  private readonly openIndex: string;
  private readonly trim: [string, string];
  private readonly rollupTtlMs: number;
  private readonly journalOptions: RedisJournalOptions;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** While writes wait for replay: the next try (see retryReplays). */
  private replayTimer: NodeJS.Timeout | undefined;
  /** Lines whose indexing failed (cluster), with their latest expiry: the next sweep indexes them. */
  private readonly unindexed = new Map<string, number>();
  private sweeping: Promise<{ lines: number; closed: number }> | undefined;
  /** Each node's `evicted_keys` when last read, by its connection (a new connection starts afresh). */
  private readonly evictedSeen = new WeakMap<object, number>();
  /** Whether a failed eviction check was logged (once: INFO may be refused by an ACL for good). */
  private evictionCheckFailed = false;

  constructor(opts: RedisQuotaStoreOptions) {
    this.clock = opts.now ?? Date.now;
    this.ownClock = opts.checkBuckets ?? opts.now === undefined;
    const timeoutMs = opts.commandTimeoutMs ?? 1000;
    this.maxReplays = opts.maxPendingReplays ?? 10_000;
    this.maxSpilled = opts.maxSpilledReplays ?? 1_000_000;
    this.log = opts.logger ?? pino({ name: 'tollgate-quota', level: 'info' }, pino.destination({ dest: 2, sync: false }));
    this.globalBase = globalJournalBase(opts.prefix);
    this.openIndex = `${this.globalBase}:open`;
    this.journalOptions = opts.journal ?? {};
    const { maxLen, maxAgeMs } = this.journalOptions;
    if (maxLen !== undefined && !(Number.isSafeInteger(maxLen) && maxLen > 0)) throw new RangeError(`journal.maxLen must be a positive integer, got ${maxLen}`);
    if (maxAgeMs !== undefined && !(Number.isSafeInteger(maxAgeMs) && maxAgeMs > 0)) throw new RangeError(`journal.maxAgeMs must be a positive integer, got ${maxAgeMs}`);
    this.trim = maxLen ? ['MAXLEN', String(maxLen)] : maxAgeMs ? ['MINID', String(maxAgeMs)] : ['', ''];
    this.rollupTtlMs = this.journalOptions.rollupTtlMs ?? DEFAULT_ROLLUP_TTL_MS;
    if (!(Number.isSafeInteger(this.rollupTtlMs) && this.rollupTtlMs > 0)) throw new RangeError(`journal.rollupTtlMs must be a positive integer, got ${this.rollupTtlMs}`);
    this.markerMs = opts.settledMarkerMs ?? SETTLED_MARKER_MS;
    if (!(Number.isSafeInteger(this.markerMs) && this.markerMs > 0 && this.markerMs <= SETTLED_MARKER_MS)) {
      throw new RangeError(`settledMarkerMs must be a whole number of milliseconds from 1 to ${SETTLED_MARKER_MS} (a day), got ${opts.settledMarkerMs}`);
    }
    if (opts.spillDir !== undefined) {
      // Writes a process that stopped during an outage left on disk: queued first, written once
      // Redis answers. Their first attempt may have landed before that process died, so each is
      // replayed as a write whose reply was lost (its event goes to this process's listeners then).
      const { spill, restored } = ReplaySpill.open<Replay>(opts.spillDir, opts.prefix, this.log);
      this.spill = spill;
      for (const r of restored) this.enqueue({ ...r, lost: true });
    }
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
    // A single node's client and a cluster's both have withTypeMapping (a view of the same connection).
    this.flatReplies = (this.client as RedisClient).withTypeMapping({ [RESP_MAP]: Array }) as unknown as { hGetAll(key: string): Promise<string[]> };
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
    this.recovers = opts.recover ?? true;
    const every = this.recovers ? (opts.sweepIntervalMs ?? 10_000) : 0;
    if (every > 0) this.scheduleSweep(every);
  }

  /** The time windows and expiries are counted in: this process's clock moved to Redis's as measured. */
  private now(): number {
    return this.clock() + this.offsetMs;
  }

  clockOffsetMs(): number {
    return this.offsetMs;
  }

  learnTime(storeTime: number, sentAt: number, receivedAt: number): number | undefined {
    if (!this.ownClock) return undefined;
    // Redis read its TIME somewhere between sentAt and receivedAt, so the offset lies within
    // [storeTime - receivedAt, storeTime - sentAt] (a millisecond wider each side: both clocks are
    // read in whole ms). Under a loaded event loop that range is hundreds of ms wide: its middle
    // is no estimate (it once moved the offset by ±350 ms with no skew at all, and every call's
    // lines then named a bucket Redis was not in). The ranges of successive measurements are
    // intersected, so the narrowest (lowest round trip) bounds the offset and a wider one never
    // loosens it; a range that misses the bounds means the clocks stepped apart, and it starts anew.
    const lo = storeTime - receivedAt - 1;
    const hi = storeTime - sentAt + 1;
    const bounds = this.offsetBounds;
    this.offsetBounds = bounds && lo <= bounds[1] && hi >= bounds[0] ? [Math.max(lo, bounds[0]), Math.min(hi, bounds[1])] : [lo, hi];
    const [low, high] = this.offsetBounds;
    // An offset the bounds still allow stays: a disagreement within the measurement's uncertainty is
    // a bucket's edge crossed on the way, not skew. One they exclude moves to their middle.
    if (this.offsetMs >= low && this.offsetMs <= high) return undefined;
    const offset = Math.round((low + high) / 2);
    const moved = Math.abs(offset - this.offsetMs) >= 10;
    this.offsetMs = offset;
    return moved ? offset : undefined;
  }

  async reserve(requestId: string, lines: LedgerLine[], ttlMs: number, meta?: DecisionRecord, opts: ReserveOptions = {}): Promise<ReserveOutcome> {
    // A profile this store wrote may be gone (Redis restarted or flushed): then nothing was
    // reserved, and the reservation is made again with the profile's text.
    return (await this.reserveOnce(requestId, lines, ttlMs, meta, opts, false)) ?? (await this.reserveOnce(requestId, lines, ttlMs, meta, opts, true))!;
  }

  /** The profiles this store wrote lately, per R:p and digest (`<R:p> <digest>`), with when. */
  private readonly profilesWritten = new Map<string, number>();

  /** True when this store wrote the profile to `key` less than an hour ago (well within R:p's lifetime). */
  private profileWritten(key: string, now: number): boolean {
    const at = this.profilesWritten.get(key);
    if (at === undefined) return false;
    if (now - at < PROFILE_RESEND_MS && now >= at) return true;
    this.profilesWritten.delete(key);
    return false;
  }

  /** The profile keys this store remembers writing (for the tests: the text is sent when it does not). */
  profilesRemembered(): string[] {
    return [...this.profilesWritten.keys()];
  }

  /** One attempt at reserve(); undefined when a profile not sent was missing (nothing reserved). */
  private async reserveOnce(
    requestId: string,
    lines: LedgerLine[],
    ttlMs: number,
    meta: DecisionRecord | undefined,
    opts: ReserveOptions,
    sendProfile: boolean,
  ): Promise<ReserveOutcome | undefined> {
    for (const l of lines) {
      assertAmount(l.amount, 'amount');
      if (!Number.isFinite(l.limit)) throw new RangeError(`limit must be finite, got ${l.limit}`);
    }
    const now = this.now();
    const ordered = [...lines].sort(byReservedKey);
    if (ordered.length === 0) return { ok: true };
    const keys = ordered.map((l) => l.reservedKey);
    const expiresAt = now + ttlMs;
    const info = recoveryInfo(ordered, meta);
    const profileKey = `${ordered[0]!.reservedKey}:p`;
    const written = `${profileKey} ${info.profile.digest}`;
    const profileText = sendProfile || !this.profileWritten(written, now) ? info.profile.text : '';
    const idJson = JSON.stringify(requestId);
    // A line's bound on its used + reserved (`atMost`) is checked as a lower limit: used + reserved
    // + amount <= min(limit, bound + amount) holds exactly when both checks do (integers).
    const { atMost } = opts;
    /** Each ordered line's place in the caller's order, where the bounds and the states returned go by it. */
    const given = atMost ? ordered.map((l) => lines.indexOf(l)) : undefined;
    const checked = atMost && given ? ordered.map((l, i) => Math.min(l.limit, (atMost[given[i]!] ?? Infinity) + l.amount)) : undefined;
    // Every script is sent at once, in the fixed order: one round trip. Each is atomic over its
    // lines; on a cluster (a script per line) a refusal on any line gives back the others.
    const groups = this.groups(ordered.map((l, i) => ({ l, i })));
    const scripts = groups.map((group) => {
      const j = this.journalFor(group[0]!.l.reservedKey, now);
      const index = this.linePerScript ? group[0]!.l.reservedKey : this.openIndex;
      const keyList = [...j.keys, index, `${group[0]!.l.reservedKey}:p`];
      const args: (string | number)[] = [
        ...j.args,
        requestId,
        expiresAt,
        this.linePerScript ? 0 : 1,
        idJson,
        opts.dispatching ? 1 : 0,
        // The event goes with the first line: only the script that holds it names the profile.
        group[0]!.i === 0 ? info.profile.digest : '',
        group[0]!.i === 0 ? profileText : '',
      ];
      for (const { l, i } of group) {
        pushReservationKeys(keyList, l.reservedKey);
        keyList.push(this.markerKey(l.reservedKey, requestId));
        for (const k of l.readKeys) keyList.push(k);
        // A store on an injected clock (a test's) has no clock in common with Redis to check against.
        const late = l.bucket && this.ownClock ? (l.lateKeys ?? NO_KEYS) : NO_KEYS;
        for (const k of late) keyList.push(k);
        args.push(4 + l.readKeys.length + late.length, l.amount, checked ? checked[i]! : l.limit, info.lines[i]!, i === 0 ? info.amounts : '');
        if (l.bucket && this.ownClock) args.push(l.bucket[0], l.bucket[1], late.length);
        else args.push('', '', 0);
      }
      return this.runLines(RESERVE, keyList, args);
    });
    // The request record, which lets another replica release this reservation, goes in the same
    // flight; on a refusal it is deleted again (and would lapse with the reservation's TTL anyway).
    // On a cluster the sweep's index lives in another slot (another master) than the lines: it goes
    // in the flight too, but it is a hint for the sweep, so its failure fails nothing (retried).
    if (this.linePerScript) this.index(keys, expiresAt);
    const settled = await Promise.allSettled([...scripts, this.writeRecord(requestId, keys, ttlMs)]);
    const dropRecord = () => void this.deleteRecord(requestId).catch(() => undefined);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // What this call reserved lapses by TTL anyway; give it back now without making the caller
      // wait. Every line is included: a timed-out script may still run, and a release sent later
      // on the same connection runs after it.
      this.releaseLines(requestId, keys, undefined).catch(() => undefined);
      dropRecord();
      throw asStoreError(failed.reason);
    }
    const states = settled.slice(0, groups.length).flatMap((r) => (r as PromiseFulfilledResult<unknown>).value as [number, number, number, number[]?, number?][]);
    const heldNow = ordered.filter((_, i) => states[i]![0] === 1).map((l) => l.reservedKey);
    const skewed = states.find((st) => st[0] === 5);
    if (skewed) {
      // Redis's time fell outside a line's bucket: nothing reserved there (on a cluster, other
      // lines' scripts may have reserved, and give it back). The caller resolves its lines again
      // at Redis's time.
      await this.releaseLines(requestId, heldNow, undefined);
      dropRecord();
      throw new ClockSkewError(skewed[1]);
    }
    if (states[0]![0] === 4) {
      // The profile is gone from R:p: the event's script reserved nothing (on a cluster the other
      // lines' scripts may have), so all is given back and the caller tries again with the text.
      this.profilesWritten.delete(written);
      await this.releaseLines(requestId, heldNow, undefined);
      if (sendProfile) throw new Error('RESERVE asked for the profile it was sent');
      return undefined;
    }
    if (profileText !== '' && states[0]![0] === 1) {
      if (this.profilesWritten.size >= PROFILES_REMEMBERED) this.profilesWritten.delete(this.profilesWritten.keys().next().value!);
      this.profilesWritten.set(written, now);
    }
    const refusedAt = states.findIndex((s) => s[0] === 0);
    if (refusedAt >= 0 || states.some((s) => s[0] === 2)) {
      // A refusal, or a request that already holds (or has settled) a reservation: like the memory
      // store, the repeat is a no-op, so whatever this call took is given back.
      await this.releaseLines(requestId, heldNow, undefined);
      const held = refusedAt < 0 ? this.held.get(requestId)?.keys : undefined;
      if (held) {
        // A repeat of a reservation this request still holds: its record must list what it holds,
        // not what the repeat asked for.
        await this.writeRecord(requestId, held, ttlMs).catch(() => undefined);
      } else dropRecord();
      if (refusedAt < 0) return { ok: true };
      // Lines go to Redis in key order; the refusal names the first refusing line in the caller's
      // order, as the memory store does (the planner's reasons and `estimate` name that line).
      let first = refusedAt;
      for (let i = refusedAt + 1; i < ordered.length; i++) {
        if (states[i]![0] === 0 && lines.indexOf(ordered[i]!) < lines.indexOf(ordered[first]!)) first = i;
      }
      const line = ordered[first]!;
      const [, used, reserved, buckets, late] = states[first]!;
      const refusal: ReserveOutcome = { ok: false, budgetId: line.budgetId, subject: line.subject, used, reserved, limit: line.limit, requested: line.amount, buckets: buckets ?? [] };
      if (late) refusal.late = late;
      return refusal;
    }
    this.remember(requestId, { keys, at: now, ttlMs, marked: opts.dispatching === true, caps: capsOf(ordered, meta) });
    let late: number[] | undefined;
    states.forEach((st, i) => {
      if (!st[4]) return;
      late ??= new Array<number>(lines.length).fill(0);
      late[lines.indexOf(ordered[i]!)] = st[4];
    });
    if (!given) return late ? { ok: true, late } : { ok: true };
    // The states the script found, before its reservation, in the caller's order.
    const before: LineState[] = new Array(lines.length);
    given.forEach((at, i) => {
      before[at] = { used: states[i]![1], reserved: states[i]![2] };
    });
    return late ? { ok: true, states: before, late } : { ok: true, states: before };
  }

  /**
   * Marks the reservation dispatched (the mark recovery reads, kept with the reservation in R:i);
   * resolves once it is written. No journal entry: what recovery later does with the reservation
   * (`recover` if dispatched, `release` if not) is the journal's record of it.
   */
  async dispatch(requestId: string): Promise<void> {
    // Reserved with `dispatching`: the mark went with the reservation.
    const held = this.held.get(requestId);
    if (held?.marked) {
      held.marked = false;
      return;
    }
    try {
      await this.scripts.ready();
      const keys = held?.keys ?? (await this.scripts.timed(this.records.get(recordKey(requestId)))) ?? [];
      await Promise.all(this.groups(keys).map((group) => this.run(DISPATCH, group.flatMap((r) => [r, `${r}:i`]), [requestId])));
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Renews the reservation on every line it holds, and the request record that lets another replica
   * release it. A settle may then come `ttlMs` plus the marker slack after the renewal, not the
   * reservation (settleWindow): recovery cannot close the reservation before it expires.
   */
  async extend(requestId: string, ttlMs: number): Promise<{ reasserted: number }> {
    const now = this.now();
    const expiresAt = now + ttlMs;
    try {
      await this.scripts.ready();
      const held = this.held.get(requestId);
      const keys = held?.keys ?? (await this.scripts.timed(this.records.get(recordKey(requestId)))) ?? [];
      if (keys.length === 0) return { reasserted: 0 };
      const index = this.linePerScript ? [] : [this.openIndex];
      // A cap's line this replica reserved is made again if it is gone (known only to the replica that holds the call).
      const caps = held?.caps;
      const [replies] = await Promise.all([
        Promise.all(
          this.groups(keys).map((group) =>
            this.run(EXTEND, [...group.flatMap((r) => [...reservationKeys(r), this.markerKey(r, requestId)]), ...index], [
              requestId,
              expiresAt,
              now,
              this.linePerScript ? 0 : 1,
              ...group.map((r) => String(caps?.get(r) ?? '')),
            ]),
          ),
        ),
        this.writeRecord(requestId, keys, ttlMs),
        ...(this.linePerScript ? [this.index(keys, expiresAt)] : []),
      ]);
      if (held) {
        held.at = now;
        held.ttlMs = ttlMs;
      }
      return { reasserted: (replies as [number, number][]).reduce((n, r) => n + Number(r[1] ?? 0), 0) };
    } catch (err) {
      throw asStoreError(err);
    }
  }

  async settle(requestId: string, lines: LedgerLine[], event?: DecisionRecord): Promise<void> {
    for (const l of lines) assertAmount(l.amount, 'amount');
    await this.write({ kind: 'settle', requestId, lines, event, ...this.settleWindow(requestId) });
  }

  async release(requestId: string, event?: DecisionRecord): Promise<void> {
    await this.write({ kind: 'release', requestId, keys: this.held.get(requestId)?.keys, event });
  }

  async record(event: DecisionRecord): Promise<void> {
    await this.write({ kind: 'record', requestId: String(event['request.id'] ?? ''), event });
  }

  async recordAction(id: string, action: Record<string, unknown>): Promise<void> {
    const now = this.now();
    const entry = prepare({ kind: 'console', id, at: now, action });
    const j = this.journalArgs(this.globalBase, now);
    try {
      await this.run(CHAIN, [...j.keys], [...j.args, entry.h, entry.body, 0]);
    } catch (err) {
      throw asStoreError(err);
    }
  }

  onEvent(listener: EventListener): void {
    this.listeners.push(listener);
  }

  async read(lines: Pick<LedgerLine, 'readKeys' | 'reservedKey'>[]): Promise<LineState[]> {
    const now = this.now();
    try {
      const replies = await Promise.all(
        this.groups(lines).map((group) => {
          const j = this.journalFor(group[0]!.reservedKey, now);
          const keyList = [...j.keys];
          const args = [...j.args, this.recovers ? 1 : 0];
          for (const l of group) {
            pushReservationKeys(keyList, l.reservedKey);
            for (const k of l.readKeys) keyList.push(k);
            args.push(3 + l.readKeys.length);
          }
          return this.runLines(READ, keyList, args) as Promise<[number, number][]>;
        }),
      );
      return replies.flat().map(([used, reserved]) => ({ used, reserved }));
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Adds `delta` (negative for a credit) to a usage counter outside any request, e.g. an admin
   * correction, journaled as an `admin` entry. Returns the counter's new value. Not idempotent:
   * call it once per correction.
   */
  async adjust(usageKey: string, delta: number, expiresAt: number, meta?: { by?: string; reason?: string }): Promise<number> {
    assertAmount(delta, 'delta', true);
    const reservedKey = /^(.*):u:-?\d+$/.exec(usageKey)?.[1];
    if (!reservedKey) throw new RangeError(`not a usage key: ${usageKey}`);
    const now = this.now();
    const line: EntryLine = { budgetId: '', subject: '', usageKey, reservedKey: `${reservedKey}:r`, amount: delta, expiresAt };
    const entry = prepare({ kind: 'admin', id: `adjust:${randomUUID()}`, at: now, lines: [line], meta });
    const j = this.journalFor(line.reservedKey, now);
    try {
      return (await this.scripts.run(ADJUST, [...j.keys, usageKey], [...j.args, delta, expiresAt - now, entry.h, entry.body])) as number;
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Takes an alert's once-only mark and journals the alert, atomically (the ALERT script): of two
   * replicas claiming the same mark, one fires. Marks and alert entries live under the `{journal}`
   * tag, so on a cluster they share the global journal's slot.
   */
  async claimAlert(key: string, expiresAt: number, alert: DecisionRecord): Promise<boolean> {
    const now = this.now();
    const entry = prepare({ kind: 'alert', id: String(alert.id ?? key), at: now, alert, mark: { key, expiresAt } });
    const j = this.journalArgs(this.globalBase, now);
    try {
      return (await this.run(ALERT, [...j.keys, `${this.globalBase}:alert:${key}`], [...j.args, entry.h, entry.body, expiresAt - now])) === 1;
    } catch (err) {
      throw asStoreError(err);
    }
  }

  async noteAlert(alert: DecisionRecord): Promise<void> {
    const now = this.now();
    const entry = prepare({ kind: 'alert', id: String(alert.id ?? ''), at: now, alert });
    const j = this.journalArgs(this.globalBase, now);
    try {
      await this.run(ALERT, [...j.keys], [...j.args, entry.h, entry.body]);
    } catch (err) {
      throw asStoreError(err);
    }
  }

  async countAlert(key: string, by: number, expiresAt: number): Promise<number> {
    assertAmount(by, 'by');
    try {
      return Number(await this.run(ALERT_COUNT, [`${this.globalBase}:alertn:${key}`], [by, expiresAt - this.now()]));
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

  /**
   * The usage rollups of the UTC days `from` to `to` (`YYYY-MM-DD`, inclusive), one row per day
   * and combination of user, teams, cost centre, model and tier, summed over every rollup hash of
   * the day. Key layout in docs/quota.md.
   */
  async rollups(from: string, to: string): Promise<UsageRollup[]> {
    return mergeRollupHashes(await this.readRollups(await this.rollupKeys(from, to)));
  }

  /**
   * The rollup hashes of the UTC days `from` to `to` (inclusive): one a day on a single node (named,
   * whether or not it exists); on a cluster one per line that carried events, found by SCAN on
   * every master.
   */
  async rollupKeys(from: string, to: string): Promise<RollupKey[]> {
    // The first connection is waited for (as the scripts do); the reads that follow go at once.
    await this.scripts.ready();
    const days = daysBetween(from, to);
    if (!this.linePerScript) return days.map((day) => ({ key: journalKeys(this.globalBase).roll(day), day }));
    const wanted = new Set(days);
    const keys: RollupKey[] = [];
    try {
      for (const key of await this.scanKeys(`${this.prefixOfBase()}*:roll:*`, 'hash')) {
        const day = key.slice(key.lastIndexOf(':') + 1);
        if (wanted.has(day)) keys.push({ key, day });
      }
    } catch (err) {
      throw asStoreError(err);
    }
    return keys.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Each hash's version (ROLLUP_VERSION_FIELD): null when it has none (gone, or written before
   * versions existed and given none since). Sent at once: one round trip per node.
   */
  async rollupVersions(keys: readonly RollupKey[]): Promise<(string | null)[]> {
    try {
      return await Promise.all(keys.map((k) => this.scripts.timed(this.client.hGet(k.key, ROLLUP_VERSION_FIELD))));
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * Rollup hashes, each read whole in one HGETALL (its rows and its version in the same reply),
   * a few at a time: a day's reply is a few hundred kB with a thousand users, and the calls' own
   * replies on the same connection should not wait behind a whole month of them.
   */
  async readRollups(keys: readonly RollupKey[]): Promise<RollupHash[]> {
    const out: RollupHash[] = [];
    const names: RollupNames = new Map();
    try {
      for (let i = 0; i < keys.length; i += ROLLUP_READS_AT_ONCE) {
        const group = keys.slice(i, i + ROLLUP_READS_AT_ONCE);
        // As Redis sends it (field, value, ...): no object of a few thousand keys built to be walked once.
        const replies = await Promise.all(group.map((k) => this.scripts.timed(this.flatReplies.hGetAll(k.key))));
        group.forEach((k, j) => out.push(rollupHash(k.day, replies[j]!, names)));
      }
    } catch (err) {
      throw asStoreError(err);
    }
    return out;
  }

  /**
   * Audits the journal (see verifyRedisJournal): every stream's chain, the live usage counters
   * against the charges, each charge's event, and the rollups. `trimmed` defaults to whether the
   * store has a retention configured.
   */
  async verify(opts: VerifyOptions = {}): Promise<JournalVerifyReport> {
    const trimmed = opts.trimmed ?? (this.journalOptions.maxLen !== undefined || this.journalOptions.maxAgeMs !== undefined);
    const prefix = this.prefixOfBase();
    const reader: JournalReader = {
      scan: async () => {
        const [streams, heads] = await Promise.all([this.scanKeys(`${prefix}*:j`, 'stream'), this.scanKeys(`${prefix}*:jh`, 'string')]);
        return { streams, heads };
      },
      range: async (stream, start, count) => {
        const page = await this.scripts.timed(this.client.xRange(stream, start, '+', { COUNT: count }));
        return page.map((e) => ({ id: String(e.id), message: e.message as Record<string, string> }));
      },
      get: (key) => this.scripts.get(key),
      hGetAll: (key) => this.scripts.timed(this.client.hGetAll(key)),
      hExists: async (key, field) => Number(await this.scripts.timed(this.client.hExists(key, field))) === 1,
    };
    try {
      return await verifyRedisJournal(reader, { ...opts, trimmed });
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /** The journal's streams (`…:j`) under the store prefix, on every master, sorted. */
  /** One journal entry, by its stream and entry id; none when the stream no longer holds it. */
  async journalEntryAt(stream: string, id: string): Promise<(JournalEntry & { text: string }) | undefined> {
    try {
      const [e] = await this.scripts.timed(this.client.xRange(stream, id, id, { COUNT: 1 }));
      if (!e) return undefined;
      const m = e.message as Record<string, string>;
      return { seq: Number(m.seq), h: m.h ?? '', prev: m.prev ?? '', link: m.link ?? '', body: JSON.parse(m.body ?? 'null') as EntryBody, text: m.body ?? '' };
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * The streams this store appends to: on a single node its one stream, named without a SCAN; on a
   * cluster every stream under the prefix (journalStreams).
   */
  async ownJournalStreams(): Promise<string[]> {
    if (this.linePerScript) return this.journalStreams();
    await this.scripts.ready();
    const stream = journalKeys(this.globalBase).stream;
    try {
      return (await this.scripts.timed(this.client.exists(stream))) === 1 ? [stream] : [];
    } catch (err) {
      throw asStoreError(err);
    }
  }

  async journalStreams(): Promise<string[]> {
    try {
      return await this.scanKeys(`${this.prefixOfBase()}*:j`, 'stream');
    } catch (err) {
      throw asStoreError(err);
    }
  }

  /**
   * The entries of one journal stream (every stream when none is named), oldest first, read with
   * XRANGE in pages; `after` (a stream id) resumes after an entry already exported. This is what
   * an export reads before retention trims the stream (docs/quota.md, "Retention"). Each entry
   * comes with its body's `text` as stored, which is what its `h` hashes (verifyChain checks it).
   */
  async *journalEntries(opts: { stream?: string; after?: string; pageSize?: number } = {}): AsyncGenerator<{ stream: string; streamId: string; entry: JournalEntry & { text: string } }> {
    const pageSize = opts.pageSize ?? 1000;
    for (const stream of opts.stream ? [opts.stream] : await this.journalStreams()) {
      let start = opts.after ? `(${opts.after}` : '-';
      for (;;) {
        let page: { id: string; message: Record<string, string> }[];
        try {
          page = (await this.scripts.timed(this.client.xRange(stream, start, '+', { COUNT: pageSize }))).map((e) => ({ id: String(e.id), message: e.message as Record<string, string> }));
        } catch (err) {
          throw asStoreError(err);
        }
        for (const { id, message: m } of page) {
          yield { stream, streamId: id, entry: { seq: Number(m.seq), h: m.h ?? '', prev: m.prev ?? '', link: m.link ?? '', body: JSON.parse(m.body ?? 'null') as EntryBody, text: m.body ?? '' } };
        }
        if (page.length < pageSize) break;
        start = `(${page[page.length - 1]!.id}`;
      }
    }
  }

  /**
   * Closes the expired reservations of lines no call has touched since (recovery, see the top of
   * this file): reads the lines whose latest reservation has expired from the index and purges
   * each with its own script, so a line is recovered once whichever replica gets there first.
   * Runs on a timer on every replica; callable directly (tests, admin). Returns how many lines
   * were visited and how many reservations were closed.
   */
  sweep(): Promise<{ lines: number; closed: number }> {
    this.sweeping ??= this.sweepNow().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  /** Writes queued (settlements, releases, refusals) waiting for the store to come back (one being written right now is not counted). */
  pendingReplays(): number {
    return this.replays.length + (this.spill?.overflowing ?? 0);
  }

  /**
   * The settlements this process holds because the store could not take them yet (queued, or being
   * replayed right now), oldest first: what would be lost if the process ended now. For the log at
   * shutdown.
   */
  pendingSettlements(): { requestId: string; lines: { budgetId: string; subject: string; amount: number }[] }[] {
    const held = this.replaying ? [this.replaying, ...this.replays] : this.replays;
    return held.flatMap((r) =>
      r.kind === 'settle' ? [{ requestId: r.requestId, lines: r.lines.map((l) => ({ budgetId: l.budgetId, subject: l.subject, amount: l.amount })) }] : [],
    );
  }

  /** Settlements dropped because they came later than the settled-marker lifetime allows (also logged as they happen). */
  expiredSettleCount(): number {
    return this.expiredSettles;
  }

  /** Writes dropped because the replay queue was full (also logged as they happen). */
  droppedReplayCount(): number {
    return this.droppedReplays;
  }

  /**
   * Writes queued settlements, releases and refusals in order, each exactly once thanks to the
   * settled markers (a release or refusal replayed twice would journal twice; only a write that
   * failed is queued). Concurrent calls share one pass. Rejects with QUOTA_STORE_UNAVAILABLE
   * (keeping the rest) if the store drops again.
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
    clearTimeout(this.sweepTimer);
    clearTimeout(this.replayTimer);
    if (this.pendingReplays() > 0 && this.scripts.isReady()) await this.flushReplays().catch(() => undefined);
    if (this.pendingReplays() > 0 && !this.spill?.writable) {
      this.log.error({ event: 'quota_replay_lost', pending: this.pendingReplays() }, 'closing with ledger writes that could not be made');
    }
    await this.spill?.close(this.pendingReplays());
    await this.sweeping?.catch(() => undefined);
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
    this.checkEvictionInBackground({ announce: true, node });
    this.epochCheck().catch(() => undefined);
    if (this.pendingReplays() > 0) this.flushInBackground();
  }

  /**
   * Whether Redis still holds the ledger this store saw: `<prefix>{journal}:epoch` is set once (SET
   * NX) by the first store that finds it missing, and read again on every reconnection. Found
   * missing or changed, the keys it sat beside are gone too (Redis restarted without persistence,
   * was flushed, evicted keys, or a replica without them took over): spent budgets count from zero,
   * and nothing else would say so. Logged as `quota_store_emptied`; 'same' on the first reading.
   */
  epochCheck(): Promise<'same' | 'emptied'> {
    this.epochChecking ??= this.readEpoch().finally(() => {
      this.epochChecking = undefined;
    });
    return this.epochChecking;
  }

  private epoch: string | undefined;
  private epochChecking: Promise<'same' | 'emptied'> | undefined;

  private async readEpoch(): Promise<'same' | 'emptied'> {
    const key = `${this.globalBase}:epoch`;
    await this.scripts.ready();
    await this.scripts.timed(this.client.set(key, `${new Date(this.now()).toISOString()} ${randomUUID()}`, { NX: true }));
    const found = (await this.scripts.get(key)) ?? '';
    const known = this.epoch;
    this.epoch = found;
    if (known === undefined || known === found) return 'same';
    this.log.error(
      { event: 'quota_store_emptied', key, was: known, now: found },
      "Redis no longer holds the ledger it held (restarted without persistence, flushed, keys evicted, or a replica without them took over): usage spent in the current windows counts from zero again, reservations in flight are gone and the journal starts a new chain. Run Redis with AOF; charge the budgets concerned again with tollgate usage adjust.",
    );
    return 'emptied';
  }

  /**
   * Reads whether Redis may evict the ledger's keys (src/quota/redisEviction.ts): on a cluster every
   * master, or `node` alone. Logs an error whenever a node has evicted keys since the last reading,
   * and with `announce` (on each connection) an error when a node evicts at its memory limit and a
   * warning when it would once a limit is set. Runs on every connection and every sweep pass.
   */
  async evictionCheck(opts: { announce?: boolean; node?: RedisNode } = {}): Promise<{ risk: EvictionRisk; evictedSinceLastCheck: number }> {
    const nodes = opts.node ? [opts.node] : await this.scripts.nodes();
    const order: EvictionRisk[] = ['none', 'possible', 'active'];
    let risk: EvictionRisk = 'none';
    let evictedSinceLastCheck = 0;
    for (const node of nodes) {
      const info = `${String(await this.scripts.timed(node.sendCommand(['INFO', 'memory'])))}\n${String(await this.scripts.timed(node.sendCommand(['INFO', 'stats'])))}`;
      const state = evictionState(info);
      if (!state) continue;
      const nodeRisk = evictionRisk(state);
      if (order.indexOf(nodeRisk) > order.indexOf(risk)) risk = nodeRisk;
      const fields = { maxmemoryPolicy: state.policy, maxmemory: state.maxmemory, node: nodeAddress(node) };
      const seen = this.evictedSeen.get(node);
      this.evictedSeen.set(node, state.evictedKeys);
      const evicted = seen === undefined ? 0 : state.evictedKeys - seen;
      if (evicted > 0) {
        evictedSinceLastCheck += evicted;
        this.log.error(
          { ...fields, evictedKeys: evicted, event: 'quota_store_evicted' },
          `Redis evicted ${evicted} keys since the last check (maxmemory-policy ${state.policy}): budget counters, reservations or journal entries may be gone, and a budget may then be spent twice. Set maxmemory-policy noeviction, and check the ledger with tollgate audit verify.`,
        );
      }
      if (!opts.announce) continue;
      if (nodeRisk === 'active') {
        this.log.error(
          { ...fields, evictedKeys: state.evictedKeys, event: 'quota_store_evicts' },
          `Redis evicts keys when it reaches maxmemory (maxmemory-policy ${state.policy}): it can drop budget counters, reservations and the journal, and a spent budget would then be spent again. Set maxmemory-policy noeviction on this Redis.`,
        );
      } else if (nodeRisk === 'possible') {
        this.log.warn(
          { ...fields, event: 'quota_store_may_evict' },
          `Redis has maxmemory-policy ${state.policy} and no maxmemory: it evicts nothing now, but would drop budget counters, reservations and the journal once a maxmemory is set. Set maxmemory-policy noeviction on this Redis.`,
        );
      }
    }
    return { risk, evictedSinceLastCheck };
  }

  private checkEvictionInBackground(opts: { announce?: boolean; node?: RedisNode } = {}): void {
    this.evictionCheck(opts).catch((err: unknown) => {
      if (this.evictionCheckFailed || this.closed) return;
      this.evictionCheckFailed = true;
      this.log.warn({ err, event: 'quota_eviction_check_failed' }, "could not read Redis's eviction settings (INFO memory and stats); tollgate cannot tell whether Redis may evict the ledger's keys");
    });
  }

  /** Makes a ledger write now, or queues what it could not write; listeners hear its event once written. */
  private async write(w: Replay): Promise<void> {
    const done = await this.writeNow(w);
    if (done.event) this.emit(done.event);
    if (done.err === undefined) return;
    if (!isOutage(done.err)) throw asStoreError(done.err);
    for (const r of done.rest) this.enqueue(r);
    this.log.warn({ err: done.err, requestId: w.requestId, event: `quota_${w.kind}_queued`, pending: this.pendingReplays() }, `${w.kind} queued for replay`);
    this.retryReplays();
    // The caller (a refusal about to be answered, say) goes on once the write is on disk.
    await this.spill?.durable();
  }

  private async drain(): Promise<void> {
    // Taken off the queue while in flight, so an overflow meanwhile drops a waiting entry, not this one.
    for (;;) {
      let next = this.replays.shift();
      if (!next && this.spill && this.spill.overflowing > 0) {
        // The queue in memory is written: the writes kept on disk only come next, oldest first.
        for (const { entry, seq } of await this.spill.takeOverflow(this.maxReplays)) {
          this.replays.push(entry);
          this.spilled.set(entry, seq);
        }
        next = this.replays.shift();
      }
      if (!next) break;
      this.replaying = next;
      let done: WriteOutcome;
      try {
        done = await this.writeNow(next);
      } finally {
        this.replaying = undefined;
      }
      if (done.event) this.emit(done.event);
      if (done.err !== undefined && isOutage(done.err)) {
        this.replays.unshift(...done.rest);
        for (const r of done.rest) this.spillAdd(r);
        this.spillDone(next);
        throw asStoreError(done.err);
      }
      this.spillDone(next);
      if (done.err === undefined) continue;
      this.log.error({ err: done.err, requestId: next.requestId, event: 'quota_replay_failed' }, `${next.kind} replay failed and was dropped`);
    }
    this.spill?.emptied();
    // Once the writes are in Redis, the spill says so on disk before the flush is over: a process
    // that stops now leaves nothing for the next start to write again.
    await this.spill?.durable();
  }

  /**
   * How long a settle's markers live and until when the settle may be written. The marker must
   * outlive every later attempt at the same settle: a replay of one that ran but whose answer was
   * lost, or the call's own settle after recovery closed its expired reservation (recovery's
   * marker is kept a day). Both are covered when the settle is written no later than its
   * reservation plus the marker lifetime, and the lifetime is at least the reservation's TTL plus
   * MARKER_SLACK_MS (so a call that ends within its reservation is never refused a settle).
   * Without a known reservation (not reserved here, or forgotten), the settle's own time stands in.
   */
  private settleWindow(requestId: string): { markerMs: number; notAfter: number } {
    const r = this.held.get(requestId);
    const markerMs = Math.min(SETTLED_MARKER_MS, Math.max(this.markerMs, (r?.ttlMs ?? 0) + MARKER_SLACK_MS));
    return { markerMs, notAfter: (r?.at ?? this.now()) + markerMs };
  }

  /**
   * A settle too late to write safely (see settleWindow): dropped and logged. Its reservation has
   * expired by now, so recovery closes it (charged at the reservation if it was dispatched), or has.
   */
  private expire(w: Extract<Replay, { kind: 'settle' }>, now: number): WriteOutcome {
    this.expiredSettles += 1;
    this.held.delete(w.requestId);
    this.log.error(
      {
        event: 'quota_settle_expired',
        requestId: w.requestId,
        lateMs: now - w.notAfter,
        markerMs: w.markerMs,
        lines: w.lines.map((l) => ({ budgetId: l.budgetId, subject: l.subject, amount: l.amount })),
        expired: this.expiredSettles,
      },
      'settlement older than the settled-marker lifetime dropped; recovery charges the reservation instead',
    );
    return { rest: [] };
  }

  /**
   * Makes one ledger write. Resolves with the event once the journal holds it (none if it was not
   * written, e.g. a repeated settle), and on a failure with the error and what remains to write:
   * on a cluster some lines may be written and others not, and the event may be among either.
   */
  private async writeNow(w: Replay): Promise<WriteOutcome> {
    try {
      switch (w.kind) {
        case 'settle':
          return await this.settleNow(w);
        case 'release':
          return await this.releaseNow(w);
        case 'record': {
          const appended = await this.chain('refuse', w.requestId, w.event);
          return { event: appended || w.lost ? w.event : undefined, rest: [] };
        }
      }
    } catch (err) {
      return { err, rest: [{ ...w, lost: true }] };
    }
  }

  private async settleNow(w: Extract<Replay, { kind: 'settle' }>): Promise<WriteOutcome> {
    const { requestId, lines, event } = w;
    const now = this.now();
    if (lines.length > 0 && now >= w.notAfter) return this.expire(w, now);
    if (lines.length === 0) {
      const appended = event ? await this.chain('settle', requestId, event) : false;
      return { event: appended || w.lost ? event : undefined, rest: [] };
    }
    // Lines reserved but not charged (not normally the case) are released, as the memory store does.
    const charged = new Set(lines.map((l) => l.reservedKey));
    const rest = (this.held.get(requestId)?.keys ?? []).filter((k) => !charged.has(k));
    this.held.delete(requestId);
    // One flight: the settle scripts, the releases and the record's deletion. Settling is idempotent
    // (per-line markers), so a settle that fails here and is replayed later still counts once;
    // until then its reservation stays, and recovery closes it if the replay never comes.
    const record = this.deleteRecord(requestId).catch(() => undefined);
    const ordered = [...lines].sort(byReservedKey);
    const rollups = event ? rollupArgs(event) : [];
    let committed = false;
    // On a cluster the lines without the event name the line whose entry carries it, so the audit
    // can tell an event still to come (that line still reserved) from a missing one.
    const eventLine = event && this.linePerScript ? ordered[0]!.reservedKey : undefined;
    const settleGroup = async (group: LedgerLine[], withEvent: boolean): Promise<void> => {
      // On one node a script whose lines are partly settled already writes nothing and says which are
      // free; the entry is then sent again for those alone (its body names the lines it charges).
      for (let pending = group, attempt = 0; pending.length > 0 && attempt < 3; attempt++) {
        const entry = prepare({ kind: 'settle', id: requestId, at: now, lines: pending, event: withEvent ? event : undefined, settledBy: 'call', eventLine: withEvent ? undefined : eventLine });
        const j = this.journalFor(pending[0]!.reservedKey, now);
        const roll = withEvent ? rollups : [];
        const keyList = [...j.keys];
        const args = [...j.args, requestId, entry.h, entry.body, roll.length, ...roll];
        for (const l of pending) {
          pushReservationKeys(keyList, l.reservedKey);
          keyList.push(this.markerKey(l.reservedKey, requestId), l.usageKey);
          args.push(l.amount, l.expiresAt - now, w.markerMs);
        }
        const states = (await this.runLines(SETTLE, keyList, args)) as number[];
        // 3 on a replay: an earlier attempt of this settle was applied and its reply lost; its entry,
        // sent with the same event, is journaled, so the event is the sinks' now. (A settle the
        // caller repeats after it succeeded hears nothing again.)
        if (states.includes(1) || (w.lost === true && states.includes(3))) {
          if (withEvent) committed = true;
          return;
        }
        pending = pending.filter((_, i) => states[i] === 2);
      }
    };
    const groups = this.groups(ordered);
    const results = await Promise.allSettled(groups.map((group, i) => settleGroup(group, i === 0 && event !== undefined)));
    const [released] = await Promise.allSettled([this.releaseLines(requestId, rest, undefined), record]);
    const failed = groups.flatMap((group, i) => (results[i]!.status === 'rejected' ? group : []));
    const errors = [...results, released!].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    const retry: Replay[] = [];
    if (failed.length > 0) retry.push({ ...w, lines: failed, event: committed ? undefined : event, lost: true });
    if (released!.status === 'rejected') retry.push({ kind: 'release', requestId, keys: rest });
    return { event: committed ? event : undefined, err: errors[0], rest: retry };
  }

  private async releaseNow(w: Extract<Replay, { kind: 'release' }>): Promise<WriteOutcome> {
    await this.scripts.ready();
    const keys = w.keys ?? (await this.scripts.timed(this.records.get(recordKey(w.requestId)))) ?? [];
    this.held.delete(w.requestId);
    if (keys.length === 0) {
      // Nothing held that this replica can name: the event alone, in the `{journal}` stream.
      const appended = w.event ? await this.chain('release', w.requestId, w.event) : false;
      await this.deleteRecord(w.requestId).catch(() => undefined);
      return { event: appended || w.lost ? w.event : undefined, rest: [] };
    }
    const done = await this.releaseLines(w.requestId, keys, w.event, true, w.lost === true);
    if (done.failed.length === 0) await this.deleteRecord(w.requestId).catch(() => undefined);
    const rest: Replay[] = done.failed.length > 0 ? [{ kind: 'release', requestId: w.requestId, keys: done.failed, event: done.committed ? undefined : w.event, lost: true }] : [];
    return { event: done.committed ? w.event : undefined, err: done.err, rest };
  }

  /** Appends an entry without lines (a refusal, or an event whose lines are unknown) to the `{journal}` stream. */
  /** Returns false when the request's entry was journaled before (a repeat after a lost reply). */
  private async chain(kind: 'refuse' | 'release' | 'settle', requestId: string, event: DecisionRecord): Promise<boolean> {
    const now = this.now();
    const entry = prepare({ kind, id: requestId, at: now, event, settledBy: kind === 'settle' ? 'call' : undefined });
    const roll = rollupArgs(event);
    const j = this.journalArgs(this.globalBase, now);
    return Number(await this.run(CHAIN, [...j.keys], [...j.args, entry.h, entry.body, roll.length, ...roll, requestId, this.markerMs])) === 1;
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

  /**
   * Releases a request's lines with a `release` entry (the event, if any, goes with the first line
   * in key order). Rejects on the first failure, unless `partial`: then resolves with the lines it
   * could not release, the error, and whether the event was journaled.
   */
  private async releaseLines(requestId: string, reservedKeys: string[], event: DecisionRecord | undefined): Promise<void>;
  private async releaseLines(requestId: string, reservedKeys: string[], event: DecisionRecord | undefined, partial: true, lost: boolean): Promise<{ committed: boolean; failed: string[]; err?: unknown }>;
  private async releaseLines(requestId: string, reservedKeys: string[], event: DecisionRecord | undefined, partial = false, lost = false): Promise<{ committed: boolean; failed: string[]; err?: unknown } | void> {
    const now = this.now();
    const rollups = event ? rollupArgs(event) : [];
    let committed = false;
    const groups = this.groups([...reservedKeys].sort());
    const results = await Promise.allSettled(
      groups.map(async (group, i) => {
        const withEvent = i === 0 && event !== undefined;
        const entry = prepare({ kind: 'release', id: requestId, at: now, event: withEvent ? event : undefined });
        const roll = withEvent ? rollups : [];
        const j = this.journalFor(group[0]!, now);
        const reply = (await this.runLines(
          RELEASE,
          [...j.keys, ...group.flatMap(reservationKeys)],
          [...j.args, requestId, entry.h, entry.body, withEvent ? 1 : 0, roll.length, ...roll, ...(withEvent ? [this.markerMs] : [])],
        )) as [number, number];
        // Journaled before (reply[1] 0): by an attempt whose reply was lost, when this is its replay.
        if (withEvent && (reply[1] === 1 || lost)) committed = true;
      }),
    );
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    if (!partial) {
      if (errors.length > 0) throw errors[0];
      return;
    }
    return { committed, failed: groups.flatMap((g, i) => (results[i]!.status === 'rejected' ? g : [])), err: errors[0] };
  }

  /** Adds lines to the sweep's index (a cluster, where it is another slot than the lines); on a failure they are kept and sent again by the sweep. */
  private index(keys: string[], expiresAt: number): Promise<void> {
    return this.scripts.run(INDEX, [this.openIndex], [expiresAt, ...keys]).then(
      () => undefined,
      () => {
        for (const k of keys) this.unindexed.set(k, Math.max(this.unindexed.get(k) ?? 0, expiresAt));
        while (this.unindexed.size > UNINDEXED_MAX) this.unindexed.delete(this.unindexed.keys().next().value!);
      },
    );
  }

  private async sweepNow(): Promise<{ lines: number; closed: number }> {
    const now = this.now();
    const retry = [...this.unindexed];
    this.unindexed.clear();
    await Promise.all(retry.map(([k, expiresAt]) => this.index([k], expiresAt)));
    const due = (await this.scripts.run(DUE, [this.openIndex], [now, SWEEP_BATCH])) as string[];
    let closed = 0;
    for (const r of due) {
      const j = this.journalFor(r, now);
      const events: string[] = [];
      const open = (await this.runLines(SWEEP, [...j.keys, ...reservationKeys(r)], j.args, events)) as number;
      closed += events.length;
      if (open === 0) await this.scripts.run(INDEX, [this.openIndex], ['drop', now, r]);
    }
    return { lines: due.length, closed };
  }

  private scheduleSweep(every: number): void {
    const delay = Math.round(every * (0.8 + Math.random() * 0.4));
    this.sweepTimer = setTimeout(() => {
      if (this.closed) return;
      if (this.scripts.isReady()) this.checkEvictionInBackground();
      const pass = this.scripts.isReady() ? this.sweep() : Promise.resolve({ lines: 0, closed: 0 });
      pass
        .catch((err: unknown) => this.log.warn({ err, event: 'quota_sweep_failed' }, 'reservation sweep failed; next pass will retry'))
        .finally(() => {
          if (!this.closed) this.scheduleSweep(every);
        });
    }, delay);
    this.sweepTimer.unref();
  }

  /** The journal a group of lines writes to (keys J, JH, ROLL and the journal arguments). */
  private journalFor(reservedKey: string, now: number): { keys: readonly string[]; args: (string | number)[] } {
    return this.journalArgs(this.linePerScript ? reservedKey : this.globalBase, now);
  }

  private journalArgs(base: string, now: number): { keys: readonly string[]; args: (string | number)[] } {
    const day = dayOf(now);
    let made = this.journalKeysMade.get(base);
    if (made?.day !== day) {
      const k = journalKeys(base);
      made = { day, keys: [k.stream, k.head, k.roll(day)] };
      // Bounded (a cluster has a journal per line): started again when full.
      if (this.journalKeysMade.size >= 10_000) this.journalKeysMade.clear();
      this.journalKeysMade.set(base, made);
    }
    return { keys: made.keys, args: [now, this.trim[0], this.trim[1], this.rollupTtlMs] };
  }

  /** A journal's keys (stream, head, the day's rollup hash) by base, for the day they were made: the same strings on every call of the day. */
  private readonly journalKeysMade = new Map<string, { day: string; keys: readonly string[] }>();

  /** The store prefix (the `{journal}` base without its tag), for SCAN patterns. */
  private prefixOfBase(): string {
    return this.globalBase.slice(0, -'{journal}'.length);
  }

  /** Keys matching `pattern` of `type` on every master. */
  private async scanKeys(pattern: string, type: string): Promise<string[]> {
    const found = new Set<string>();
    for (const node of await this.scripts.nodes()) {
      let cursor = '0';
      do {
        const page = await this.scripts.timed(node.scan(cursor, { MATCH: pattern, COUNT: 1000, TYPE: type }));
        cursor = String(page.cursor);
        for (const k of page.keys) found.add(String(k));
      } while (cursor !== '0');
    }
    return [...found].sort();
  }

  /**
   * The settled marker of a request: one per call on a single node (`<prefix>{journal}:s:<id>`,
   * every line of a call settles in one script, so one marker says it for all of them), one per
   * line on a cluster (`R:s:<id>`, in the line's slot). Always `<journal base>:s:<id>`, which is
   * how recovery in Lua names it too.
   */
  private markerKey(reservedKey: string, requestId: string): string {
    return `${this.linePerScript ? reservedKey : this.globalBase}:s:${requestId}`;
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
    // Beyond the bound in memory (or behind writes already there, to keep the order), on disk only.
    if (this.spill && (this.spill.overflowing > 0 || this.replays.length >= this.maxReplays) && this.spill.canOverflow(this.maxSpilled)) {
      this.spill.overflow(replay);
      return;
    }
    this.replays.push(replay);
    this.spillAdd(replay);
    if (this.replays.length > this.maxReplays) {
      const dropped = this.replays.shift()!;
      this.spillDone(dropped);
      this.droppedReplays += 1;
      this.log.error(
        { event: 'quota_replay_overflow', requestId: dropped.requestId, kind: dropped.kind, dropped: this.droppedReplays, max: this.maxReplays },
        'replay queue full; oldest ledger write dropped',
      );
    }
  }

  private spillAdd(replay: Replay): void {
    if (this.spill) this.spilled.set(replay, this.spill.add(replay));
  }

  private spillDone(replay: Replay): void {
    const seq = this.spilled.get(replay);
    if (seq !== undefined) this.spill!.done(seq);
  }

  private remember(requestId: string, held: Held): void {
    this.held.set(requestId, held);
    if (this.held.size > LOCAL_RECORDS_MAX) this.held.delete(this.held.keys().next().value!);
  }

  /**
   * Runs a script that purges (so may recover) and returns `{result, events}`: the events of the
   * entries recovery wrote go to the listeners (or into `into`), the result to the caller.
   */
  private async runLines(script: LuaScript, keys: string[], args: (string | number | Buffer)[], into?: string[]): Promise<unknown> {
    const [result, events] = (await this.run(script, keys, args)) as [unknown, string[]];
    if (events.length > 0) {
      into?.push(...events);
      for (const e of events) this.emit(JSON.parse(e) as DecisionRecord);
    }
    return result;
  }

  private async run(script: LuaScript, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    let reply: unknown;
    try {
      reply = await this.scripts.run(script, keys, args);
    } catch (err) {
      // A hung master reports nothing; if a replica replaced it, only a new slot map shows that.
      if (this.refreshSlots && isOutage(err)) this.refreshSlots();
      throw err;
    }
    // A hung server that recovers never fires 'ready' again; the first answer is the cue to replay.
    if (this.pendingReplays() > 0 && !this.flushing && !this.closed) this.flushInBackground();
    return reply;
  }

  /**
   * While writes wait, tries them again every REPLAY_RETRY_MS: a dropped connection that comes
   * back replays at 'ready', but a hung server that recovers fires nothing, and an idle gateway
   * makes no call whose answer would be the cue (its queued events would reach the journal only
   * at the next call or at shutdown). A try that finds Redis still hung fails at the command
   * timeout, quietly: the outage was logged when the writes were queued.
   */
  private retryReplays(): void {
    if (this.replayTimer || this.closed) return;
    this.replayTimer = setTimeout(() => {
      this.replayTimer = undefined;
      if (this.closed || this.pendingReplays() === 0) return;
      const pass = this.flushing || !this.scripts.isReady() ? Promise.resolve() : this.flushReplays();
      pass.catch(() => undefined).finally(() => {
        if (this.pendingReplays() > 0) this.retryReplays();
      });
    }, REPLAY_RETRY_MS);
    this.replayTimer.unref();
  }

  private flushInBackground(): void {
    this.flushReplays().catch((err: unknown) => this.log.warn({ err, event: 'quota_replay_deferred' }, 'ledger write replay deferred'));
  }
}

/** A node's host:port for a log line (never its URL, which may hold a password). */
function nodeAddress(node: RedisNode): string | undefined {
  const socket = (node as { options?: { socket?: { host?: string; port?: number } } }).options?.socket;
  return socket?.host !== undefined && socket.port !== undefined ? `${socket.host}:${socket.port}` : undefined;
}

function recordKey(requestId: string): string {
  return `req:${requestId}`;
}
