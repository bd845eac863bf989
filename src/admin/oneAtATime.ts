/**
 * `fn` made to run one call at a time: a call made while another runs waits for it and then runs
 * itself (a failed run does not stop the next). The journal readers refresh this way, so that two
 * views at once do not read the same entries twice.
 */
export function oneAtATime(fn: () => Promise<void>): () => Promise<void> {
  let queue: Promise<unknown> = Promise.resolve();
  return () => {
    const run = queue.then(fn);
    queue = run.catch(() => undefined);
    return run;
  };
}
