/**
 * Objects made on every call keep one hidden class (V8's map) each (issue 21). On Node 20's V8, an
 * object literal that starts with a spread and then adds a field, `{ ...line, amount }`, gets a map
 * of its own every time once the code is optimised: about 1 µs to make instead of 0.03, and every
 * function that later reads such objects misses its inline cache and asks the runtime
 * (`node --log-ic` counted 133 misses a call on the OpenAI wire before, 71 after; docs/benchmarks.md).
 * Adding an accessor to each object (Object.defineProperty) does the same.
 *
 * Two checks: the per-call modules below have no such literal (a copy whose own fields change,
 * `const c = { ...o }; c.field = v`, keeps the map, and Object.assign makes a new object without it);
 * and, in a Node started with --allow-natives-syntax, what those modules make does share a map.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

/** The modules every call runs through: the pipeline, the embedded store and journal, the OpenAI and Anthropic paths. */
const PER_CALL = [
  'src/pipeline',
  'src/gateway/gateway.ts',
  'src/quota/memory.ts',
  'src/quota/journal.ts',
  'src/quota/fileJournal.ts',
  'src/quota/store.ts',
  'src/policy/plan.ts',
  'src/policy/budgets.ts',
  'src/policy/limits.ts',
  'src/policy/decide.ts',
  'src/providers/openai.ts',
  'src/providers/openaiWire.ts',
  'src/providers/directWire.ts',
  'src/providers/anthropicWire.ts',
  'src/providers/anthropic.ts',
  'src/providers/fetchSdk.ts',
  'src/providers/registry.ts',
  'src/http/compat.ts',
  'src/http/openaiCompat.ts',
  'src/http/anthropicCompat.ts',
  'src/http/responsesCompat.ts',
  'src/http/budgetHeaders.ts',
  'src/http/jsonTransport.ts',
  'src/metering/events.ts',
  'src/metering/sink.ts',
  'src/metering/metrics.ts',
  'src/identity/authenticate.ts',
  'src/identity/apiKey.ts',
];

function sources(path: string): string[] {
  const full = join(ROOT, path);
  if (full.endsWith('.ts')) return [full];
  return readdirSync(full, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    .map((f) => join(full, f));
}

/**
 * `file:line: text` of every object literal that starts with a spread and has more after it, and of
 * every Object.defineProperty (an accessor made for each object gives each its own map).
 */
function shapeChangers(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const report = (node: ts.Node): void => {
    const { line } = sf.getLineAndCharacterOfPosition(node.getStart());
    found.push(`${relative(ROOT, file)}:${line + 1}: ${node.getText().replace(/\s+/g, ' ').slice(0, 100)}`);
  };
  const visit = (node: ts.Node): void => {
    if (ts.isObjectLiteralExpression(node) && node.properties.length > 1 && ts.isSpreadAssignment(node.properties[0]!)) report(node);
    if (ts.isCallExpression(node) && node.expression.getText() === 'Object.defineProperty') report(node);
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

describe('hidden classes on the per-call path', () => {
  it('no per-call module builds an object by a spread followed by fields, or defines a property on one', () => {
    const files = PER_CALL.flatMap(sources);
    expect(files.length).toBeGreaterThan(PER_CALL.length);
    expect(files.flatMap(shapeChangers)).toEqual([]);
  });

  it('finds the patterns it looks for', () => {
    // The check above would pass on any file if it never matched anything.
    expect(shapeChangers(join(ROOT, 'src/policy/simulate.ts')).some((f) => f.includes('{ ...base,'))).toBe(true);
    expect(shapeChangers(join(ROOT, 'src/policy/content.ts')).some((f) => f.includes('Object.defineProperty'))).toBe(true);
  });

  it('ledger lines and the request rules read share one map each once the code is optimised', () => {
    // Run in a child Node with natives syntax; tsx loads the TypeScript sources as the tests do.
    const script = `
      const { lineAt } = await import(${JSON.stringify(join(ROOT, 'src/quota/store.ts'))});
      const { withContent, PromptContent } = await import(${JSON.stringify(join(ROOT, 'src/policy/content.ts'))});
      const base = { budgetId: 'b', subject: 's', limit: 100, expiresAt: Date.now() + 1e9, usageKey: 'u', readKeys: ['u'], reservedKey: 'r', head: 'h' };
      const made = (make) => {
        const kept = [];
        for (let i = 0; i < 100000; i++) { const o = make(i); if (i >= 99990) kept.push(o); }
        return { same: kept.every((o) => %HaveSameMap(o, kept[0])), fast: %HasFastProperties(kept[0]) };
      };
      const lines = made((i) => lineAt(base, i % 7));
      const requests = made((i) => withContent({ model: 'm', tier: 't', maxTokens: i }, new PromptContent(['hello'])));
      process.stdout.write(JSON.stringify({ lines, requests }));
    `;
    const r = spawnSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ lines: { same: true, fast: true }, requests: { same: true, fast: true } });
  });
});
