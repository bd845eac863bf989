import { EventEmitter, once } from 'node:events';
import { mkdtempSync, renameSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { policyPage } from '../../src/console/pages.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import { watchPolicy, type PolicyReloader } from '../../src/policy/reload.js';
import { heldProvider } from '../helpers/heldProvider.js';

const policyText = (tokens: number) => `version: 1
providers:
  demo: { kind: demo }
tiers:
  standard: [demo/medium]
  economy: [demo/small]
budgets:
  - id: user-weekly
    scope: user
    window: { calendar: week, timezone: Europe/Paris }
    limit: { tokens: ${tokens} }
`;
const versionOf = (text: string) => parsePolicy(text, 'v.yaml').version;
const alice: Principal = { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key' };
const ask = { messages: [{ role: 'user' as const, content: 'Hello there' }], maxTokens: 20 };

let runtime: Runtime | undefined;
let reloader: PolicyReloader | undefined;
afterEach(async () => {
  reloader?.close();
  vi.useRealTimers();
  await runtime?.close();
  reloader = undefined;
  runtime = undefined;
});

/** A reload runs after the checks it awaits (Gateway.vet): lets one set off by a timer or a signal finish. */
const reloadsDone = () => new Promise((r) => setImmediate(r));

async function start(text: string, opts: { watchFile?: boolean; signals?: EventEmitter } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-reload-'));
  const path = join(dir, 'policy.yaml');
  writeFileSync(path, text);
  const sink = memorySink();
  const settings = { ...settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), policyPath: path };
  runtime = await buildRuntime(settings, { sink });
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  reloader = watchPolicy({ path, target: runtime.gateway, logger, debounceMs: 20, watchFile: opts.watchFile, signals: opts.signals ?? null });
  const gateway = runtime.gateway;
  return { dir, path, gateway, events: sink.events, logs, reloader };
}

const V1 = policyText(10_000);
const V2 = policyText(20_000);
const waitOpts = { timeout: 5000, interval: 20 };

describe('policy hot reload', () => {
  it('serves the next call under a changed file, with the budget counters intact', async () => {
    const t = await start(V1);
    await t.gateway.complete({ principal: alice, transport: 'cli', request: ask });
    const [before] = await t.gateway.myBudget(alice);
    expect(before).toMatchObject({ limit: 10_000 });
    expect(before!.used).toBeGreaterThan(0);

    writeFileSync(t.path, V2);
    await vi.waitFor(() => expect(t.gateway.policy.version).toBe(versionOf(V2)), waitOpts);

    const [after] = await t.gateway.myBudget(alice);
    expect(after).toMatchObject({ limit: 20_000, used: before!.used });
    await t.gateway.complete({ principal: alice, transport: 'cli', request: ask });
    expect(t.events.map((e) => e['policy.version'])).toEqual([versionOf(V1), versionOf(V2)]);
    expect(t.logs.filter((l) => l.event === 'policy_reloaded')).toEqual([
      expect.objectContaining({ event: 'policy_reloaded', trigger: 'file', policy: t.path, oldVersion: versionOf(V1), newVersion: versionOf(V2) }),
    ]);
  });

  it('warns, naming each budget and rate limit kept under its id whose window or unit it changes, that its count starts afresh', async () => {
    const withLimits = (window: string, limit: string) =>
      policyText(10_000).replace('window: { calendar: week, timezone: Europe/Paris }', window) +
      `rateLimits:\n  - { id: user-rpm, scope: user, ${limit} }\n  - { id: user-cap, scope: user, concurrent: 4 }\n`;
    const t = await start(withLimits('window: { calendar: week, timezone: Europe/Paris }', 'requestsPerMinute: 5'));
    // The limit's number and the budget's amount change nothing counted: no warning.
    await t.reloader.reload('sighup');
    writeFileSync(t.path, withLimits('window: { calendar: week, timezone: Europe/Paris }', 'requestsPerMinute: 9').replace('tokens: 10000', 'tokens: 500'));
    expect((await t.reloader.reload('sighup')).status).toBe('reloaded');
    expect(t.logs.filter((l) => l.event === 'policy_window_changed')).toEqual([]);
    writeFileSync(t.path, withLimits('window: { rolling: { days: 7 }, buckets: 28 }', 'requestsPerMinute: 9, buckets: 6'));
    expect((await t.reloader.reload('sighup')).status).toBe('reloaded');
    expect(t.logs.filter((l) => l.event === 'policy_window_changed')).toEqual([
      expect.objectContaining({
        changes: [
          { budget: 'user-weekly', from: 'tokens over calendar week (Europe/Paris)', to: 'tokens over rolling 168 h in 28 buckets' },
          { rateLimit: 'user-rpm', from: 'requests over 60 s in 12 buckets', to: 'requests over 60 s in 6 buckets' },
        ],
      }),
    ]);
    // The console's reload history says it too.
    const page = policyPage({ user: 'ops', role: 'read-only', csrf: 'x' }, t.gateway.policy, { version: versionOf(V1), at: '' }, t.reloader.history());
    expect(page).toContain('counted afresh: budget user-weekly: tokens over calendar week (Europe/Paris) → tokens over rolling 168 h in 28 buckets; rate limit user-rpm: requests over 60 s in 12 buckets → requests over 60 s in 6 buckets');
    // A budget counted in dollars under an id that counted tokens reads the tokens as dollars.
    writeFileSync(t.path, withLimits('window: { rolling: { days: 7 }, buckets: 28 }', 'tokensPerMinute: 900, buckets: 6').replace('tokens: 10000', 'usd: 5'));
    expect((await t.reloader.reload('sighup')).status).toBe('reloaded');
    expect(t.logs.filter((l) => l.event === 'policy_window_changed').at(-1)!.changes).toEqual([
      { budget: 'user-weekly', from: 'tokens over rolling 168 h in 28 buckets', to: 'usd over rolling 168 h in 28 buckets' },
      { rateLimit: 'user-rpm', from: 'requests over 60 s in 6 buckets', to: 'tokens over 60 s in 6 buckets' },
    ]);
  });

  it('warns, naming each budget and rate limit it removes or renames, that a restart on it refuses the store while they hold usage', async () => {
    const withLimit = (text: string) => `${text}rateLimits:\n  - { id: user-rpm, scope: user, requestsPerMinute: 5 }\n`;
    const t = await start(withLimit(V1));
    await t.gateway.complete({ principal: alice, transport: 'cli', request: ask });
    // Renamed: user-weekly is gone, user-weekly-v2 counts from zero; the limit is dropped.
    writeFileSync(t.path, V1.replace('id: user-weekly', 'id: user-weekly-v2'));
    expect((await t.reloader.reload('sighup')).status).toBe('reloaded');
    expect(t.logs.filter((l) => l.event === 'policy_ids_removed')).toEqual([
      expect.objectContaining({ level: 40, removed: [{ budget: 'user-weekly' }, { rateLimit: 'user-rpm' }] }),
    ]);
    expect(t.logs.find((l) => l.event === 'policy_ids_removed')!.msg).toMatch(/--allow-other-budgets/);
    const page = policyPage({ user: 'ops', role: 'read-only', csrf: 'x' }, t.gateway.policy, { version: versionOf(V1), at: '' }, t.reloader.history());
    expect(page).toContain('removed: budget user-weekly, rate limit user-rpm');
    // Nothing removed, nothing said.
    writeFileSync(t.path, V2.replace('id: user-weekly', 'id: user-weekly-v2'));
    expect((await t.reloader.reload('sighup')).status).toBe('reloaded');
    expect(t.logs.filter((l) => l.event === 'policy_ids_removed')).toHaveLength(1);
  });

  it('refuses an invalid file, keeps the old policy serving and logs every issue', async () => {
    const t = await start(V1);
    writeFileSync(t.path, V1.replace('tokens: 10000', 'tokens: -1').replace('timezone: Europe/Paris', 'timezone: Mars/Base'));
    await vi.waitFor(() => expect(t.logs.some((l) => l.event === 'policy_reload_failed')).toBe(true), waitOpts);

    expect(t.gateway.policy.version).toBe(versionOf(V1));
    const failed = t.logs.find((l) => l.event === 'policy_reload_failed')!;
    expect(failed).toMatchObject({ trigger: 'file', policy: t.path, version: versionOf(V1), level: 50 });
    expect(failed.issues).toEqual([
      { path: 'budgets[0].window.timezone', line: 10, column: 41, message: 'not an IANA timezone name (e.g. Europe/Paris), got "Mars/Base"' },
      { path: 'budgets[0].limit.tokens', line: 11, column: 22, message: 'Too small: expected number to be >0, got -1' },
    ]);
    const r = await t.gateway.complete({ principal: alice, transport: 'cli', request: ask });
    expect(r.budgets[0]).toMatchObject({ limit: 10_000 });
    expect(t.events.at(-1)!['policy.version']).toBe(versionOf(V1));
  });

  it('follows an editor that saves by renaming a new file over the old one, save after save', async () => {
    const t = await start(V1);
    writeFileSync(join(t.dir, '.policy.yaml.swp'), V2);
    renameSync(join(t.dir, '.policy.yaml.swp'), t.path);
    await vi.waitFor(() => expect(t.gateway.policy.version).toBe(versionOf(V2)), waitOpts);

    const V3 = policyText(30_000);
    writeFileSync(join(t.dir, '.policy.yaml.swp'), V3);
    renameSync(join(t.dir, '.policy.yaml.swp'), t.path);
    await vi.waitFor(() => expect(t.gateway.policy.version).toBe(versionOf(V3)), waitOpts);
  });

  it('ignores changes to other files in the directory', async () => {
    const t = await start(V1);
    // V2 serves while the file still says V1, so a reload set off by the other file would show.
    t.gateway.replacePolicy(parsePolicy(V2, t.path));
    // The debounce runs on fake timers: the test fires whatever reload the watcher has scheduled.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    // The test watches the directory too. File events arrive in order, so once it sees `marker`,
    // the reloader has been handed every event of the writes before it.
    const seen: string[] = [];
    const events = watch(t.dir, (_event, name) => void seen.push(String(name)));
    const delivered = async (name: string) => {
      while (!seen.includes(name)) await once(events, 'change');
      await new Promise((r) => setImmediate(r)); // the rest of that batch of events, to every watcher
    };
    try {
      writeFileSync(join(t.dir, 'other.yaml'), 'not: a policy');
      writeFileSync(join(t.dir, 'marker'), '');
      await delivered('marker');
      vi.runOnlyPendingTimers();
      await reloadsDone();
      expect(t.logs).toEqual([]);
      expect(t.gateway.policy.version).toBe(versionOf(V2));

      // The same watcher does reload for the policy file itself.
      const V3 = policyText(30_000);
      writeFileSync(t.path, V3);
      await delivered('policy.yaml');
      vi.runOnlyPendingTimers();
      await reloadsDone();
      expect(t.logs).toEqual([expect.objectContaining({ event: 'policy_reloaded', trigger: 'file', oldVersion: versionOf(V2), newVersion: versionOf(V3) })]);
    } finally {
      events.close();
    }
  });

  it('reloads on SIGHUP, even when the text is the same (rotated secrets are re-read)', async () => {
    const signals = new EventEmitter();
    const t = await start(V1, { watchFile: false, signals });
    writeFileSync(t.path, V2);
    expect(t.gateway.policy.version).toBe(versionOf(V1));

    signals.emit('SIGHUP');
    await reloadsDone();
    expect(t.gateway.policy.version).toBe(versionOf(V2));
    expect(t.logs.at(-1)).toMatchObject({ event: 'policy_reloaded', trigger: 'sighup', oldVersion: versionOf(V1), newVersion: versionOf(V2) });

    t.reloader.onSighup();
    await reloadsDone();
    expect(t.logs.at(-1)).toMatchObject({ event: 'policy_reloaded', trigger: 'sighup', oldVersion: versionOf(V2), newVersion: versionOf(V2) });
    expect(await t.reloader.reload('sighup')).toEqual({ status: 'reloaded', oldVersion: versionOf(V2), newVersion: versionOf(V2) });

    t.reloader.close();
    expect(signals.listenerCount('SIGHUP')).toBe(0);
  });

  it('lets a call in flight finish under the policy it started with', async () => {
    const t = await start(V1, { watchFile: false });
    // The provider holds the call until the reload is done.
    const held = heldProvider();
    t.gateway.replacePolicy(t.gateway.policy, new Map([['demo', held.provider]]));
    const inFlight = t.gateway.complete({ principal: alice, transport: 'cli', request: ask });
    await held.arrived;
    writeFileSync(t.path, V2);
    expect(await t.reloader.reload('file')).toEqual({ status: 'reloaded', oldVersion: versionOf(V1), newVersion: versionOf(V2) });
    held.release();

    const first = await inFlight;
    expect(first.budgets[0]).toMatchObject({ limit: 10_000 });
    await t.gateway.complete({ principal: alice, transport: 'cli', request: ask });
    expect(t.events.map((e) => e['policy.version'])).toEqual([versionOf(V1), versionOf(V2)]);
  });

  it('reports a missing file as a refused reload', async () => {
    const t = await start(V1, { watchFile: false });
    renameSync(t.path, join(t.dir, 'moved.yaml'));
    expect(await t.reloader.reload('sighup')).toEqual({ status: 'failed', version: versionOf(V1), issues: [{ path: '', message: 'cannot read policy file: ENOENT' }] });
    expect(t.gateway.policy.version).toBe(versionOf(V1));
  });

  it('keeps a history of reloads and refused reloads for the console, leaving out unchanged files', async () => {
    const t = await start(V1, { watchFile: false });
    expect(await t.reloader.reload('file')).toEqual({ status: 'unchanged', version: versionOf(V1) });
    writeFileSync(t.path, V2);
    await t.reloader.reload('file');
    writeFileSync(t.path, 'version: 2\n');
    await t.reloader.reload('sighup');
    expect(t.reloader.history().map(({ at, issues, ...r }) => ({ ...r, at: typeof at, issues: issues?.length }))).toEqual([
      { at: 'string', trigger: 'file', status: 'reloaded', oldVersion: versionOf(V1), newVersion: versionOf(V2), issues: undefined },
      { at: 'string', trigger: 'sighup', status: 'failed', oldVersion: versionOf(V2), newVersion: versionOf(V2), issues: 3 },
    ]);
  });
});
