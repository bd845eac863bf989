/**
 * External bindings: secrets and limits stay out of the policy file. Any string value may hold
 * `${env:NAME}`, `${env:NAME:-fallback}`, `${file:/path/to/secret}` or `${name}` (a key of the
 * policy's own `bindings:` map, itself resolved first). A binding that cannot be resolved is an
 * error naming it and the path where it was used.
 */
import { readFileSync } from 'node:fs';

export interface BindingIssue {
  path: (string | number)[];
  message: string;
}

const PATTERN = /\$\{([^}]+)\}/g;

export interface BindingSources {
  env: Readonly<Record<string, string | undefined>>;
  readFile: (path: string) => string;
}

export const defaultSources: BindingSources = {
  env: process.env,
  readFile: (p) => readFileSync(p, 'utf8').replace(/\r?\n$/, ''),
};

function resolveOne(
  expr: string,
  named: Record<string, string>,
  sources: BindingSources,
): { value?: string; error?: string } {
  if (expr.startsWith('env:')) {
    const [name, fallback] = splitFallback(expr.slice(4));
    const v = sources.env[name];
    if (v !== undefined && v !== '') return { value: v };
    if (fallback !== undefined) return { value: fallback };
    return { error: `environment variable ${name} is not set` };
  }
  if (expr.startsWith('file:')) {
    const path = expr.slice(5);
    try {
      return { value: sources.readFile(path) };
    } catch (err) {
      return { error: `cannot read file binding ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` };
    }
  }
  if (Object.hasOwn(named, expr)) return { value: named[expr] };
  return { error: `unknown binding \${${expr}}` };
}

function splitFallback(s: string): [string, string | undefined] {
  const i = s.indexOf(':-');
  return i === -1 ? [s, undefined] : [s.slice(0, i), s.slice(i + 2)];
}

function substitute(
  text: string,
  named: Record<string, string>,
  sources: BindingSources,
  path: (string | number)[],
  issues: BindingIssue[],
): string {
  return text.replace(PATTERN, (whole, expr: string) => {
    const r = resolveOne(expr.trim(), named, sources);
    if (r.error !== undefined) {
      issues.push({ path, message: r.error });
      return whole;
    }
    return r.value!;
  });
}

/**
 * Returns a copy of `raw` with every binding substituted, plus the issues found. A value that is
 * exactly one binding and looks like a number or boolean keeps that type (`limit: ${env:CAP}`).
 */
export function resolveBindings(raw: unknown, sources: BindingSources = defaultSources): { value: unknown; issues: BindingIssue[] } {
  const issues: BindingIssue[] = [];
  const named: Record<string, string> = {};
  const root = raw as Record<string, unknown> | null;
  const declared = root && typeof root === 'object' && root.bindings && typeof root.bindings === 'object' ? root.bindings : {};
  for (const [k, v] of Object.entries(declared as Record<string, unknown>)) {
    if (typeof v === 'string') named[k] = substitute(v, {}, sources, ['bindings', k], issues);
  }

  function walk(node: unknown, path: (string | number)[]): unknown {
    // OpenFGA check templates use the same ${...} form for per-call values; they are not bindings.
    if (path.length === 3 && path[0] === 'identity' && path[1] === 'openfga' && path[2] === 'check') return node;
    if (typeof node === 'string') {
      const single = /^\$\{[^}]+\}$/.test(node);
      const out = substitute(node, named, sources, path, issues);
      if (single && out !== node) {
        if (/^-?\d+(\.\d+)?$/.test(out)) return Number(out);
        if (out === 'true' || out === 'false') return out === 'true';
      }
      return out;
    }
    if (Array.isArray(node)) return node.map((v, i) => walk(v, [...path, i]));
    if (node && typeof node === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(node)) {
        // Assigning __proto__ would set the copy's prototype and slip its fields past the strict schema.
        if (k === '__proto__') issues.push({ path: [...path, k], message: 'the key __proto__ is not allowed' });
        else out[k] = path.length === 0 && k === 'bindings' ? named : walk(v, [...path, k]);
      }
      return out;
    }
    return node;
  }
  return { value: walk(raw, []), issues };
}
