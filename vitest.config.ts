import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Unit tests of one file may sit beside it (src/pipeline/steps/*.test.ts); tsconfig.build.json leaves them out of dist.
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
