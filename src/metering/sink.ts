/**
 * The default event sink: one JSON line per decision, to stderr or a file, through pino's
 * destination (sonic-boom). Never stdout, which belongs to the MCP stdio transport. A file is
 * written synchronously: each event is in the file (the kernel's) when `emit` returns, so a
 * process killed at once loses none the journal holds (an asynchronous writer kept a burst's
 * events in its buffer: a probe killed after 1.2 s found 29 events in the journal and 5 in the
 * log). Writing each line at once also cost less than buffering them in a burst (`npm run
 * bench:eventsink`, docs/benchmarks.md "Event log writer"). stderr stays asynchronous: a slow
 * reader at the other end of a pipe must not stall the calls.
 * Lines keep the pino shape (`"level":30` first) so log shippers treat them like the gateway's
 * other logs, but are serialised with JSON.stringify: a decision event is a plain object of
 * strings, numbers and arrays, and pino's own serialiser cost several times more per event.
 */
import { pino, type Logger } from 'pino';
import { eventJson } from '../quota/journal.js';
import type { DecisionEvent, EventSink } from './events.js';

/** Opens a JSON-lines sink on a file path, or stderr when no path is given. */
export function pinoSink(path?: string): EventSink {
  const dest = path ? pino.destination({ dest: path, mkdir: true, sync: true }) : pino.destination({ dest: 2, sync: false });
  return {
    emit(event: DecisionEvent) {
      // The text the Redis journal stored for this event, when it stored one: serialised once.
      const json = eventJson(event);
      dest.write(json.length > 2 ? `{"level":30,${json.slice(1)}\n` : '{"level":30}\n');
    },
    async close() {
      if (!path) {
        // stderr stays open for the rest of the process: write out what is pending, do not close it.
        try {
          dest.flushSync();
        } catch {
          // nothing pending, or stderr is gone: neither is worth failing shutdown for
        }
        return;
      }
      // Every write is made already: close the file.
      await new Promise<void>((resolve) => {
        dest.once('close', () => resolve());
        dest.end();
      });
    },
  };
}

/** Keeps events in memory; for tests and the `explain` command. */
export function memorySink(): EventSink & { events: DecisionEvent[] } {
  const events: DecisionEvent[] = [];
  return {
    events,
    emit(event) {
      events.push(event);
    },
  };
}

/**
 * Sends each event to every sink in turn. A sink that throws is logged and skipped: the others
 * still get the event and the call it describes is not affected. `close` closes every sink.
 */
export function compositeSink(sinks: EventSink[], log: Pick<Logger, 'error'>): EventSink {
  return {
    emit(event) {
      for (const sink of sinks) {
        try {
          sink.emit(event);
        } catch (err) {
          log.error({ err, event: 'event_sink_failed', requestId: event['request.id'] }, 'an event sink failed');
        }
      }
    },
    async close() {
      await Promise.all(sinks.map((s) => s.close?.().catch((err: unknown) => log.error({ err, event: 'event_sink_close_failed' }, 'an event sink failed to close'))));
    },
  };
}
