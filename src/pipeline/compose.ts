/**
 * Middleware composition: each step is `(ctx, next) => Promise<void>` and may act before and
 * after the steps below it (reserve before dispatch, settle after it). Calling `next()` twice
 * is a bug that would dispatch or charge twice, so it is rejected.
 */

export type Next = () => Promise<void>;
export type Middleware<C> = (ctx: C, next: Next) => Promise<void>;

/** Composes steps into one; the returned function runs them in order around `ctx`. */
export function compose<C>(steps: readonly Middleware<C>[]): (ctx: C) => Promise<void> {
  return function run(ctx: C): Promise<void> {
    let last = -1;
    function dispatch(i: number): Promise<void> {
      if (i <= last) return Promise.reject(new Error(`pipeline step ${i - 1} called next() more than once`));
      last = i;
      const step = steps[i];
      if (!step) return Promise.resolve();
      try {
        return step(ctx, () => dispatch(i + 1));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return dispatch(0);
  };
}
