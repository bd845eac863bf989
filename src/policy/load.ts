/**
 * Loads a policy file: YAML -> bindings -> zod -> cross-checks -> a compiled, frozen Policy.
 * Every problem is collected and reported at once, each with its YAML path and line:column,
 * so a bad policy fails start-up with the whole list rather than one error per restart.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { GatewayError } from '../errors.js';
import { checkAlerts } from './alertsConfig.js';
import { checkIdentity } from './identityChecks.js';
import { isEgressAllowed, providerEndpoint } from '../providers/egress.js';
import { shippedPrice, type Price } from '../providers/prices.js';
import { resolveBindings, defaultSources, type BindingSources } from './bindings.js';
import { compilePredicate, type CelPredicate } from './cel.js';
import { describeIssue, flattenIssues } from './issues.js';
import { policySchema, type ApiKeyConfig, type BudgetConfig, type PolicyConfig, type RateLimitConfig, type RuleConfig } from './schema.js';

export interface PolicyIssue {
  /** Dotted path into the YAML, e.g. `budgets[0].window.timezone`. */
  path: string;
  line?: number;
  column?: number;
  message: string;
}

export interface ModelInfo {
  ref: string;
  provider: string;
  modelId: string;
  price: Price;
  maxOutputTokens: number;
  /** Tiers listing this model, most capable first. */
  tiers: string[];
}

export interface CompiledBudget {
  config: BudgetConfig;
  unit: 'tokens' | 'usd';
  /** Limit in ledger units: tokens, or micro-dollars for usd budgets. */
  limit: number;
  appliesTo?: CelPredicate;
}

/** Whether a call served by `tier` counts against `budget`: every tier does unless the budget lists its `tiers`. */
export function covers(budget: CompiledBudget, tier: string): boolean {
  return budget.config.tiers === undefined || budget.config.tiers.includes(tier);
}

/** What a rate limit counts (src/policy/limits.ts). */
export type LimitKind = 'requests' | 'tokens' | 'concurrent';

export interface CompiledLimit {
  config: RateLimitConfig;
  kind: LimitKind;
  /** Requests, tokens or calls. */
  limit: number;
  /** The window's length (0 for a concurrency cap). */
  spanMs: number;
  buckets: number;
  appliesTo?: CelPredicate;
}

/** A limit's kind, amount and window from its config. */
export function compileLimit(config: RateLimitConfig, appliesTo?: CelPredicate): CompiledLimit {
  if (config.concurrent !== undefined) return { config, kind: 'concurrent', limit: config.concurrent, spanMs: 0, buckets: 0, appliesTo };
  if (config.requestsPerSecond !== undefined) return { config, kind: 'requests', limit: config.requestsPerSecond, spanMs: 1000, buckets: config.buckets ?? 10, appliesTo };
  if (config.requestsPerMinute !== undefined) return { config, kind: 'requests', limit: config.requestsPerMinute, spanMs: 60_000, buckets: config.buckets ?? 12, appliesTo };
  return { config, kind: 'tokens', limit: config.tokensPerMinute!, spanMs: 60_000, buckets: config.buckets ?? 12, appliesTo };
}

export interface CompiledRule {
  config: RuleConfig;
  matches: CelPredicate;
}

/** A validated policy, frozen: safe to share between concurrent calls and to swap atomically. */
export interface Policy {
  readonly config: PolicyConfig;
  /** Content hash of the file, recorded in every decision event. */
  readonly version: string;
  readonly source: string;
  /** Tier names, most capable first. */
  readonly tiers: readonly string[];
  readonly defaultTier: string;
  readonly models: ReadonlyMap<string, ModelInfo>;
  /**
   * Each tier's models in failover order. Tier names come from callers, so they are looked up
   * here or with `hasTier`, never on `config.tiers` (a plain object that also answers to
   * `constructor`, `toString`, ...).
   */
  readonly tierModels: ReadonlyMap<string, readonly ModelInfo[]>;
  /** Whether `name` is one of this policy's tiers; `constructor` or `__proto__` is not. */
  hasTier(name: string): boolean;
  readonly budgets: readonly CompiledBudget[];
  /** Rate limits and concurrency caps (src/policy/limits.ts). */
  readonly rateLimits: readonly CompiledLimit[];
  readonly rules: readonly CompiledRule[];
  /** API keys by SHA-256 hex. */
  readonly apiKeys: ReadonlyMap<string, ApiKeyConfig>;
}

/** Thrown when a policy is invalid; `details.issues` lists every problem. */
export class PolicyError extends GatewayError {
  constructor(source: string, readonly issues: PolicyIssue[]) {
    const lines = issues.map((i) => `  - ${i.path || '(root)'}${i.line ? ` (line ${i.line}, col ${i.column})` : ''}: ${i.message}`);
    super('POLICY_INVALID', `Policy ${source} is invalid (${issues.length} error${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`, { issues });
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function locate(doc: Document, counter: LineCounter, path: readonly PropertyKey[]): { line?: number; column?: number } {
  // Walk up to the deepest node that exists: a missing field is reported where its parent is.
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as (string | number)[], true);
    if (isNode(node) && node.range) {
      const pos = counter.linePos(node.range[0]);
      return { line: pos.line, column: pos.col };
    }
  }
  return {};
}

export interface LoadOptions {
  sources?: BindingSources;
}

/** A policy file's text; PolicyError when it cannot be read. */
export function readPolicyText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new PolicyError(path, [{ path: '', message: `cannot read policy file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
}

/** Reads and compiles a policy file; throws PolicyError listing every issue. */
export function loadPolicyFile(path: string, opts: LoadOptions = {}): Policy {
  return parsePolicy(readPolicyText(path), path, opts);
}

/** Compiles policy text; `source` names it in errors. */
export function parsePolicy(text: string, source: string, opts: LoadOptions = {}): Policy {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new PolicyError(
      source,
      // The first few syntax errors matter; the rest are usually the parser losing its footing.
      doc.errors.slice(0, 5).map((e) => {
        const pos = counter.linePos(e.pos[0]);
        return { path: '', line: pos.line, column: pos.col, message: e.message.split('\n')[0]! };
      }),
    );
  }
  const issues: PolicyIssue[] = [];
  const at = (path: readonly PropertyKey[], message: string) => issues.push({ path: formatPath(path), ...locate(doc, counter, path), message });

  let bound: ReturnType<typeof resolveBindings>;
  try {
    bound = resolveBindings(doc.toJS(), opts.sources ?? defaultSources);
  } catch (err) {
    // yaml refuses alias bombs (ReferenceError); an alias inside its own anchor makes a cycle (RangeError).
    const why = err instanceof RangeError ? 'an alias refers to a node that contains it, or the document nests too deeply' : (err as Error).message;
    throw new PolicyError(source, [{ path: '', message: `the YAML cannot be read as data: ${why}` }]);
  }
  for (const b of bound.issues) at(b.path, b.message);
  const parsed = policySchema.safeParse(bound.value, { reportInput: true });
  if (!parsed.success) {
    for (const i of flattenIssues(parsed.error.issues)) at(i.path, describeIssue(i));
    throw new PolicyError(source, issues);
  }
  const config = parsed.data;
  const policy = compile(config, at);
  if (issues.length > 0) throw new PolicyError(source, issues);
  return Object.freeze({ ...policy, source, version: createHash('sha256').update(text).digest('hex').slice(0, 12) });
}

function compile(config: PolicyConfig, at: (path: readonly PropertyKey[], message: string) => void): Omit<Policy, 'source' | 'version'> {
  const tiers = Object.keys(config.tiers);
  if (tiers.length === 0) at(['tiers'], 'declare at least one tier (a name and the models it serves)');
  const models = new Map<string, ModelInfo>();
  for (const [tier, refs] of Object.entries(config.tiers)) {
    refs.forEach((ref, i) => {
      const slash = ref.indexOf('/');
      const provider = ref.slice(0, slash);
      const declaredProvider = Object.hasOwn(config.providers, provider);
      if (!declaredProvider) at(['tiers', tier, i], `provider "${provider}" is not declared under providers`);
      const known = models.get(ref);
      if (known) {
        known.tiers.push(tier);
        return;
      }
      const declared = Object.hasOwn(config.models, ref) ? config.models[ref] : undefined;
      const kind = declaredProvider ? config.providers[provider]!.kind : undefined;
      const price = declared?.price ?? (kind ? shippedPrice(kind, ref.slice(slash + 1)) : undefined);
      if (!price && declaredProvider) at(['tiers', tier, i], `model ${ref} has no price: add models."${ref}".price (a model is never served free)`);
      models.set(ref, {
        ref,
        provider,
        modelId: ref.slice(slash + 1),
        price: price ?? { inputPerMTok: 0, outputPerMTok: 0 },
        maxOutputTokens: declared?.maxOutputTokens ?? 8192,
        tiers: [tier],
      });
    });
  }
  for (const ref of Object.keys(config.models)) {
    if (!models.has(ref)) at(['models', ref], `model ${ref} is priced but listed in no tier`);
  }
  const tierModels = new Map(Object.entries(config.tiers).map(([tier, refs]) => [tier, Object.freeze(refs.map((ref) => models.get(ref)!))] as const));
  const consoleIssuer = config.console.oidc?.issuer;
  if (consoleIssuer && !config.identity.oidc.some((i) => i.issuer === consoleIssuer)) at(['console', 'oidc', 'issuer'], `issuer ${consoleIssuer} is not listed under identity.oidc`);
  const defaultTier = config.defaultTier ?? tiers[0] ?? '';
  if (config.defaultTier && !tierModels.has(config.defaultTier)) at(['defaultTier'], `tier "${config.defaultTier}" is not declared under tiers`);

  const budgets: CompiledBudget[] = [];
  const seenBudgets = new Set<string>();
  config.budgets.forEach((b, i) => {
    if (seenBudgets.has(b.id)) at(['budgets', i, 'id'], `duplicate budget id "${b.id}"`);
    seenBudgets.add(b.id);
    const unit = 'tokens' in b.limit ? 'tokens' : 'usd';
    const limit = 'tokens' in b.limit ? b.limit.tokens : Math.round(b.limit.usd * 1e6);
    b.tiers?.forEach((t, j) => {
      if (!tierModels.has(t)) at(['budgets', i, 'tiers', j], `tier "${t}" is not declared under tiers`);
      else if (b.tiers!.indexOf(t) !== j) at(['budgets', i, 'tiers', j], `tier "${t}" is listed twice`);
    });
    budgets.push({ config: b, unit, limit, appliesTo: b.when ? celOrIssue(b.when, ['budgets', i, 'when'], at) : undefined });
  });

  // Limits are ledger lines like budgets and share their key space: one id, one line.
  const rateLimits: CompiledLimit[] = [];
  config.rateLimits.forEach((l, i) => {
    if (seenBudgets.has(l.id)) at(['rateLimits', i, 'id'], `duplicate id "${l.id}" (budgets and rate limits share ids)`);
    seenBudgets.add(l.id);
    l.tiers?.forEach((t, j) => {
      if (!tierModels.has(t)) at(['rateLimits', i, 'tiers', j], `tier "${t}" is not declared under tiers`);
    });
    rateLimits.push(compileLimit(l, l.when ? celOrIssue(l.when, ['rateLimits', i, 'when'], at) : undefined));
  });

  const rules: CompiledRule[] = [];
  const seenRules = new Set<string>();
  config.rules.forEach((r, i) => {
    if (seenRules.has(r.id)) at(['rules', i, 'id'], `duplicate rule id "${r.id}"`);
    seenRules.add(r.id);
    if (r.tier && r.effect !== 'cap_tier') at(['rules', i, 'tier'], `only a cap_tier rule takes a tier; a ${r.effect} rule ignores it (remove it, or make the rule cap_tier)`);
    else if (r.tier && !tierModels.has(r.tier)) at(['rules', i, 'tier'], `tier "${r.tier}" is not declared under tiers`);
    const matches = celOrIssue(r.when, ['rules', i, 'when'], at);
    if (matches) rules.push({ config: r, matches });
  });

  for (const [name, provider] of Object.entries(config.providers)) {
    const endpoint = providerEndpoint(provider);
    if (!endpoint) continue;
    const path = provider.kind !== 'demo' && provider.baseUrl ? ['providers', name, 'baseUrl'] : ['providers', name];
    if (!isEgressAllowed(endpoint, config.egress.allow)) {
      at(path, `${new URL(endpoint).host} is not on egress.allow; add it there to let ${name} traffic leave`);
    }
  }

  checkIdentity(config, at);
  checkAlerts(config.alerts, { egressAllow: config.egress.allow, budgetIds: seenBudgets }, at);
  if (config.metering.siem && !isEgressAllowed(config.metering.siem.url, config.egress.allow)) {
    at(['metering', 'siem', 'url'], `${new URL(config.metering.siem.url).host} is not on egress.allow; add it there to let decision events leave`);
  }

  const apiKeys = new Map<string, ApiKeyConfig>();
  // A key's id is its rate limit line (scope key) and its name in --dev-anonymous: one id, one key.
  const keyIds = new Set<string>();
  config.apiKeys.forEach((k, i) => {
    if (keyIds.has(k.id)) at(['apiKeys', i, 'id'], `duplicate API key id "${k.id}"`);
    keyIds.add(k.id);
    if (apiKeys.has(k.sha256)) at(['apiKeys', i, 'sha256'], 'the same key hash is listed twice');
    apiKeys.set(k.sha256, Object.freeze(k));
  });

  return { config: deepFreeze(config), tiers, defaultTier, models, tierModels, hasTier: (name: string) => tierModels.has(name), budgets, rateLimits, rules, apiKeys };
}

function celOrIssue(src: string, path: PropertyKey[], at: (path: readonly PropertyKey[], message: string) => void): CelPredicate | undefined {
  try {
    return compilePredicate(src);
  } catch (err) {
    at(path, `invalid CEL expression: ${(err as Error).message.split('\n')[0]}`);
    return undefined;
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
