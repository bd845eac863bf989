/**
 * OpenFGA checks leave for the host on egress.allow and nowhere else: a proxy named in the
 * environment (HTTP_PROXY, HTTPS_PROXY), which the policy's allowlist never saw, gets neither the
 * check nor the API token that goes with it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FgaAuthorizer } from '../../src/identity/openfga.js';
import type { Principal } from '../../src/identity/principal.js';
import { parsePolicy } from '../../src/policy/load.js';
import { startFakeOpenFga, type FakeOpenFga } from '../helpers/fakeOpenFga.js';

const STORE = '01HZX3Q4K7M2N5P8R9S0T1V2W3';
const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy'] as const;

const alice: Principal = { user: 'alice', teams: [], groups: [], roles: [], authMethod: 'api_key' };

describe('OpenFGA and a proxy set in the environment', () => {
  let fga: FakeOpenFga;
  let proxy: Server;
  const proxied: string[] = [];
  const saved = new Map<string, string | undefined>();
  beforeAll(async () => {
    fga = await startFakeOpenFga();
    fga.grant('user:alice', 'can_use', 'model_tier:premium');
    proxy = createServer((req, res) => {
      proxied.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      res.writeHead(502).end();
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    for (const name of PROXY_VARS) saved.set(name, process.env[name]);
    process.env.HTTP_PROXY = proxyUrl;
    process.env.HTTPS_PROXY = proxyUrl;
    delete process.env.NO_PROXY;
    delete process.env.no_proxy;
  });
  afterAll(async () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    proxy.closeAllConnections();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    await fga.close();
  });

  it('sends the check to the allowed OpenFGA host, not to the proxy', async () => {
    const policy = parsePolicy(
      `
version: 1
providers:
  demo: { kind: demo }
egress: { allow: [127.0.0.1] }
tiers:
  premium: [demo/large]
identity:
  openfga: { apiUrl: "${fga.url}", storeId: ${STORE}, apiToken: fga-secret-token, cacheSeconds: 0 }
`,
      'fga.yaml',
    );
    const authorizer = new FgaAuthorizer(policy.config.identity.openfga!, { egressAllow: policy.config.egress.allow });
    const outcome = await authorizer.check({ principal: alice, request: { tier: 'premium' } });
    expect(outcome).toEqual({ allowed: true, source: 'openfga', tuple: { user: 'user:alice', relation: 'can_use', object: 'model_tier:premium' } });
    expect(fga.requests).toHaveLength(1);
    expect(proxied).toEqual([]);
  });
});
