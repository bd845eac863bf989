/**
 * Hot reload of the policy file, on change or on SIGHUP. A valid new policy replaces the old one
 * atomically (budget counters live in the quota store, so none is lost; a call in flight keeps
 * the policy it started with). An invalid one is refused: the old policy keeps serving and the
 * refusal is logged with every issue.
 *
 * The directory is watched, not the file: editors that save by writing a temporary file and
 * renaming it over the original replace the inode, and a watch on the file itself goes deaf after
 * the first such save. Kubernetes ConfigMap mounts swap a `..data` symlink in the same directory,
 * which the filter below lets through. Events come in bursts, so reloads are debounced; a change
 * event whose content hashes to the version already serving (or to the last refused text) is
 * ignored. SIGHUP always reloads, so rotated `${file:...}` or `${env:...}` secrets are re-read.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import { parsePolicy, PolicyError, readPolicyText, type CompiledBudget, type CompiledLimit, type Policy, type PolicyIssue } from './load.js';

/** What a reload swaps the policy on: the Gateway. */
export interface ReloadTarget {
  readonly policy: Policy;
  replacePolicy(policy: Policy): void;
  /**
   * What refuses a valid policy given what the target holds beyond the file (an `apiKeys` id a key
   * issued at run time holds): its issues, none when it may serve. Rejects when it cannot tell (a
   * store not answering); the reload is then refused too.
   */
  vet?(policy: Policy): Promise<PolicyIssue[]>;
}

export type ReloadTrigger = 'file' | 'sighup';

export type ReloadOutcome =
  | { status: 'reloaded'; oldVersion: string; newVersion: string; windowChanges?: WindowChange[]; removed?: RemovedId[] }
  | { status: 'unchanged'; version: string }
  | { status: 'failed'; version: string; issues: PolicyIssue[] };

export interface PolicyReloaderOptions {
  path: string;
  target: ReloadTarget;
  logger: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
  /** Quiet time after the last file event before reloading. */
  debounceMs?: number;
  /** Watch the file's directory for changes (default true). */
  watchFile?: boolean;
  /** Where SIGHUP is listened for (default: the process); null to not listen. */
  signals?: Pick<NodeJS.EventEmitter, 'on' | 'off'> | null;
  /** Compiles policy text (default: parsePolicy with the process's bindings). */
  parse?: (text: string, source: string) => Policy;
}

/** One reload attempt as the console's Policy page lists it. */
export interface ReloadRecord {
  /** ISO time of the attempt. */
  at: string;
  trigger: ReloadTrigger;
  status: 'reloaded' | 'failed';
  /** The version serving before. */
  oldVersion: string;
  /** The version serving after (the same as before when it failed). */
  newVersion: string;
  /** Why a failed reload was refused. */
  issues?: PolicyIssue[];
  /** Budgets and rate limits whose count a reload started afresh (`windowChanges`). */
  windowChanges?: WindowChange[];
  /** Budgets and rate limits a reload removed or renamed (`removedIds`). */
  removed?: RemovedId[];
}

/** Reload attempts kept in memory for the console, newest last. */
const HISTORY_MAX = 50;

export interface PolicyReloader {
  /** Re-reads the file now and swaps the policy in if it is valid; one reload at a time, in the order asked. */
  reload(trigger: ReloadTrigger): Promise<ReloadOutcome>;
  /** The last reload attempts that reloaded or failed (unchanged files are left out), oldest first. */
  history(): ReloadRecord[];
  /** The function registered for SIGHUP. */
  onSighup(): void;
  close(): void;
}

const hash = (text: string) => createHash('sha256').update(text).digest('hex');

/** What a budget's counters hold: its unit over its window. */
function budgetCounts(b: CompiledBudget): string {
  const w = b.config.window;
  const window = 'calendar' in w ? `calendar ${w.calendar} (${w.timezone})` : `rolling ${(w.rolling.days ?? 0) * 24 + (w.rolling.hours ?? 0)} h in ${w.buckets} buckets`;
  return `${b.unit} over ${window}`;
}

/** What a rate limit's counters hold: its unit over its sliding window, or the calls in flight. */
function limitCounts(l: CompiledLimit): string {
  return l.kind === 'concurrent' ? 'calls in flight' : `${l.kind} over ${l.spanMs / 1000} s in ${l.buckets} buckets`;
}

/** A budget or rate limit kept under its id whose counters a new policy reads otherwise. */
export type WindowChange = ({ budget: string } | { rateLimit: string }) & { from: string; to: string };

/**
 * Budgets and rate limits kept under their id whose window or unit `after` changes. Their counters
 * are named by the id and each bucket's start, and hold the old unit: under a new window the count
 * starts afresh (the new buckets do not read the old), and under a new unit the old count is read
 * as the new unit. Changing only the amount keeps the count. Worth telling the operator who reloads.
 */
export function windowChanges(before: Policy, after: Policy): WindowChange[] {
  const out: WindowChange[] = [];
  const budgets = new Map(before.budgets.map((b) => [b.config.id, budgetCounts(b)]));
  for (const b of after.budgets) {
    const from = budgets.get(b.config.id);
    const to = budgetCounts(b);
    if (from !== undefined && from !== to) out.push({ budget: b.config.id, from, to });
  }
  const limits = new Map(before.rateLimits.map((l) => [l.config.id, limitCounts(l)]));
  for (const l of after.rateLimits) {
    const from = limits.get(l.config.id);
    const to = limitCounts(l);
    if (from !== undefined && from !== to) out.push({ rateLimit: l.config.id, from, to });
  }
  return out;
}

/** A budget or rate limit the policy before a reload declared and the new one does not. */
export type RemovedId = { budget: string } | { rateLimit: string };

/**
 * Budgets and rate limits `before` declares and `after` does not (removed, or renamed: a new id
 * counts from zero). Their counters stay in the store until their windows end, and a start checks
 * the store against its policy: on `after`, it refuses (exit 4) while they hold usage, so a restart
 * after such a reload fails until then unless it is given --allow-other-budgets. Worth telling.
 */
export function removedIds(before: Policy, after: Policy): RemovedId[] {
  const budgets = new Set(after.budgets.map((b) => b.config.id));
  const limits = new Set(after.rateLimits.map((l) => l.config.id));
  return [
    ...before.budgets.filter((b) => !budgets.has(b.config.id)).map((b) => ({ budget: b.config.id })),
    ...before.rateLimits.filter((l) => !limits.has(l.config.id)).map((l) => ({ rateLimit: l.config.id })),
  ];
}

/** Starts watching `path` (and SIGHUP) and reloading `target`'s policy from it. */
export function watchPolicy(opts: PolicyReloaderOptions): PolicyReloader {
  const { path, target, logger } = opts;
  const parse = opts.parse ?? ((text: string, source: string) => parsePolicy(text, source));
  const debounceMs = opts.debounceMs ?? 200;
  const signals = opts.signals === undefined ? process : opts.signals;
  let lastRefused: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let watcher: FSWatcher | undefined;
  const history: ReloadRecord[] = [];
  let queue: Promise<unknown> = Promise.resolve();

  function reload(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    const run = queue.then(() => attempt(trigger)).then((outcome) => record(trigger, outcome));
    queue = run.catch(() => undefined);
    return run;
  }

  function record(trigger: ReloadTrigger, outcome: ReloadOutcome): ReloadOutcome {
    if (outcome.status !== 'unchanged') {
      const failed = outcome.status === 'failed';
      history.push({
        at: new Date().toISOString(),
        trigger,
        status: outcome.status,
        oldVersion: failed ? outcome.version : outcome.oldVersion,
        newVersion: failed ? outcome.version : outcome.newVersion,
        ...(failed ? { issues: outcome.issues } : {}),
        ...(outcome.status === 'reloaded' && outcome.windowChanges ? { windowChanges: outcome.windowChanges } : {}),
        ...(outcome.status === 'reloaded' && outcome.removed ? { removed: outcome.removed } : {}),
      });
      if (history.length > HISTORY_MAX) history.shift();
    }
    return outcome;
  }

  async function attempt(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    const oldVersion = target.policy.version;
    let text: string;
    try {
      text = readPolicyText(path);
    } catch (err) {
      const issues = (err as PolicyError).issues;
      logger.error({ event: 'policy_reload_failed', trigger, policy: path, version: oldVersion, issues }, 'policy reload refused; the current policy stays');
      return { status: 'failed', version: oldVersion, issues };
    }
    const textHash = hash(text);
    // A policy's version is the head of its text's SHA-256 (load.ts), so equal text is the policy serving now.
    if (trigger === 'file' && (textHash.startsWith(oldVersion) || textHash === lastRefused)) {
      return { status: 'unchanged', version: oldVersion };
    }
    let next: Policy;
    try {
      next = parse(text, path);
    } catch (err) {
      lastRefused = textHash;
      const issues = err instanceof PolicyError ? err.issues : [{ path: '', message: (err as Error).message }];
      logger.error({ event: 'policy_reload_failed', trigger, policy: path, version: oldVersion, issues }, 'policy reload refused; the current policy stays');
      return { status: 'failed', version: oldVersion, issues };
    }
    let vetted: PolicyIssue[];
    try {
      vetted = (await target.vet?.(next)) ?? [];
    } catch (err) {
      // Not known to be wrong, only not checked: a policy change made during an outage (a model
      // denied, a budget lowered) must still take effect.
      vetted = [];
      logger.warn({ event: 'policy_key_ids_unchecked', policy: path, err: (err as Error).message }, "the keys issued with tollgate keys could not be listed: the new policy's apiKeys ids are not checked against them");
    }
    if (vetted.length > 0) {
      lastRefused = textHash;
      logger.error({ event: 'policy_reload_failed', trigger, policy: path, version: oldVersion, issues: vetted }, 'policy reload refused; the current policy stays');
      return { status: 'failed', version: oldVersion, issues: vetted };
    }
    lastRefused = undefined;
    const changes = windowChanges(target.policy, next);
    const removed = removedIds(target.policy, next);
    target.replacePolicy(next);
    logger.info({ event: 'policy_reloaded', trigger, policy: path, oldVersion, newVersion: next.version }, 'policy reloaded');
    if (changes.length > 0) {
      logger.warn({ event: 'policy_window_changed', policy: path, newVersion: next.version, changes }, 'a reload changed the window or unit of budgets or rate limits kept under their id: their count starts afresh in the new window (or is read in the new unit)');
    }
    if (removed.length > 0) {
      logger.warn(
        { event: 'policy_ids_removed', policy: path, newVersion: next.version, removed },
        'a reload removed or renamed budgets or rate limits: their counters stay in the store until their windows end (a renamed one counts from zero under its new id), and while they hold usage a start on this policy refuses the store (exit 4) unless given --allow-other-budgets',
      );
    }
    return { status: 'reloaded', oldVersion, newVersion: next.version, ...(changes.length > 0 ? { windowChanges: changes } : {}), ...(removed.length > 0 ? { removed } : {}) };
  }

  function schedule(): void {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void reload('file');
    }, debounceMs);
    timer.unref();
  }

  if (opts.watchFile ?? true) {
    const file = basename(path);
    watcher = watch(dirname(path), { persistent: false }, (_event, name) => {
      // Some platforms give no name; `..data` is the Kubernetes ConfigMap symlink swap.
      if (name === null || name === file || name.startsWith('..')) schedule();
    });
    watcher.on('error', (err) => logger.warn({ event: 'policy_watch_failed', policy: path, err }, 'policy file watch stopped; SIGHUP still reloads'));
  }

  const onSighup = () => void reload('sighup');
  signals?.on('SIGHUP', onSighup);

  return {
    reload,
    history: () => [...history],
    onSighup,
    close() {
      if (timer) clearTimeout(timer);
      watcher?.close();
      signals?.off('SIGHUP', onSighup);
    },
  };
}
