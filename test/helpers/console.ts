/**
 * A real tollgate HTTP server with the web console mounted, as `tollgate serve` builds it: the
 * runtime, the console's routes and the HTTP transport on a free loopback port.
 */
import { consoleRoutes } from '../../src/console/index.js';
import { buildRuntime, settingsFromEnv, startHttp, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import type { ReloadRecord } from '../../src/policy/reload.js';
import type { QuotaStore } from '../../src/quota/store.js';

export interface ConsoleGateway {
  url: string;
  runtime: Runtime;
  events: ReturnType<typeof memorySink>['events'];
  close(): Promise<void>;
}

export async function startConsoleGateway(
  policyText: string,
  opts: { store?: QuotaStore; dataDir?: string; now?: () => number; env?: Record<string, string>; host?: string; reloads?: () => ReloadRecord[] } = {},
): Promise<ConsoleGateway> {
  const settings = settingsFromEnv({ TOLLGATE_PORT: '0', TOLLGATE_LOG_LEVEL: 'silent', ...opts.env });
  if (opts.host) settings.http.host = opts.host;
  settings.dataDir = opts.dataDir;
  const sink = memorySink();
  const runtime = await buildRuntime(settings, { policy: parsePolicy(policyText, 'console-policy.yaml'), sink, store: opts.store, now: opts.now });
  const routes = consoleRoutes({ gateway: runtime.gateway, host: settings.http.host, keyPrefix: settings.keyPrefix, dataDir: opts.dataDir, sessionSecret: settings.http.sessionSecret, reloads: opts.reloads, now: opts.now });
  const http = await startHttp(runtime, settings, [routes]);
  return {
    url: http.url,
    runtime,
    events: sink.events,
    async close() {
      await http.close();
      await runtime.close();
    },
  };
}
