/**
 * Group commit of settlements on a single Redis node. Settling is the one ledger write that nothing
 * waits on in the common case (the answer has gone), and under load many calls settle at once; each
 * SETTLE costs Redis a script invocation (its arguments parsed into Lua tables, the helpers'
 * closures made) and the gateway a command of its own (encoded, timed, awaited). So while one
 * settlement is in flight, the ones that come meanwhile wait for it and then go together, as one
 * SETTLE_MANY: no call waits longer than the write before it, one alone goes at once, unchanged.
 *
 * Each call in a batch is still its own atomic step with its own entry in the chain (SETTLE_MANY
 * runs them one after the other), so a batch changes how many commands carry the settlements, not
 * what is written. A batch that fails (timeout, outage) fails every call in it, and each goes to the
 * store's replay as a lone SETTLE would; a call whose script raised fails alone.
 */

/** One settlement waiting for its batch: SETTLE's keys and arguments. */
interface Pending {
  keys: string[];
  args: (string | number)[];
  resolve(reply: unknown): void;
  reject(err: unknown): void;
}

/** Sends a batch: SETTLE's reply for each call in order, or an Error for a call that failed alone. */
export type SendBatch = (batch: readonly { keys: string[]; args: (string | number)[] }[]) => Promise<unknown[]>;

export class GroupCommit {
  private queue: Pending[] = [];
  private inFlight = false;

  /**
   * `maxBatch` bounds the calls (so the script's run time) of one batch. When a batch fails with an
   * error `failsQueue` accepts (the store unreachable or not answering), the calls still waiting
   * fail with it at once rather than each batch waiting out its own timeout: they were never sent,
   * so they go to the store's replay as they are.
   */
  constructor(
    private readonly send: SendBatch,
    private readonly opts: { maxBatch?: number; failsQueue?: (err: unknown) => boolean } = {},
  ) {}

  /** Settles through the next batch; resolves with SETTLE's reply for this call. */
  submit(keys: string[], args: (string | number)[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ keys, args, resolve, reject });
      if (!this.inFlight) this.next();
    });
  }

  /** Settlements waiting for a batch (not counting the one in flight). */
  get waiting(): number {
    return this.queue.length;
  }

  private next(): void {
    if (this.queue.length === 0) {
      this.inFlight = false;
      return;
    }
    this.inFlight = true;
    const max = this.opts.maxBatch ?? 32;
    const batch = this.queue.length <= max ? this.queue : this.queue.slice(0, max);
    this.queue = batch === this.queue ? [] : this.queue.slice(max);
    let sent: Promise<unknown[]>;
    try {
      sent = this.send(batch);
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent.then(
      (replies) => {
        if (!Array.isArray(replies) || replies.length !== batch.length) {
          const err = new Error(`a settle batch of ${batch.length} calls was answered with ${Array.isArray(replies) ? replies.length : typeof replies} replies`);
          for (const p of batch) p.reject(err);
          return;
        }
        for (let i = 0; i < batch.length; i++) {
          const reply = replies[i];
          if (reply instanceof Error) batch[i]!.reject(reply);
          else batch[i]!.resolve(reply);
        }
      },
      (err: unknown) => {
        const failed = this.opts.failsQueue?.(err) ? [...batch, ...this.queue.splice(0)] : batch;
        for (const p of failed) p.reject(err);
      },
    ).finally(() => this.next());
  }
}
