/**
 * The policy's JSON Schema, generated from the zod schema the loader uses (never written by hand).
 */
import { z } from 'zod';
import { policySchema } from './schema.js';

export function policyJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(policySchema, { io: 'input', target: 'draft-7', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    ...schema,
    title: 'tollgate policy',
    description: 'Declarative policy for the tollgate AI gateway: providers, tiers, budgets, rules and API keys.',
  };
}
