/**
 * Starts a real tollgate HTTP server on a free loopback port with a policy given as text, and
 * connects the official MCP client to it. Events are captured in memory for assertions.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { buildRuntime, settingsFromEnv, startHttp, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy } from '../../src/policy/load.js';
import type { QuotaStore } from '../../src/quota/store.js';

export interface TestGateway {
  url: string;
  mcpUrl: string;
  runtime: Runtime;
  events: ReturnType<typeof memorySink>['events'];
  /** Waits until every call answered so far is charged and has its event (see Gateway.idle). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export async function startTestGateway(
  policyText: string,
  opts: { store?: QuotaStore; now?: () => number; env?: Record<string, string>; maxBodyBytes?: number } = {},
): Promise<TestGateway> {
  const settings = settingsFromEnv({ TOLLGATE_PORT: '0', TOLLGATE_LOG_LEVEL: 'silent', ...opts.env });
  if (opts.maxBodyBytes) settings.http.maxBodyBytes = opts.maxBodyBytes;
  const sink = memorySink();
  const runtime = await buildRuntime(settings, { policy: parsePolicy(policyText, 'test-policy.yaml'), sink, store: opts.store, now: opts.now });
  const http = await startHttp(runtime, settings);
  return {
    url: http.url,
    mcpUrl: `${http.url}/mcp`,
    runtime,
    events: sink.events,
    idle: () => runtime.gateway.idle(),
    async close() {
      await http.close();
      await runtime.close();
    },
  };
}

/** An MCP client connected over streamable HTTP with the given API key. */
export async function connectHttp(mcpUrl: string, apiKey: string): Promise<Client> {
  const client = new Client({ name: 'tollgate-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${apiKey}` } } });
  await client.connect(transport);
  return client;
}
