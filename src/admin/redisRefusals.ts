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
 */
import type { DecisionEvent } from '../metering/events.js';
import type { RedisQuotaStore } from '../quota/redis.js';
import type { Decision } from './journalReader.js';

interface Kept {
  /** The last entry read: the next read starts after it. */
  after?: string;
  refused: { streamId: string; d: Decision }[];
}

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
  private queue: Promise<unknown> = Promise.resolve();
  private overflowed = false;

  constructor(
    private readonly store: RedisQuotaStore,
    private readonly maxRefused = MAX_REFUSED,
  ) {}

  /** The decisions of refused calls committed from `from` (inclusive) to `to` (exclusive, epoch ms); none when there are too many to keep. */
  async refused(from: number, to: number): Promise<Decision[] | undefined> {
    if (this.overflowed) return undefined;
    // One refresh at a time: two views at once would otherwise read the same entries twice.
    const run = this.queue.then(() => this.refresh());
    this.queue = run.catch(() => undefined);
    await run;
    if (this.overflowed) return undefined;
    const out: Decision[] = [];
    for (const name of this.order) for (const { d } of this.streams.get(name)!.refused) if (d.at >= from && d.at < to) out.push(d);
    return out;
  }

  private async refresh(): Promise<void> {
    const names = await this.store.ownJournalStreams();
    const present = new Set(names);
    for (const name of [...this.streams.keys()]) if (!present.has(name)) this.streams.delete(name);
    for (const name of names) {
      let kept = this.streams.get(name);
      if (!kept) this.streams.set(name, (kept = { refused: [] }));
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
        if (!b?.event || b.event.outcome !== 'refused' || !(b.kind === 'refuse' || b.kind === 'settle' || b.kind === 'recover' || b.kind === 'release')) continue;
        const id = String(b.event['request.id']);
        if (this.seen.has(id)) continue;
        this.seen.add(id);
        kept.refused.push({ streamId, d: { event: b.event as unknown as DecisionEvent, at: b.at, kind: b.kind, charges: [] } });
      }
    }
    this.order = names;
    if ([...this.streams.values()].reduce((n, k) => n + k.refused.length, 0) > this.maxRefused) {
      this.overflowed = true;
      this.streams.clear();
      this.seen.clear();
    }
  }
}
