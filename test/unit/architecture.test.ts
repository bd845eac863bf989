/**
 * The import graph of src/ points down only. Each module (a folder of src/, or a file directly in
 * it) has a layer; a file may import its own module or a module of a lower layer, never a higher
 * or equal one, so the modules cannot form a cycle. Inside a module, files must not form a cycle
 * either. Type-only and dynamic imports count: a cycle through types is still a cycle in the design.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/** Lowest first. Same-layer modules may not import one another. */
const LAYERS: Record<string, number> = {
  errors: 0,
  call: 1,
  config: 1,
  ttlCache: 1,
  textCache: 1,
  signals: 1,
  secretPieces: 1,
  isoTime: 1,
  providers: 2,
  quota: 2,
  identity: 3,
  policy: 4,
  metering: 5,
  pipeline: 6,
  alerts: 6,
  'pipeline/steps': 7,
  gateway: 8,
  mcp: 9,
  a2a: 9,
  http: 10,
  main: 11,
  client: 11,
  admin: 12,
  cluster: 12,
  console: 12.5,
  cli: 13,
};

const DOMAIN = ['policy', 'quota', 'identity', 'providers', 'metering', 'call'];
const ABOVE_DOMAIN = ['http', 'mcp', 'a2a', 'gateway', 'pipeline', 'pipeline/steps', 'main', 'cli', 'admin', 'console'];

const SRC = join(import.meta.dirname, '..', '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [path] : [];
  });
}

/** The module of a file: `pipeline/steps`, a top folder, or a top-level file's name. */
function moduleOf(file: string): string {
  const parts = relative(SRC, file).split(/[\\/]/);
  if (parts[0] === 'pipeline' && parts[1] === 'steps') return 'pipeline/steps';
  return parts.length > 1 ? parts[0]! : parts[0]!.replace(/\.ts$/, '');
}

/** Relative imports of each file (static, type-only, re-exports and dynamic), resolved to .ts paths under src/. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(SRC)) {
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((f) => f.fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => normalize(join(dirname(file), name)).replace(/\.js$/, '.ts'));
    graph.set(file, deps);
  }
  return graph;
}

/** Strongly connected components with more than one file (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const stack: string[] = [];
  const onStack = new Set<string>();
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    order.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!order.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, order.get(w)!));
    }
    if (low.get(v) === order.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(relative(SRC, w));
      } while (w !== v);
      if (component.length > 1) out.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!order.has(v)) visit(v);
  return out;
}

describe('architecture of src/', () => {
  const graph = importGraph();

  it('finds the source files and their imports (the check is not vacuous)', () => {
    expect(graph.size).toBeGreaterThan(80);
    expect(graph.get(join(SRC, 'gateway', 'gateway.ts'))).toContain(join(SRC, 'pipeline', 'steps', 'reserve.ts'));
  });

  it('gives every module a layer', () => {
    const unknown = [...new Set([...graph.keys()].map(moduleOf))].filter((m) => LAYERS[m] === undefined);
    expect(unknown).toEqual([]);
  });

  it('has no import cycle between files', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it('imports point down: no module imports one of its own layer or above', () => {
    const upward: string[] = [];
    for (const [file, deps] of graph) {
      const from = moduleOf(file);
      for (const dep of deps) {
        const to = moduleOf(dep);
        if (to !== from && LAYERS[to]! >= LAYERS[from]!) upward.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('keeps the domain (policy, quota, identity, providers, metering, call) free of transports, the gateway and the pipeline', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      if (!DOMAIN.includes(moduleOf(file))) continue;
      for (const dep of deps) if (ABOVE_DOMAIN.includes(moduleOf(dep))) wrong.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('lets transports reach the pipeline only through the gateway, never a step directly', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      if (!['http', 'mcp', 'a2a'].includes(moduleOf(file))) continue;
      for (const dep of deps) if (moduleOf(dep) === 'pipeline/steps') wrong.push(`${relative(SRC, file)} -> ${relative(SRC, dep)}`);
    }
    expect(wrong).toEqual([]);
  });
});
