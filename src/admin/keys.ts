/**
 * `tollgate keys`: issue, revoke and list API keys. With Redis (`--redis`, REDIS_URL) they are in
 * the shared store, seen by every replica; without it, in `keys.jsonl` in the data directory
 * (`--data-dir`, TOLLGATE_DATA_DIR, default ./tollgate-data as for `tollgate serve`), read by the
 * gateway serving from that directory (src/identity/fileKeys.ts).
 *
 *   tollgate keys issue --user U [--id ID] [--teams a,b] [--cost-center C] [--groups g,h] [--roles r]
 *   tollgate keys issue --app NAME --owner U [--teams a,b] [--cost-center C] ...   (an application's key)
 *   tollgate keys revoke --id ID
 *   tollgate keys list [--json]
 *
 * The key is printed once, at issue; only its SHA-256 is stored.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayError } from '../errors.js';
import { FileApiKeys } from '../identity/fileKeys.js';
import { StoredApiKeys, checkIssue, printable, type IssueRequest } from '../identity/storedKeys.js';
import { settingsFromEnv } from '../main.js';
import { loadPolicyFile } from '../policy/load.js';
import { requireSourceMatches } from './mismatch.js';

const list = (v?: string) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined);

/** The options of `tollgate keys`, as parsed. */
export interface KeysValues {
  redis?: string;
  'data-dir'?: string;
  id?: string;
  user?: string;
  teams?: string;
  'cost-center'?: string;
  groups?: string;
  roles?: string;
  app?: string;
  owner?: string;
  json?: boolean;
  policy?: string;
  /** Use a store holding live usage of budgets the policy does not declare. */
  'allow-other-budgets'?: boolean;
}

/** Runs `tollgate keys <argv>` (options parsed here); returns what to print. */
export async function runKeysCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      redis: { type: 'string' },
      'data-dir': { type: 'string' },
      id: { type: 'string' },
      user: { type: 'string' },
      teams: { type: 'string' },
      'cost-center': { type: 'string' },
      groups: { type: 'string' },
      roles: { type: 'string' },
      app: { type: 'string' },
      owner: { type: 'string' },
      json: { type: 'boolean' },
      policy: { type: 'string' },
      'allow-other-budgets': { type: 'boolean' },
    },
  });
  return keysCommand(positionals[0], values, env);
}


/** Runs one keys subcommand (`issue`, `revoke` or `list`); returns what to print. Throws GatewayError on bad input. */
export async function keysCommand(verb: string | undefined, values: KeysValues, env: NodeJS.ProcessEnv): Promise<string> {
  const settings = settingsFromEnv(env);
  const url = values.redis ?? settings.redisUrl;
  if (!url && settings.redisClusterNodes) throw new GatewayError('INVALID_REQUEST', 'tollgate keys writes to the shared store: pass --redis <url> or set REDIS_URL.');
  // Without Redis, the data directory `tollgate serve` would use: --data-dir, else TOLLGATE_DATA_DIR, else ./tollgate-data.
  const dir = values['data-dir'] ?? env.TOLLGATE_DATA_DIR ?? 'tollgate-data';
  const dataDir = dir === 'none' ? undefined : resolve(dir);
  if (!url && !dataDir) throw new GatewayError('INVALID_REQUEST', 'tollgate keys needs somewhere to keep keys: the shared store (--redis <url> or REDIS_URL) or a data directory (--data-dir or TOLLGATE_DATA_DIR, not none).');
  // Keys issued into another deployment's store would let its callers in: check the store is this policy's.
  const policy = loadPolicyFile(values.policy ? resolve(values.policy) : settings.policyPath);
  await requireSourceMatches(policy, url ? { kind: 'redis', url } : { kind: 'journal', dir: dataDir! }, env, values['allow-other-budgets']);
  const keys = url ? new StoredApiKeys({ url, prefix: settings.keyPrefix, commandTimeoutMs: settings.storeTimeoutMs }) : new FileApiKeys({ dir: dataDir! });
  const refusedWithin = url ? 'replicas refuse it within seconds' : `the gateway serving from ${dataDir} refuses it within seconds`;
  try {
    switch (verb) {
      case 'issue': {
        const usage = 'usage: tollgate keys issue --user <user> | --app <name> --owner <user>  [--id ID] [--teams a,b] [--cost-center C] [--groups g] [--roles r]';
        if (values.owner !== undefined && values.app === undefined) throw new GatewayError('INVALID_REQUEST', `--owner names an application's owner: give --app too. ${usage}`);
        if (values.app !== undefined && values.owner === undefined) throw new GatewayError('INVALID_REQUEST', `an application's key needs its owner: --owner <user>. ${usage}`);
        if (values.owner !== undefined && values.user !== undefined && values.owner !== values.user) throw new GatewayError('INVALID_REQUEST', `--user and --owner name different users. ${usage}`);
        const user = values.owner ?? values.user;
        if (!user) throw new GatewayError('INVALID_REQUEST', usage);
        const request: IssueRequest = {
          id: values.id,
          user,
          app: values.app,
          teams: list(values.teams),
          costCenter: values['cost-center'],
          groups: list(values.groups),
          roles: list(values.roles),
        };
        const flags: Record<keyof IssueRequest, string> = { id: '--id', user: values.owner !== undefined ? '--owner' : '--user', app: '--app', teams: '--teams', costCenter: '--cost-center', groups: '--groups', roles: '--roles' };
        checkIssue(request, [...policy.apiKeys.values()].map((k) => k.id), (field) => flags[field]);
        const { key, record } = await keys.issue(request);
        if (values.json) return `${JSON.stringify({ key, ...record }, null, 2)}\n`;
        const whose = record.app ? `application ${record.app} (owner ${record.user})` : record.user;
        return `${key}\n# id ${record.id} for ${whose}; shown once, store it now. Revoke with: tollgate keys revoke --id ${record.id}\n`;
      }
      case 'revoke': {
        if (!values.id) throw new GatewayError('INVALID_REQUEST', 'usage: tollgate keys revoke --id <id>');
        const asked = Date.now();
        const r = await keys.revoke(values.id);
        if (values.json) return `${JSON.stringify(r, null, 2)}\n`;
        // Revoking a revoked key changes nothing: it keeps the time of its first revocation.
        if (Date.parse(r.revokedAt!) < asked) return `${r.id} (${printable(r.user)}) was already revoked at ${r.revokedAt}\n`;
        return `revoked ${r.id} (${printable(r.user)}) at ${r.revokedAt}; ${refusedWithin}\n`;
      }
      case 'list': {
        const all = await keys.list();
        if (values.json) return `${JSON.stringify(all, null, 2)}\n`;
        if (all.length === 0) return 'no issued keys\n';
        const row = (k: (typeof all)[number]) =>
          `${k.id}\t${k.app ? `app=${k.app} owner=` : ''}${k.user}\tteams=${k.teams.join(',')}\tcostCenter=${k.costCenter ?? '-'}\t${k.revokedAt ? `revoked ${k.revokedAt}` : 'active'}`;
        // Records written before names were checked (or into the store by other means) may hold control characters.
        return all.map((k) => row({ ...k, id: printable(k.id), user: printable(k.user), teams: k.teams.map(printable), costCenter: k.costCenter && printable(k.costCenter) })).join('\n') + '\n';
      }
      default:
        throw new GatewayError('INVALID_REQUEST', `unknown keys command "${verb ?? ''}": issue, revoke or list`);
    }
  } finally {
    await keys.close();
  }
}
