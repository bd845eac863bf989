import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';

describe('error codes', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  it.each(Object.keys(ERROR_CODES))('documents %s in the README error table', (code) => {
    expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\| ${ERROR_CODES[code as keyof typeof ERROR_CODES].status} \\|`, 'm'));
  });
});
