/**
 * The Lua scripts of the Redis quota ledger, and the runner that executes them with a deadline.
 * The reserve, settle, release and read scripts each take one or more budget lines. On a single
 * node one script carries every line of a call (one command, and a reservation that is atomic
 * across lines); on a Redis Cluster each line goes alone, since a line's keys share its
 * `{budget|subject}` hash tag and so one slot, but different lines do not. Every script first
 * purges reservations whose expiry (a score in the line's expiry sorted set) is at or before the
 * `now` it is given, so the caller's clock decides expiry.
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
 * Reserves on several lines at once, all or none. Per line, KEYS: R, R:x, R:s:<id>, readKeys...
 * ARGV: requestId, now, reservation expiry, then per line: key count, amount, limit.
 * Returns per line {state, used, reserved}: state 1 reserved now, 2 already reserved or settled,
 * 0 refused, 3 would fit but nothing was reserved because another line said 0 or 2.
 */
export const RESERVE = script(
  'reserve',
  `
local id, now, expiry = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out, lines, k, blocked = {}, {}, 1, false
for a = 4, #ARGV, 3 do
  local n, amount, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local res, exp, marker = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  purge(res, exp, now)
  local state, used, reserved = 3, 0, 0
  if redis.call('EXISTS', marker) == 1 or redis.call('HEXISTS', res, id) == 1 then
    state = 2
  else
    for i = k + 3, k + n - 1 do used = used + (tonumber(redis.call('GET', KEYS[i])) or 0) end
    reserved = reservedSum(res)
    if used + reserved + amount > limit then state = 0 end
  end
  if state ~= 3 then blocked = true end
  out[#out + 1] = {state, used, reserved}
  lines[#lines + 1] = {res, exp, ARGV[a + 1]}
  k = k + n
end
for i, l in ipairs(lines) do
  if not blocked then
    redis.call('HSET', l[1], id, l[3])
    redis.call('ZADD', l[2], expiry, id)
    out[i][1] = 1
  end
  tidy(l[1], l[2], now)
end
return out
`,
);

/**
 * Charges several lines. Per line, KEYS: R, R:x, R:s:<id>, usageKey.
 * ARGV: requestId, now, then per line: amount, usage ttl ms, marker ttl ms.
 * Returns per line 1 when charged, 0 when the marker shows the request was already settled there.
 */
export const SETTLE = script(
  'settle',
  `
local id, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for a = 3, #ARGV, 3 do
  local k = (a - 3) / 3 * 4 + 1
  local res, exp, marker = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  purge(res, exp, now)
  if redis.call('EXISTS', marker) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HDEL', res, id)
    redis.call('ZREM', exp, id)
    tidy(res, exp, now)
    charge(KEYS[k + 3], tonumber(ARGV[a]), tonumber(ARGV[a + 1]))
    redis.call('SET', marker, '1', 'PX', ARGV[a + 2])
    out[#out + 1] = 1
  end
end
return out
`,
);

/**
 * Drops a request's reservation on several lines. Per line, KEYS: R, R:x.  ARGV: requestId, now.
 * Returns how many live reservations were dropped.
 */
export const RELEASE = script(
  'release',
  `
local id, now = ARGV[1], tonumber(ARGV[2])
local dropped = 0
for k = 1, #KEYS, 2 do
  purge(KEYS[k], KEYS[k + 1], now)
  dropped = dropped + redis.call('HDEL', KEYS[k], id)
  redis.call('ZREM', KEYS[k + 1], id)
  tidy(KEYS[k], KEYS[k + 1], now)
end
return dropped
`,
);

/**
 * Reads several lines. Per line, KEYS: R, R:x, readKeys...  ARGV: now, then per line its key count.
 * Returns per line {used, reserved}.
 */
export const READ = script(
  'read',
  `
local now = tonumber(ARGV[1])
local out, k = {}, 1
for a = 2, #ARGV do
  local n = tonumber(ARGV[a])
  purge(KEYS[k], KEYS[k + 1], now)
  tidy(KEYS[k], KEYS[k + 1], now)
  local used = 0
  for i = k + 2, k + n - 1 do used = used + (tonumber(redis.call('GET', KEYS[i])) or 0) end
  out[#out + 1] = {used, reservedSum(KEYS[k])}
  k = k + n
end
return out
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
