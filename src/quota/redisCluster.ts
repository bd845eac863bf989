/**
 * Redis Cluster for the quota ledger: the node-redis cluster client, built with the same fail-fast
 * options as the single-node client, and kept aware of the cluster's shape.
 *
 * node-redis routes a command by its first key (EVAL and EVALSHA included: a script's keys are one
 * line's, all in one slot) and follows MOVED and ASK. Three things it leaves to us:
 * - a first discovery that finds no seed node is not retried (`connectCluster` keeps trying);
 * - the slot map is refreshed only on MOVED or ASK, which a dead or hung master never sends, so a
 *   failover would go unnoticed: node errors and failed commands ask for a (throttled) check of
 *   the slot map (`watchCluster`);
 * - SCRIPT LOAD and SCAN reach one node: `masterClients` lists every master for them.
 */
import { createCluster, type RedisClientOptions } from '@keyv/redis';

export type RedisCluster = ReturnType<typeof createCluster>;

/** One master's own connection, as `nodeClient` hands it out. */
export type ClusterNodeClient = Awaited<ReturnType<RedisCluster['nodeClient']>>;

/** Options shared by the single-node client and every node connection of the cluster client. */
export type NodeDefaults = Pick<RedisClientOptions, 'disableOfflineQueue' | 'commandsQueueMaxLength'> & {
  socket: { connectTimeout: number; reconnectStrategy: (attempt: number) => number };
};

/** At most one slot-map refresh per this interval, however many node errors arrive. */
const REFRESH_EVERY_MS = 1000;

/**
 * A cluster client seeded by `nodes` (`redis://` or `rediss://` URLs of some of its nodes).
 * Discovered nodes are dialled by host and port alone, so credentials and TLS are taken from the
 * first URL and applied to every node.
 */
export function createClusterClient(nodes: string[], defaults: NodeDefaults): RedisCluster {
  const [first] = nodes;
  if (first === undefined) throw new RangeError('clusterNodes needs at least one node URL');
  const seed = new URL(first);
  const tls = seed.protocol === 'rediss:';
  return createCluster({
    rootNodes: nodes.map((url) => ({ url })),
    defaults: {
      ...defaults,
      ...(seed.username ? { username: decodeURIComponent(seed.username) } : {}),
      ...(seed.password ? { password: decodeURIComponent(seed.password) } : {}),
      socket: tls ? { ...defaults.socket, tls: true } : defaults.socket,
    },
  });
}

/** True for a cluster client (KeyvRedis tells them apart the same way). */
export function isCluster(client: object): client is RedisCluster {
  return 'masters' in client && 'nodeClient' in client;
}

/**
 * Keeps trying the first discovery, backing off by `delay(attempt)`, until it succeeds or `stopped()`.
 * `onFailure` hears about the first failed attempt only; later ones are reported as node errors.
 */
export async function connectCluster(cluster: RedisCluster, delay: (attempt: number) => number, stopped: () => boolean, onFailure: (err: unknown) => void): Promise<void> {
  for (let attempt = 0; !stopped(); attempt++) {
    try {
      await cluster.connect();
      // Closed while discovering: the nodes it just connected to would otherwise stay open.
      if (stopped()) cluster.destroy();
      return;
    } catch (err) {
      if (stopped()) return;
      if (attempt === 0) onFailure(err);
      await new Promise((resolve) => setTimeout(resolve, delay(attempt)).unref());
    }
  }
}

/** Every master's connection; waits for masters still connecting. */
export function masterClients(cluster: RedisCluster): Promise<ClusterNodeClient[]> {
  return Promise.all(cluster.masters.map((m) => cluster.nodeClient(m)));
}

/** Every node connection open right now, masters or not (closing must reach them all). */
export function openNodeClients(cluster: RedisCluster): ClusterNodeClient[] {
  return [...cluster.nodeByAddress.values()].flatMap((n) => (n.client ? [n.client] : []));
}

export interface ClusterWatch {
  /** A node or the discovery failed; called for every failed attempt, so report once per outage. */
  down(err: unknown): void;
  /** A master's connection is ready: after the first discovery, a reconnect or a failover. */
  nodeReady(node: ClusterNodeClient): void;
  stopped(): boolean;
  /** How long a master may take to answer CLUSTER SLOTS before the next one is asked. */
  timeoutMs: number;
}

/**
 * Reports node failures and node readiness, and refreshes the slot map after a node error so a
 * replica promoted by a failover takes over its slots without a restart. Returns the (throttled)
 * refresh, for failures no node reports, such as a command timing out on a hung master.
 */
export function watchCluster(cluster: RedisCluster, watch: ClusterWatch): () => void {
  const seen = new WeakSet<object>();
  let lastRefresh = 0;
  // node-redis announces a node connection's first 'ready' only; later ones come from the node itself.
  const track = () => {
    for (const master of cluster.masters) {
      const node = master.client;
      if (!node || seen.has(node)) continue;
      seen.add(node);
      node.on('ready', () => watch.nodeReady(node));
      if (node.isReady) watch.nodeReady(node);
    }
  };
  const refresh = () => {
    if (watch.stopped() || !cluster.isOpen || Date.now() - lastRefresh < REFRESH_EVERY_MS) return;
    lastRefresh = Date.now();
    refreshSlots(cluster, watch.timeoutMs).then(track, () => undefined);
  };
  cluster.on('connect', track);
  cluster.on('node-ready', track);
  cluster.on('error', (err: unknown) => watch.down(err));
  cluster.on('node-error', (err: unknown) => {
    watch.down(err);
    refresh();
  });
  return refresh;
}

/**
 * Asks the masters, one at a time and each within `timeoutMs`, who serves which slots; when the
 * first to answer names a master the client does not route to, the client rediscovers from that
 * node. Starting from a node that has just answered matters: node-redis runs one rediscovery at a
 * time, and one stuck on a hung node would block every later one.
 */
async function refreshSlots(cluster: RedisCluster, timeoutMs: number): Promise<void> {
  const candidates = cluster.masters.flatMap((m) => (m.client?.isReady ? [m.client] : []));
  for (const node of candidates.sort(() => Math.random() - 0.5)) {
    let shards: Awaited<ReturnType<ClusterNodeClient['clusterSlots']>>;
    try {
      shards = await withDeadline(node.clusterSlots(), timeoutMs);
    } catch {
      continue;
    }
    const moved = shards.some((s) => cluster.slots[s.from]?.master.address !== `${s.master.host}:${s.master.port}`);
    // `_slots.rediscover` is the refresh node-redis itself runs on MOVED; no public method exposes it.
    if (moved) await withDeadline(cluster._slots.rediscover(node), timeoutMs * 2);
    return;
  }
}

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}
