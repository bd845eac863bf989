/**
 * A call killed at its provider is charged at its reservation by the next start's recovery, and
 * the recovery's event states what it charged as a call's event does: the budgets under
 * tollgate.charged in their units, the rate limits apart under tollgate.limits_charged (in
 * requests, tokens, calls in flight), so a report summing budget charges does not count a limit's
 * line as tokens of a budget. A real `tollgate serve` on the embedded store, killed with SIGKILL.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { verifyJournalDir } from '../../src/admin/audit.js';
import { readSegment, segmentFiles } from '../../src/quota/fileJournal.js';
import { KEYS, basicPolicy } from '../fixtures/policies.js';
import { connectHttp } from '../helpers/gateway.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-recovery-limits-'));
const procs: GatewayProcess[] = [];
const clients: Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => {});
  for (const p of procs.splice(0)) await p.stop();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The demo provider holds each call a minute: the call is reserved and dispatched when the kill comes.
const POLICY = `${basicPolicy({
  userTokens: 10000,
  extraBudgets: `  - id: team-dollars
    scope: team
    window: { calendar: month, timezone: UTC }
    limit: { usd: 5 }`,
}).replace('demo: { kind: demo }', 'demo: { kind: demo, latencyMs: 60000 }')}
rateLimits:
  - { id: user-rpm, scope: user, requestsPerMinute: 100 }
  - { id: user-tpm, scope: user, tokensPerMinute: 100000 }
  - { id: user-in-flight, scope: user, concurrent: 5 }
`;

describe('recovery of a call killed at its provider, with rate limits', () => {
  it('lists the rate-limit lines under tollgate.limits_charged and the budgets under tollgate.charged, and the journal verifies', { timeout: 120_000 }, async () => {
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, POLICY);
    const dataDir = join(dir, 'data');
    const start = (n: number) => spawnGateway({ policyFile, eventsFile: join(dir, `events-${n}.jsonl`), env: { TOLLGATE_DATA_DIR: dataDir }, startTimeoutMs: 60_000 });
    const first = await start(1);
    procs.push(first);
    const c = await connectHttp(first.mcpUrl, KEYS.alice);
    clients.push(c);
    void c.callTool({ name: 'complete', arguments: { prompt: 'hello', max_tokens: 100 } }).catch(() => {});
    // Wait for the reservation, dispatched, in the journal (written before the call leaves).
    const reserved = async () => segmentFiles(dataDir).flatMap((f) => readSegment(f).entries).find((e) => e.body.kind === 'reserve' && e.body.dispatched);
    const deadline = Date.now() + 30_000;
    while (!(await reserved())) {
      if (Date.now() > deadline) throw new Error('no dispatched reservation in the journal after 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    await first.kill();
    procs.splice(procs.indexOf(first), 1);

    const second = await start(2);
    procs.push(second);
    const [event] = await second.eventsWhen(1);
    expect(event).toMatchObject({ outcome: 'success', 'tollgate.settled_by': 'recovery', 'user.id': 'alice' });
    const charged = event!['tollgate.charged'] as { budget: string; unit: string; amount: number }[];
    expect(charged.map((l) => [l.budget, l.unit]).sort()).toEqual([
      ['team-dollars', 'micro_usd'],
      ['user-weekly', 'tokens'],
    ]);
    const limits = event!['tollgate.limits_charged'] as { limit: string; subject: string; unit: string; amount: number }[];
    expect(limits.map((l) => [l.limit, l.subject, l.unit, l.amount]).sort()).toEqual([
      ['user-in-flight', 'alice', 'calls_in_flight', 0],
      ['user-rpm', 'alice', 'requests', 1],
      ['user-tpm', 'alice', 'tokens', charged.find((l) => l.budget === 'user-weekly')!.amount],
    ]);
    await second.stop();
    procs.splice(procs.indexOf(second), 1);
    expect(verifyJournalDir(dataDir)).toMatchObject({ ok: true, charges: 1 });
  });
});
