/**
 * The refused calls of the Redis journal, for a process that shows them again and again (the
 * console's refusals page): each journal stream is read once, then on from the last entry read,
 * keeping only the decisions of refused calls. A stream that lost entries to retention loses their
 * refusals here too (checked with the stream's first entry at each read), and a stream that is gone
 * takes its refusals with it, so what is shown is what the journal holds, as a full read shows it.
 *
 * Each refused request is kept once (its first refused decision), in stream order, the streams in
 * the order the store lists them. Past MAX_REFUSED refusals nothing is kept any more (a storm of
 * refusals is not held in memory) and the console reads the journal whole, as it did before.
 *
 * The same pass notes where every decision is (its request id's 32-bit hash and its entry's id, 16
 * bytes a decision), so a request's page reads the one or few entries whose hash matches instead
 * of the whole journal; past MAX_PLACES decisions it reads the journal whole again.
 */
import type { DecisionEvent } from '../metering/events.js';
import type { RedisQuotaStore } from '../quota/redis.js';
import type { Decision } from './journalReader.js';
import { oneAtATime } from './oneAtATime.js';

interface Kept {
  /** The last entry read: the next read starts after it. */
  after?: string;
  refused: { streamId: string; d: Decision }[];
  places: Places;
}

const MAX_PLACES = 2_000_000;

/** FNV-1a over the UTF-16 code units: a request id's 32-bit hash. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Where a stream's decisions are, in stream order: each request id's hash and its entry's id. */
class Places {
  private hashes = new Uint32Array(1024);
  private ms = new Float64Array(1024);
  /** The sequence part of an entry id (entries within one millisecond): far below 2^32. */
  private seqs = new Uint32Array(1024);
  size = 0;

  add(hash: number, streamId: string): void {
    if (this.size === this.hashes.length) {
      const grow = <T extends Uint32Array | Float64Array>(a: T, make: (n: number) => T): T => {
        const b = make(a.length * 2);
        b.set(a);
        return b;
      };
      this.hashes = grow(this.hashes, (n) => new Uint32Array(n));
      this.ms = grow(this.ms, (n) => new Float64Array(n));
      this.seqs = grow(this.seqs, (n) => new Uint32Array(n));
    }
    const dash = streamId.indexOf('-');
    this.hashes[this.size] = hash;
    this.ms[this.size] = Number(streamId.slice(0, dash));
    this.seqs[this.size] = Number(streamId.slice(dash + 1));
    this.size += 1;
  }

  /** The entry ids whose request id hashes to `hash`. */
  *find(hash: number): Generator<string> {
    for (let i = 0; i < this.size; i++) if (this.hashes[i] === hash) yield `${this.ms[i]}-${this.seqs[i]}`;
  }
}

const CARRIES_EVENT: ReadonlySet<string> = new Set(['refuse', 'settle', 'recover', 'release']);

const MAX_REFUSED = 20_000;

/** Whether stream id `a` comes before `b` (`<ms>-<seq>`). */
function before(a: string, b: string): boolean {
  const [am, as] = a.split('-').map(Number) as [number, number];
  const [bm, bs] = b.split('-').map(Number) as [number, number];
  return am < bm || (am === bm && as < bs);
}

export class RedisRefusals {
  private readonly streams = new Map<string, Kept>();
  private order: string[] = [];
  private readonly seen = new Set<string>();
  /** One refresh at a time: two views at once would otherwise read the same entries twice. */
  private readonly refreshed = oneAtATime(() => this.refresh());
  private overflowed = false;
  private placesOverflowed = false;

  constructor(
    private readonly store: RedisQuotaStore,
    private readonly maxRefused = MAX_REFUSED,
    private readonly maxPlaces = MAX_PLACES,
  ) {}

  /** The decisions of refused calls committed from `from` (inclusive) to `to` (exclusive, epoch ms); none when there are too many to keep. */
  async refused(from: number, to: number): Promise<Decision[] | undefined> {
    await this.refreshed();
    if (this.overflowed) return undefined;
    const out: Decision[] = [];
    for (const name of this.order) for (const { d } of this.streams.get(name)!.refused) if (d.at >= from && d.at < to) out.push(d);
    return out;
  }

  /**
   * The first decision the journal holds for a request (as a pass over the streams finds it), or
   * none; null when there were too many decisions to note where each is.
   */
  async find(requestId: string): Promise<Decision | undefined | null> {
    await this.refreshed();
    if (this.placesOverflowed) return null;
    const hash = hash32(requestId);
    for (const name of this.order) {
      for (const at of this.streams.get(name)!.places.find(hash)) {
        const b = (await this.store.journalEntryAt(name, at))?.body;
        if (b?.event && CARRIES_EVENT.has(b.kind) && String(b.event['request.id']) === requestId) return { event: b.event as unknown as DecisionEvent, at: b.at, kind: b.kind, charges: [] };
      }
    }
    return undefined;
  }

  private async refresh(): Promise<void> {
    const names = await this.store.ownJournalStreams();
    const present = new Set(names);
    for (const name of [...this.streams.keys()]) if (!present.has(name)) this.streams.delete(name);
    for (const name of names) {
      let kept = this.streams.get(name);
      if (!kept) this.streams.set(name, (kept = { refused: [], places: new Places() }));
      if (kept.refused.length > 0) {
        // Retention trims a stream from its start: what it no longer holds is not shown.
        let first: string | undefined;
        for await (const e of this.store.journalEntries({ stream: name, pageSize: 1 })) {
          first = e.streamId;
          break;
        }
        kept.refused = first === undefined ? [] : kept.refused.filter((r) => !before(r.streamId, first));
      }
      for await (const { streamId, entry } of this.store.journalEntries({ stream: name, after: kept.after })) {
        kept.after = streamId;
        const b = entry.body;
        if (!b?.event || !CARRIES_EVENT.has(b.kind)) continue;
        const id = String(b.event['request.id']);
        if (!this.placesOverflowed) kept.places.add(hash32(id), streamId);
        if (b.event.outcome !== 'refused' || this.overflowed || this.seen.has(id)) continue;
        this.seen.add(id);
        kept.refused.push({ streamId, d: { event: b.event as unknown as DecisionEvent, at: b.at, kind: b.kind, charges: [] } });
      }
    }
    this.order = names;
    if (!this.overflowed && [...this.streams.values()].reduce((n, k) => n + k.refused.length, 0) > this.maxRefused) {
      this.overflowed = true;
      for (const k of this.streams.values()) k.refused = [];
      this.seen.clear();
    }
    if (!this.placesOverflowed && [...this.streams.values()].reduce((n, k) => n + k.places.size, 0) > this.maxPlaces) {
      this.placesOverflowed = true;
      for (const k of this.streams.values()) k.places = new Places();
    }
  }
}
