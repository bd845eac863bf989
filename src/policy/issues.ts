/**
 * A zod issue as a policy author reads it: what was expected, what the file holds, and for a
 * mistyped key the closest known one (`unknown key defaultTeir; did you mean defaultTier?`).
 * Known keys come from the JSON Schema generated from the same zod schema, built only when a
 * policy has an unknown key.
 */
import { z } from 'zod';
import { closest } from '../config/suggest.js';
import { policySchema } from './schema.js';

type Json = Record<string, unknown>;

let jsonSchema: Json | undefined;

function deref(node: Json, root: Json): Json {
  const ref = node.$ref;
  if (typeof ref !== 'string' || !ref.startsWith('#/')) return node;
  let out: unknown = root;
  for (const part of ref.slice(2).split('/')) out = (out as Json | undefined)?.[part];
  return out && typeof out === 'object' ? deref(out as Json, root) : node;
}

/** The alternatives a schema node stands for (a union's options, or itself). */
function alternatives(node: Json, root: Json): Json[] {
  const n = deref(node, root);
  const options = [n.anyOf, n.oneOf, n.allOf].flatMap((o) => (Array.isArray(o) ? (o as Json[]) : []));
  return options.length ? options.flatMap((o) => alternatives(o, root)) : [n];
}

/** The property names an object at `path` may have, per the policy's JSON Schema. */
export function knownKeysAt(path: readonly PropertyKey[]): string[] {
  jsonSchema ??= z.toJSONSchema(policySchema, { io: 'input', target: 'draft-7', unrepresentable: 'any' }) as Json;
  const root = jsonSchema;
  let nodes: Json[] = [root];
  for (const seg of path) {
    nodes = nodes.flatMap((node) =>
      alternatives(node, root).flatMap((n) => {
        if (typeof seg === 'number') return n.items && typeof n.items === 'object' ? [n.items as Json] : [];
        const props = n.properties as Record<string, Json> | undefined;
        if (props && typeof seg === 'string' && Object.hasOwn(props, seg)) return [props[seg]!];
        return n.additionalProperties && typeof n.additionalProperties === 'object' ? [n.additionalProperties as Json] : [];
      }),
    );
  }
  const keys = new Set<string>();
  for (const node of nodes) for (const n of alternatives(node, root)) for (const k of Object.keys((n.properties as Json | undefined) ?? {})) keys.add(k);
  return [...keys];
}

/** A value as an error quotes it: strings in quotes, long ones cut, objects by kind. */
export function shownValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}

/** What kind of YAML value `value` is, in the words of the schema's types. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'object') return 'mapping';
  return typeof value;
}

/** How badly a union branch missed: a type mismatch at its own root means the branch was not meant. */
function miss(branch: readonly z.core.$ZodIssue[]): number {
  const rootType = branch.some((i) => i.path.length === 0 && i.code === 'invalid_type');
  const unknownKeys = branch.some((i) => i.code === 'unrecognized_keys');
  return (rootType ? 1000 : 0) + (unknownKeys ? 100 : 0) + branch.length;
}

/**
 * The issues with every union failure replaced by the issues of the branch the author most
 * likely meant (`limit: { tokens: "three thousand" }` is a tokens limit whose value is not a
 * number, not "Invalid input"), and one issue per unknown key, at the key.
 */
export function flattenIssues(issues: readonly z.core.$ZodIssue[], base: readonly PropertyKey[] = []): z.core.$ZodIssue[] {
  return issues.flatMap((issue): z.core.$ZodIssue[] => {
    const path = [...base, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const best = [...issue.errors].sort((a, b) => miss(a) - miss(b))[0]!;
      return flattenIssues(best, path);
    }
    if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => ({ ...issue, keys: [key], path: [...path, key] }));
    return [{ ...issue, path }];
  });
}

/** One issue's message, without its path (the caller prefixes path and line:col). */
export function describeIssue(issue: z.core.$ZodIssue): string {
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case 'invalid_type':
      if (input === undefined) return `required: expected ${issue.expected}`;
      return `expected ${issue.expected}, got ${kindOf(input)} ${kindOf(input) === 'mapping' || kindOf(input) === 'list' ? '' : shownValue(input)}`.trimEnd();
    case 'unrecognized_keys': {
      // After flattenIssues the path ends at the unknown key itself.
      const at = issue.path.at(-1) === issue.keys[0] ? issue.path.slice(0, -1) : issue.path;
      const known = knownKeysAt(at);
      return issue.keys
        .map((k) => {
          // A key the mapping knows, refused beside another one: the choices exclude each other
          // (a budget's limit in tokens or usd, not both).
          if (known.includes(k)) return `${k} cannot be given with ${known.filter((o) => o !== k).join(' or ')}: give one of ${known.join(', ')}`;
          const hint = closest(k, known);
          return `unknown key ${k}${hint ? `; did you mean ${hint}?` : ''}${known.length ? ` (known: ${known.join(', ')})` : ''}`;
        })
        .join('; ');
    }
    default:
      return input === undefined || typeof input === 'object' ? issue.message : `${issue.message}, got ${shownValue(input)}`;
  }
}
