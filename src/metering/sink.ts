/**
 * The default event sink: one JSON line per decision through pino, to stderr or a file. Never
 * stdout, which belongs to the MCP stdio transport.
 */
import { pino, type Logger } from 'pino';
import type { DecisionEvent, EventSink } from './events.js';

/** Opens a pino JSON-lines sink on a file path, or stderr when no path is given. */
export function pinoSink(path?: string): EventSink & { logger: Logger } {
  const dest = path ? pino.destination({ dest: path, mkdir: true, sync: false }) : pino.destination({ dest: 2, sync: false });
  const logger = pino({ base: null, timestamp: false, messageKey: 'message', level: 'info' }, dest);
  return {
    logger,
    emit(event: DecisionEvent) {
      logger.info(event);
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
      // Ending a file waits for it to open and for every pending write before closing it.
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
