import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';

describe('error codes', () => {
  const errorsDoc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  it.each(Object.keys(ERROR_CODES))('documents %s in the error table of docs/errors.md', (code) => {
    expect(errorsDoc).toMatch(new RegExp(`^\\| \`${code}\` \\| ${ERROR_CODES[code as keyof typeof ERROR_CODES].status} \\|`, 'm'));
  });
});
