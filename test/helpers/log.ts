/** A pino logger whose records are kept in memory, parsed, for tests to read what was logged. */
import { pino } from 'pino';

export function captureLog() {
  const entries: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void entries.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, entries };
}
