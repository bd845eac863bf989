/**
 * The decisions of a source, whichever it is: the embedded journal or event logs (read in place,
 * see journalReader.ts) or the Redis journal (paged from its streams, see redisJournal.ts); each
 * request once, the first time its id is seen.
 */
import { fileDecisions, journalDecisions, type Decision, type HeldFrom, type Source } from './journalReader.js';

/** The decisions of `source`, each request once; what was skipped (a torn last line, a line of an event file that is not JSON) is said through `warn`. */
export function decisionsOf(source: Source, warn: (message: string) => void, env: NodeJS.ProcessEnv, held?: HeldFrom): Iterable<Decision> | AsyncIterable<Decision> {
  if (source.kind === 'redis') return once(redisDecisionsOf(source.url, env, held));
  return once(source.kind === 'journal' ? journalDecisions(source.dir, warn, held) : fileDecisions(source.files, warn));
}

function once(all: Iterable<Decision>): Iterable<Decision>;
function once(all: AsyncIterable<Decision>): AsyncIterable<Decision>;
function once(all: Iterable<Decision> | AsyncIterable<Decision>): Iterable<Decision> | AsyncIterable<Decision> {
  const seen = new Set<string>();
  const first = (d: Decision) => {
    const id = d.event['request.id'];
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  };
  if (Symbol.asyncIterator in all) {
    return (async function* () {
      for await (const d of all) if (first(d)) yield d;
    })();
  }
  return (function* () {
    for (const d of all) if (first(d)) yield d;
  })();
}

async function* redisDecisionsOf(url: string, env: NodeJS.ProcessEnv, held: HeldFrom | undefined): AsyncGenerator<Decision> {
  const { openRedisJournal, redisDecisions } = await import('./redisJournal.js');
  const store = openRedisJournal(url, env);
  try {
    yield* redisDecisions(store, held);
  } finally {
    await store.close();
  }
}
