/**
 * Rewrites the table of environment variables in docs/environment.md from the env schema
 * (src/config/env.ts). `--check` exits 1 when the document is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { withEnvTable } from '../src/config/envDoc.js';

const file = fileURLToPath(new URL('../docs/environment.md', import.meta.url));
const current = readFileSync(file, 'utf8');
const text = withEnvTable(current);
if (process.argv.includes('--check')) {
  if (current !== text) {
    process.stderr.write('docs/environment.md is stale: run npm run gen-env-doc\n');
    process.exit(1);
  }
  process.stdout.write('docs/environment.md is current\n');
} else {
  writeFileSync(file, text);
  process.stdout.write(`wrote ${file}\n`);
}
