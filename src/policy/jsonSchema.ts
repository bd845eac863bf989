/**
 * The policy's JSON Schema, generated from the zod schema the loader uses (never written by hand).
 */
import { z } from 'zod';
import { policyTestFileSchema } from './policyTest.js';
import { policySchema } from './schema.js';

export function policyJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(policySchema, { io: 'input', target: 'draft-7', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    ...schema,
    title: 'tollgate policy',
    description: 'Declarative policy for the tollgate AI gateway: providers, tiers, budgets, rules and API keys.',
  };
}

/** The JSON Schema of policy test files (`*.test.yaml`), for the same editor support. */
export function policyTestJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(policyTestFileSchema, { io: 'input', target: 'draft-7', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    ...schema,
    title: 'tollgate policy tests',
    description: 'Cases for `tollgate test-policy`: a principal, budget usage and a request, and the decision expected.',
  };
}
