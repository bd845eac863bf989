/**
 * Writes policy/policy.schema.json from the zod policy schema, so editors validate policy YAML
 * with exactly the rules the gateway applies at load. `--check` exits 1 when the file is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/main.js';
import { policyJsonSchema } from '../src/policy/jsonSchema.js';

const file = join(packageRoot(), 'policy', 'policy.schema.json');
const text = `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
if (process.argv.includes('--check')) {
  const current = readFileSync(file, 'utf8');
  if (current !== text) {
    process.stderr.write('policy/policy.schema.json is stale: run npm run gen-schema\n');
    process.exit(1);
  }
  process.stdout.write('policy/policy.schema.json is current\n');
} else {
  writeFileSync(file, text);
  process.stdout.write(`wrote ${file}\n`);
}
