import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Unit tests of one file may sit beside it (src/pipeline/steps/*.test.ts); tsconfig.build.json leaves them out of dist.
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default is one file at a time on two cores (cores - 1): the suite then took 8.5 to 12
    // minutes there, most of it files waiting on sockets, child processes and timers; two at a
    // time it took 6.4 to 7.1 (docs/development.md).
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
