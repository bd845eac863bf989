import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { policyJsonSchema } from '../../src/policy/jsonSchema.js';

describe('policy JSON Schema', () => {
  it('is current with the zod schema (run npm run gen-schema after changing it)', () => {
    const onDisk = JSON.parse(readFileSync(new URL('../../policy/policy.schema.json', import.meta.url), 'utf8'));
    expect(onDisk).toEqual(policyJsonSchema());
  });
});
