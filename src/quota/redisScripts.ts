/**
 * The Lua scripts of the Redis quota ledger, and the runner that executes them with a deadline.
 * Each script touches the keys of exactly one budget line, all of which share that line's
 * `{budget|subject}` hash tag, so every script runs in one Redis Cluster slot. Every script first purges reservations whose expiry (a score in the line's
 * expiry sorted set) is at or before the `now` it is given, so the caller's clock decides expiry.
 *
 * Keys of one line (R is the line's reservedKey):
 * - R          hash        requestId -> reserved amount
 * - R:x        sorted set  requestId -> reservation expiry, epoch ms
 * - R:s:<id>   string      settled marker of request <id> on this line
 * - usage keys string      settled usage counters (INCRBY)
 */
import { createHash } from 'node:crypto';
import type { createClient } from '@keyv/redis';
import { GatewayError } from '../errors.js';
import { connectCluster, isCluster, masterClients, openNodeClients, type ClusterNodeClient, type RedisCluster } from './redisCluster.js';

export type RedisClient = ReturnType<typeof createClient>;

/** What the ledger talks to: one node, or a cluster that routes each command by its first key. */
export type RedisConnection = RedisClient | RedisCluster;

/** One node's connection: the single node itself, or a cluster master. */
export type RedisNode = RedisClient | ClusterNodeClient;

/** A Lua script with its SHA1, so it can be run by EVALSHA and fall back to EVAL after a restart. */
export interface LuaScript {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

function script(name: string, body: string): LuaScript {
  const source = `${PRELUDE}\n${body}`;
  return { name, source, sha: createHash('sha1').update(source).digest('hex') };
}

/** Helpers shared by every script. HDEL is batched to stay far below Lua's unpack limit. */
const PRELUDE = `
local function purge(res, exp, now)
  local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  if #dead == 0 then return end
  for i = 1, #dead, 500 do
    redis.call('HDEL', res, unpack(dead, i, math.min(i + 499, #dead)))
  end
  redis.call('ZREMRANGEBYSCORE', exp, '-inf', now)
end

local function reservedSum(res)
  local total = 0
  for _, v in ipairs(redis.call('HVALS', res)) do total = total + tonumber(v) end
  return total
end

-- The reservation keys live as long as their latest entry (plus a minute), and go when empty.
local function tidy(res, exp, now)
  local last = redis.call('ZRANGE', exp, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', res, exp)
    return
  end
  local ttl = math.max(1, math.floor(tonumber(last[2]) - now)) + 60000
  redis.call('PEXPIRE', res, ttl)
  redis.call('PEXPIRE', exp, ttl)
end

-- Adds to a usage counter and extends (never shortens) its life to ttl ms from now.
local function charge(key, amount, ttl)
  if ttl > 0 then
    redis.call('INCRBY', key, amount)
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  elseif redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, amount)
  end
end
`;

/**
 * KEYS: R, R:x, R:s:<id>, readKeys...  ARGV: requestId, amount, limit, now, reservation expiry.
 * Returns {state, used, reserved}: state 1 reserved now, 2 already reserved or settled, 0 refused.
 */
export const RESERVE = script(
  'reserve',
  `
local now = tonumber(ARGV[4])
purge(KEYS[1], KEYS[2], now)
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return {2, 0, 0}
end
local used = 0
for i = 4, #KEYS do used = used + (tonumber(redis.call('GET', KEYS[i])) or 0) end
local reserved = reservedSum(KEYS[1])
if used + reserved + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  tidy(KEYS[1], KEYS[2], now)
  return {0, used, reserved}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
tidy(KEYS[1], KEYS[2], now)
return {1, used, reserved}
`,
);

/**
 * KEYS: R, R:x, R:s:<id>, usageKey  ARGV: requestId, amount, now, usage ttl ms, marker ttl ms.
 * Returns 1 when charged, 0 when the marker shows this request was already settled on this line.
 */
export const SETTLE = script(
  'settle',
  `
local now = tonumber(ARGV[3])
purge(KEYS[1], KEYS[2], now)
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
tidy(KEYS[1], KEYS[2], now)
charge(KEYS[4], tonumber(ARGV[2]), tonumber(ARGV[4]))
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
return 1
`,
);

/** KEYS: R, R:x  ARGV: requestId, now. Returns 1 when a live reservation was dropped. */
export const RELEASE = script(
  'release',
  `
local now = tonumber(ARGV[2])
purge(KEYS[1], KEYS[2], now)
local dropped = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
tidy(KEYS[1], KEYS[2], now)
return dropped
`,
);

/** KEYS: R, R:x, readKeys...  ARGV: now. Returns {used, reserved}. */
export const READ = script(
  'read',
  `
local now = tonumber(ARGV[1])
purge(KEYS[1], KEYS[2], now)
tidy(KEYS[1], KEYS[2], now)
local used = 0
for i = 3, #KEYS do used = used + (tonumber(redis.call('GET', KEYS[i])) or 0) end
return {used, reservedSum(KEYS[1])}
`,
);

/** KEYS: usageKey  ARGV: delta (may be negative), ttl ms. Returns the counter after the change. */
export const ADJUST = script(
  'adjust',
  `
charge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return tonumber(redis.call('GET', KEYS[1]) or '0')
`,
);

/** Every script, loaded on each (re)connection so EVALSHA finds them even when an answer comes late. */
export const ALL_SCRIPTS: readonly LuaScript[] = [RESERVE, SETTLE, RELEASE, READ, ADJUST];

/** Redis error replies that mean "not available now" rather than a bug in a script. */
const UNAVAILABLE_REPLIES = new Set(['LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'CLUSTERDOWN', 'TRYAGAIN', 'NOREPLICAS', 'OOM', 'MISCONF']);

/** The code of a Redis error reply (`NOSCRIPT No matching script`), or undefined for client-side errors. */
function replyCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  return /^([A-Z][A-Z_]+) /.exec(err.message)?.[1];
}

/**
 * True when an error means the store cannot be reached now: the client is offline or closed, a
 * command timed out, or Redis answered with a transient error. Other error replies are bugs.
 */
export function isOutage(err: unknown): boolean {
  if (err instanceof GatewayError) return err.code === 'QUOTA_STORE_UNAVAILABLE';
  const code = replyCode(err);
  return code === undefined || UNAVAILABLE_REPLIES.has(code);
}

/** An outage as the GatewayError callers see; anything else is returned unchanged. */
export function asStoreError(err: unknown): unknown {
  if (err instanceof GatewayError || !isOutage(err)) return err;
  return new GatewayError('QUOTA_STORE_UNAVAILABLE', 'The quota store is unreachable.', {}, { cause: err });
}

/**
 * Runs scripts on a node-redis client or cluster client: EVALSHA with an EVAL fallback, every
 * command bounded by a deadline, and no waiting while disconnected except for the very first
 * connection. On a cluster each script goes to the master of its line's slot (the first key).
 */
export class ScriptRunner {
  private connecting: Promise<void> | undefined;
  private waitUntil = 0;
  private stopped = false;

  constructor(
    private readonly client: RedisConnection,
    private readonly timeoutMs: number,
    /** Pause before the next attempt at a cluster's first discovery (a single node retries by itself). */
    private readonly retryDelay: (attempt: number) => number,
  ) {}

  /** Starts connecting and keeps retrying; the first commands wait for it up to the timeout. */
  start(onFailure: (err: unknown) => void): void {
    this.waitUntil = Date.now() + this.timeoutMs;
    const client = this.client;
    const connected = isCluster(client)
      ? connectCluster(client, this.retryDelay, () => this.stopped, onFailure)
      : client.connect().then(
          () => undefined,
          (err: unknown) => {
            if (!this.stopped) onFailure(err);
          },
        );
    this.connecting = connected.finally(() => {
      this.connecting = undefined;
    });
  }

  /**
   * Loads every script on `node`, or on every node (each cluster master), so EVALSHA finds them
   * even when a late NOSCRIPT could no longer fall back.
   */
  async preload(node?: RedisNode): Promise<void> {
    const targets = node ? [node] : await this.nodes();
    await Promise.all(targets.flatMap((n) => ALL_SCRIPTS.map((s) => this.timed(n.scriptLoad(s.source)))));
  }

  /** The connection of every node that holds data: the single node, or every cluster master. */
  async nodes(): Promise<RedisNode[]> {
    await this.ready();
    return isCluster(this.client) ? this.timed(masterClients(this.client)) : [this.client];
  }

  async run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown> {
    await this.ready();
    const options = { keys, arguments: args.map(String) };
    // A master that never saw the script (new after a failover, or restarted) answers NOSCRIPT;
    // EVAL, routed by the same first key, runs it there and caches it for the next EVALSHA.
    try {
      return await this.timed(this.client.evalSha(script.sha, options));
    } catch (err) {
      if (replyCode(err) !== 'NOSCRIPT') throw err;
      return await this.timed(this.client.eval(script.source, options));
    }
  }

  /** The value of a plain string key, from whichever node holds it. */
  get(key: string): Promise<string | null> {
    return this.timed(this.client.get(key));
  }

  /** True while commands can be sent: the node is connected, or the cluster's slot map is known. */
  isReady(): boolean {
    // A cluster is open from the start of its first discovery, before it knows any slot.
    return isCluster(this.client) ? this.client.isOpen && this.client.masters.length > 0 : this.client.isReady;
  }

  /**
   * Bounds a command by the timeout. node-redis's own `timeout` only covers a command until it is
   * written, so a server that accepts the bytes and never answers needs this.
   */
  async timed<T>(command: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new GatewayError('QUOTA_STORE_UNAVAILABLE', `The quota store did not answer within ${this.timeoutMs} ms.`)),
        this.timeoutMs,
      );
    });
    try {
      return await Promise.race([command, expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Throws QUOTA_STORE_UNAVAILABLE unless connected; only the first connection is waited for. */
  async ready(): Promise<void> {
    if (this.isReady()) return;
    const wait = this.waitUntil - Date.now();
    if (this.connecting && !this.stopped && wait > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.connecting, new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))]);
      clearTimeout(timer);
      if (this.isReady()) return;
    }
    throw new GatewayError('QUOTA_STORE_UNAVAILABLE', 'The quota store is not connected.');
  }

  /** Closes the connection(s): gracefully when Redis answers in time, at once otherwise. */
  async stop(): Promise<void> {
    this.stopped = true;
    const client = this.client;
    // Listed first: closing a cluster forgets its nodes, and a hung one must still be destroyed.
    const nodes: RedisNode[] = isCluster(client) ? openNodeClients(client) : [client];
    if (client.isOpen && nodes.every((n) => n.isReady)) {
      try {
        await this.timed(client.close());
        return;
      } catch {
        // A hung server would hold close() forever.
      }
    }
    if (isCluster(client) && client.isOpen) client.destroy();
    for (const n of nodes) if (n.isOpen) n.destroy();
  }
}
