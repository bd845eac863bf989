/**
 * Per-application keys: `tollgate keys issue --app NAME --owner USER` makes a key whose calls are
 * the application's, charged to budgets of scope application and, as the policy's
 * applications.charge says, to its owner's lines too; my_budget shows the application its own
 * lines, and limits of scope application hold it to its own rate.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runKeysCommand } from '../../src/admin/keys.js';
import { connectHttp, startTestGateway, type TestGateway } from '../helpers/gateway.js';

function policy(charge: 'both' | 'application' | 'owner'): string {
  return `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
applications: { charge: ${charge} }
budgets:
  - { id: app-daily, scope: application, window: { calendar: day }, limit: { tokens: 5000 } }
  - { id: user-weekly, scope: user, window: { calendar: week }, limit: { tokens: 100000 } }
  - { id: team-monthly, scope: team, window: { calendar: month }, limit: { tokens: 1000000 } }
rateLimits:
  - { id: app-rpm, scope: application, requestsPerMinute: 2 }
`;
}

describe('application keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-appkeys-'));
  const env = { TOLLGATE_DATA_DIR: dir };
  // The keys go into the store the gateway's policy uses: `keys` refuses a store holding another policy's budgets.
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, policy('both'));
  const keys = (...args: string[]) => runKeysCommand([...args, '--policy', policyFile], env);
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const call = async (key: string, tool = 'complete') => {
    const client = await connectHttp(gw!.mcpUrl, key);
    try {
      const r = await client.callTool({ name: tool, arguments: tool === 'complete' ? { prompt: 'hi', max_tokens: 5 } : {} });
      await gw!.idle();
      return r as { isError?: boolean; structuredContent?: { budgets?: { id: string; scope: string; subject: string; used: number }[] }; _meta?: Record<string, unknown> };
    } finally {
      await client.close();
    }
  };

  it('issues a key for an application and its owner, and refuses --owner without --app', async () => {
    const issued = JSON.parse(await keys('issue', '--app', 'nightly-agent', '--owner', 'ada', '--teams', 'data', '--id', 'agent-1', '--json')) as Record<string, unknown>;
    expect(issued).toMatchObject({ id: 'agent-1', app: 'nightly-agent', user: 'ada', teams: ['data'] });
    expect(await keys('list')).toContain('agent-1\tapp=nightly-agent owner=ada\t');
    await expect(keys('issue', '--owner', 'ada')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(keys('issue', '--app', 'x')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  for (const [charge, lines] of [
    ['both', ['app-daily=nightly-both', 'user-weekly=ada', 'team-monthly=data']],
    ['application', ['app-daily=nightly-application']],
    ['owner', ['user-weekly=ada', 'team-monthly=data']],
  ] as const) {
    it(`charges ${charge === 'both' ? "the application's lines and its owner's" : charge === 'application' ? "only the application's lines" : "only its owner's lines"} (charge: ${charge}), and my_budget shows them`, async () => {
      // Each case its own application: the data directory's journal keeps every earlier call's count.
      const { key } = JSON.parse(await keys('issue', '--app', `nightly-${charge}`, '--owner', 'ada', '--teams', 'data', '--json')) as { key: string };
      gw = await startTestGateway(policy(charge), { env });
      expect((await call(key)).isError).toBeFalsy();
      const event = gw.events.at(-1)!;
      expect(event['user.app']).toBe(`nightly-${charge}`);
      expect(event['user.id']).toBe('ada');
      expect((event['tollgate.charged'] as { budget: string; subject: string; amount: number }[]).map((c) => `${c.budget}=${c.subject}`)).toEqual(lines);
      const mine = await call(key, 'my_budget');
      expect(mine.structuredContent!.budgets!.map((b) => `${b.id}=${b.subject}`)).toEqual(lines);
    });
  }

  it("holds an application to its own rate, apart from its owner's other keys", async () => {
    const { key } = JSON.parse(await keys('issue', '--app', 'loop-bot', '--owner', 'bo', '--json')) as { key: string };
    const { key: own } = JSON.parse(await keys('issue', '--user', 'bo', '--json')) as { key: string };
    gw = await startTestGateway(policy('both'), { env });
    expect((await call(key)).isError).toBeFalsy();
    expect((await call(key)).isError).toBeFalsy();
    const third = await call(key);
    expect(third.isError).toBe(true);
    expect(third._meta).toMatchObject({ 'io.tollgate/error': { code: 'RATE_LIMITED', details: { limitId: 'app-rpm', scope: 'application', subject: 'loop-bot' } } });
    expect((await call(own)).isError).toBeFalsy();
  });
});
