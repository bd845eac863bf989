/** A pino logger whose records are kept in memory, parsed, for tests to read what was logged. */
import { pino } from 'pino';

export function captureLog(level = 'info') {
  const entries: Record<string, unknown>[] = [];
  const logger = pino({ level }, { write: (s: string) => void entries.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, entries };
}
