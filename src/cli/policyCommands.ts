/**
 * The commands that read a policy without serving it: `check`, `test-policy`, `explain`, and the
 * two small helpers `hash-key` and `call` (a client of a running gateway).
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { parseEnv } from '../config/env.js';
import { GatewayError } from '../errors.js';
import { settingsFrom } from '../main.js';
import { didYouMean } from '../config/suggest.js';
import { checkPolicyText } from '../policy/check.js';
import { undeclaredUsage } from '../policy/simulate.js';
import { readPolicyText, type Policy, type PolicyError, type PolicyIssue } from '../policy/load.js';
import { isoTime } from '../isoTime.js';
import { CliError, EXIT } from './exit.js';
import { loadServedPolicy } from './servedPolicy.js';

/** What a command writes and how it ends. */
export interface Outcome {
  out: string;
  err?: string;
  code: number;
}

/** The policy every command resolves: --policy, else TOLLGATE_POLICY (or the config file's `policy`), else the shipped default. */
export function resolvePolicyPath(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag ? resolve(flag) : settingsFrom(parseEnv(env)).policyPath;
}

/** One line per issue, `file:line:col: path: message`, the form editors and CI annotate. */
export function formatIssues(file: string, issues: PolicyIssue[]): string {
  const lines = issues.map((i) => `${file}${i.line ? `:${i.line}:${i.column}` : ''}: ${i.path ? `${i.path}: ` : ''}${i.message}`);
  return `${lines.join('\n')}\n${file}: ${issues.length} error${issues.length === 1 ? '' : 's'}\n`;
}

/**
 * `tollgate check [file]`: every error with its line:column (exit 1), or a one-line summary, with
 * warnings on stderr that leave the exit status 0, each with its stable code: a shipped price not
 * confirmed for 90 days (PRICE_UNCHECKED), a model retired or retiring within 60 days (MODEL_RETIRED,
 * MODEL_RETIRING).
 */
export function check(file: string | undefined, flags: { policy?: string }, env: NodeJS.ProcessEnv, now = Date.now()): Outcome {
  const path = file ?? (flags.policy ? flags.policy : resolvePolicyPath(undefined, env));
  let text: string;
  try {
    text = readPolicyText(resolve(path));
  } catch (err) {
    return { out: '', err: formatIssues(path, (err as PolicyError).issues), code: EXIT.failed };
  }
  const { policy, errors, warnings } = checkPolicyText(text, resolve(path), { now });
  if (!policy) return { out: '', err: formatIssues(path, errors), code: EXIT.failed };
  return {
    out: `${path}: valid (version ${policy.version}; ${policy.tiers.length} tiers, ${policy.models.size} models, ${policy.budgets.length} budgets, ${policy.rules.length} rules, ${policy.apiKeys.size} API keys)\n`,
    err: warnings.map((w) => `${path}: warning ${w.code}: ${w.message}\n`).join('') || undefined,
    code: EXIT.ok,
  };
}

/** `tollgate test-policy <files...>`: each case's result, exit 1 when one fails. */
export async function testPolicy(files: string[], flags: { policy?: string }, env: NodeJS.ProcessEnv): Promise<Outcome> {
  const { runPolicyTestFile, formatResults } = await import('../policy/policyTest.js');
  const choice = { override: flags.policy ? resolve(flags.policy) : undefined, fallback: resolvePolicyPath(undefined, env) };
  const { text, failed } = formatResults(files.map((f) => runPolicyTestFile(f, choice)));
  return { out: text, code: failed > 0 ? EXIT.failed : EXIT.ok };
}

export interface ExplainFlags {
  policy?: string;
  as: string;
  tier?: string;
  model?: string;
  prompt?: string;
  maxTokens?: string;
  usage?: string;
  now?: string;
}

/** Each `--usage` key must name a budget or rate limit of the policy (undeclaredUsage). */
function requireDeclaredLines(policy: Policy, keys: string[]): void {
  const missing = undeclaredUsage(policy, keys);
  if (!missing) return;
  const { id, declared } = missing;
  throw new CliError(`--usage ${id}: the policy declares no such budget or rate limit${didYouMean(id, declared)} (it declares ${declared.join(', ') || 'none'})`);
}

/**
 * A flag's value read by `read`: refused (INVALID_REQUEST, or for --as a key or token the policy
 * does not take, AUTH_INVALID), it is a bad command line (exit 2), not a failure found.
 */
function badValue<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof GatewayError && (err.code === 'INVALID_REQUEST' || err.code === 'AUTH_INVALID')) throw new CliError(`${err.code}: ${err.message}`);
    throw err;
  }
}

/** `tollgate explain`: the decision for one call, what decided it and what would change it. */
export async function explain(flags: ExplainFlags, env: NodeJS.ProcessEnv): Promise<Outcome> {
  const { explainCall, explainRequest, formatExplanation, parseUsageArg, principalFromArg } = await import('../policy/explain.js');
  let now = Date.now();
  try {
    if (flags.now) now = isoTime('--now', flags.now);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  if (flags.maxTokens !== undefined && !/^[1-9][0-9]*$/.test(flags.maxTokens)) throw new CliError('--max-tokens must be a positive integer, in decimal');
  const maxTokens = flags.maxTokens !== undefined ? Number(flags.maxTokens) : undefined;
  const policy = loadServedPolicy(resolvePolicyPath(flags.policy, env));
  const usage = flags.usage ? badValue(() => parseUsageArg(flags.usage!)) : {};
  requireDeclaredLines(policy, Object.keys(usage));
  const report = explainCall({
    policy,
    principal: badValue(() => principalFromArg(policy, flags.as)),
    request: explainRequest({ tier: flags.tier, model: flags.model, prompt: flags.prompt, maxTokens }),
    usage,
    now,
  });
  return { out: formatExplanation(report), code: EXIT.ok };
}

/** What an API key may hold: visible ASCII, which an HTTP header carries byte for byte and `Bearer <key>` reads whole. */
const SENDABLE_KEY = /^[\x21-\x7e]+$/;

/**
 * `tollgate hash-key <key>`: the sha256 to put under apiKeys[].sha256. A key outside visible ASCII
 * is refused: the gateway reads a header's bytes as Latin-1, so a client sending the key as UTF-8
 * would present another string than the one hashed here, and a space ends the credential.
 */
export function hashKey(key: string): Outcome {
  if (!SENDABLE_KEY.test(key)) {
    throw new CliError('INVALID_REQUEST: an API key must be visible ASCII characters (no spaces, control or non-ASCII characters): HTTP clients send anything else as other bytes than tollgate hashes, so the key would never authenticate');
  }
  return { out: `${createHash('sha256').update(key, 'utf8').digest('hex')}\n`, code: EXIT.ok };
}

export interface CallFlags {
  key?: string;
  url?: string;
  host?: string;
  port?: string;
  tier?: string;
  model?: string;
  maxTokens?: string;
  json?: boolean;
  budget?: boolean;
  models?: boolean;
}

/** `tollgate call`: one call to a running gateway's complete, my_budget or list_models tool; exit 1 when refused. */
export async function call(words: string[], flags: CallFlags, processEnv: NodeJS.ProcessEnv): Promise<Outcome> {
  const env = parseEnv(processEnv);
  const apiKey = flags.key ?? env.TOLLGATE_API_KEY;
  if (!apiKey) throw new CliError('call needs an API key: --key <key> or TOLLGATE_API_KEY');
  const tool = flags.budget ? 'my_budget' : flags.models ? 'list_models' : 'complete';
  const prompt = words.join(' ');
  if (tool === 'complete' && !prompt) throw new CliError('call needs a prompt: tollgate call [--key K] [--tier T | --model M] [--max-tokens N] <prompt>');
  const maxTokens = flags.maxTokens !== undefined ? Number(flags.maxTokens) : undefined;
  const url = flags.url ?? `http://${flags.host ?? env.TOLLGATE_HOST}:${flags.port ?? env.TOLLGATE_PORT}/mcp`;
  const { callGateway } = await import('../client.js');
  const { out, code } = await callGateway({ url, apiKey, tool, prompt, tier: flags.tier, model: flags.model, maxTokens, json: flags.json ?? false });
  return code === 0 ? { out: `${out}\n`, code } : { out: '', err: `${out}\n`, code };
}
