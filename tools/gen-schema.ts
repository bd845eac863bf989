/**
 * Writes policy/policy.schema.json from the zod policy schema, so editors validate policy YAML
 * with exactly the rules the gateway applies at load, and policy/policy-test.schema.json for
 * policy test files. `--check` exits 1 when a file is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/main.js';
import { policyJsonSchema, policyTestJsonSchema } from '../src/policy/jsonSchema.js';

const outputs = [
  { name: 'policy.schema.json', schema: policyJsonSchema() },
  { name: 'policy-test.schema.json', schema: policyTestJsonSchema() },
];
for (const { name, schema } of outputs) {
  const file = join(packageRoot(), 'policy', name);
  const text = `${JSON.stringify(schema, null, 2)}\n`;
  if (process.argv.includes('--check')) {
    const current = readFileSync(file, 'utf8');
    if (current !== text) {
      process.stderr.write(`policy/${name} is stale: run npm run gen-schema\n`);
      process.exit(1);
    }
    process.stdout.write(`policy/${name} is current\n`);
  } else {
    writeFileSync(file, text);
    process.stdout.write(`wrote ${file}\n`);
  }
}
