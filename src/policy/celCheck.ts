/**
 * Type-checks the policy's CEL expressions against the variables tollgate gives them, so that
 * `tollgate check` catches `request.teir` (which would deny every call at run time) and
 * `budgets.employee-weekly.remainingPct` (CEL reads `budgets.employee - weekly...`). Rules see
 * principal, request, budgets and now; a budget's or a rate limit's `when` sees principal only.
 */
import { Environment } from '@marcbachmann/cel-js';
import { LineCounter, parseDocument, isScalar } from 'yaml';
import { closest } from '../config/suggest.js';
import type { Policy, PolicyIssue } from './load.js';

/** The fields of each variable, with their CEL types (src/identity/principal.ts, src/policy/decide.ts). */
export const CEL_FIELDS = {
  principal: { user: 'string', teams: 'list<string>', costCenter: 'string', groups: 'list<string>', roles: 'list<string>', authMethod: 'string', actors: 'list<string>', app: 'string' },
  request: {
    model: 'string',
    tier: 'string',
    provider: 'string',
    maxTokens: 'double',
    inputTokens: 'double',
    text: 'string',
    rawText: 'string',
    compactText: 'string',
    decodedSpans: 'list<string>',
    decodedTruncated: 'bool',
    secrets: 'list<string>',
  },
  budget: { used: 'double', reserved: 'double', limit: 'double', remaining: 'double', remainingPct: 'double' },
} as const;

type Scope = 'rule' | 'budget';

const environments = new Map<Scope, Environment>();

function environment(scope: Scope): Environment {
  let env = environments.get(scope);
  if (env) return env;
  // The options and registration objects are typed loosely by the library's declarations.
  const e = new Environment({ unlistedVariablesAreDyn: false } as never) as Environment & { registerVariable(d: unknown): Environment; registerType(n: string, d: unknown): Environment };
  e.registerVariable({ name: 'principal', schema: CEL_FIELDS.principal });
  if (scope === 'rule') {
    e.registerType('Budget', { fields: CEL_FIELDS.budget });
    e.registerVariable({ name: 'request', schema: CEL_FIELDS.request });
    e.registerVariable({ name: 'budgets', type: 'map<string, Budget>' });
    e.registerVariable({ name: 'now', type: 'google.protobuf.Timestamp' });
  }
  env = e;
  environments.set(scope, env);
  return env;
}

/** Which object a field was read from, judged by the text before it: `request.`, `principal.`, or `budgets[...]`. */
function receiverOf(source: string, pos: number): keyof typeof CEL_FIELDS | undefined {
  const before = source.slice(0, pos).replace(/\s*\.\s*$/, '');
  if (/\]$/.test(before) || /budgets\s*\.\s*[A-Za-z_]\w*$/.test(before)) return 'budget';
  const m = /([A-Za-z_]\w*)$/.exec(before);
  return m && (m[1] === 'principal' || m[1] === 'request') ? m[1] : undefined;
}

export interface CelProblem {
  message: string;
  /** Offset in the expression (0-based), when known. */
  offset?: number;
}

/** The problems of one expression (empty when it type-checks to bool). `budgetIds`: the policy's budgets. */
export function checkExpression(source: string, scope: Scope, budgetIds: readonly string[]): CelProblem[] {
  const problems: CelProblem[] = [];
  // A budget id with a dash is not a CEL identifier: budgets.employee-weekly subtracts `weekly`.
  for (const m of source.matchAll(/budgets\s*\.\s*([A-Za-z_][\w]*(?:-[\w]+)+)/g)) {
    problems.push({ message: `budgets.${m[1]} reads as budgets.${m[1]!.split('-')[0]} minus ${m[1]!.split('-').slice(1).join(' minus ')}: write budgets['${m[1]}']`, offset: m.index });
  }
  if (scope === 'rule') {
    for (const m of source.matchAll(/budgets\s*(?:\.\s*([A-Za-z_]\w*)(?![\w-])|\[\s*(['"])([^'"]+)\2\s*\])/g)) {
      const id = m[1] ?? m[3]!;
      if (budgetIds.includes(id)) continue;
      const hint = closest(id, budgetIds);
      problems.push({ message: `unknown budget ${id}; budgets are ${budgetIds.join(', ') || '(none)'}${hint ? `; did you mean ${hint}?` : ''}`, offset: m.index });
    }
  }
  if (problems.length) return problems;
  const result = environment(scope).check(source) as { valid: boolean; type?: string; error?: Error & { node?: { pos?: number } } };
  if (!result.valid) {
    const first = result.error!.message.split('\n')[0]!;
    const offset = result.error!.node?.pos;
    const key = /^No such key: (\S+)/.exec(first)?.[1];
    const receiver = key !== undefined && offset !== undefined ? receiverOf(source, offset) : undefined;
    if (key !== undefined && receiver) {
      const known = Object.keys(CEL_FIELDS[receiver]);
      const hint = closest(key, known);
      const on = receiver === 'budget' ? 'a budget' : receiver;
      return [{ message: `unknown field ${key} on ${on}; known: ${known.join(', ')}${hint ? `; did you mean ${hint}?` : ''}`, offset }];
    }
    const unknownVar = /^Unknown variable: (\S+)/.exec(first)?.[1];
    if (unknownVar !== undefined) {
      const vars = scope === 'rule' ? ['principal', 'request', 'budgets', 'now'] : ['principal'];
      const hint = closest(unknownVar, vars);
      return [{ message: `unknown variable ${unknownVar}; ${scope === 'rule' ? 'a rule' : "a budget's when"} sees ${vars.join(', ')}${hint ? `; did you mean ${hint}?` : ''}`, offset }];
    }
    return [{ message: first, offset }];
  }
  if (result.type !== 'bool' && result.type !== 'dyn') return [{ message: `the expression gives ${result.type}, not a bool` }];
  return [];
}

/**
 * Every problem of the policy's expressions, each at `line:column` of the file (the column of the
 * offending character when the expression sits on one line).
 */
export function checkPolicyCel(policy: Policy, text: string): PolicyIssue[] {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter });
  const budgetIds = policy.budgets.map((b) => b.config.id);
  const issues: PolicyIssue[] = [];
  const visit = (path: (string | number)[], source: string | undefined, scope: Scope) => {
    if (source === undefined) return;
    const node = doc.getIn(path, true);
    for (const p of checkExpression(source, scope, budgetIds)) {
      const message = path[0] === 'rateLimits' ? p.message.replace("a budget's when", "a rate limit's when") : p.message;
      let line: number | undefined;
      let column: number | undefined;
      if (isScalar(node) && node.range) {
        const pos = counter.linePos(node.range[0]);
        line = pos.line;
        column = pos.col;
        const oneLine = !source.includes('\n') && (node.type === 'PLAIN' || node.type === 'QUOTE_SINGLE' || node.type === 'QUOTE_DOUBLE');
        const raw = text.slice(node.range[0], node.range[1]);
        // Quoted: one character for the quote, when the source is written as is (no escapes).
        const quote = node.type === 'PLAIN' ? 0 : 1;
        if (oneLine && p.offset !== undefined && raw.slice(quote, quote + source.length) === source) column += quote + p.offset;
      }
      issues.push({ path: path.map((s, i) => (typeof s === 'number' ? `[${s}]` : i ? `.${s}` : s)).join(''), line, column, message });
    }
  };
  policy.config.rules.forEach((r, i) => visit(['rules', i, 'when'], r.when, 'rule'));
  policy.config.budgets.forEach((b, i) => visit(['budgets', i, 'when'], b.when, 'budget'));
  // A rate limit's `when` sees what a budget's does: principal only.
  policy.config.rateLimits.forEach((l, i) => visit(['rateLimits', i, 'when'], l.when, 'budget'));
  return issues;
}
