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
