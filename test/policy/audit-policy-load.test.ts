/**
 * Policies an operator got wrong that used to load: a rate limit whose `when` reads a misspelt
 * field (`tollgate check` let it through, and at run time the limit then applied to everyone), and
 * two API keys with one id (a rate limit of scope `key` counts a key by its id, so they shared one).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { check } from '../../src/cli/policyCommands.js';
import { parsePolicy } from '../../src/policy/load.js';
import { DEMO_HEAD, policyRefusal } from '../fixtures/policies.js';

const HEAD = DEMO_HEAD;
const refusal = policyRefusal;

describe('tollgate check on a rate limit', () => {
  it("names a rate limit's misspelt principal field at its file:line:col and exits 1", () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-'));
    const file = join(dir, 'limits.yaml');
    writeFileSync(file, `${HEAD}rateLimits:\n  - id: bots\n    scope: user\n    when: "principal.team == 'bots'"\n    requestsPerMinute: 5\n`);
    const r = check(file, {}, {});
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `${file}:10:22: rateLimits[0].when: unknown field team on principal; known: user, teams, costCenter, groups, roles, authMethod, actors, app; did you mean teams?\n${file}: 1 error\n`,
    );
  });
});

describe('API keys', () => {
  it('refuses two API keys with the same id, which would share one rate limit line of scope key', () => {
    const text = `${HEAD}apiKeys:\n  - { id: ci, sha256: ${'a'.repeat(64)}, user: ci-bot }\n  - { id: ci, sha256: ${'b'.repeat(64)}, user: release-bot }\n`;
    expect(refusal(() => parsePolicy(text, 'p.yaml'))).toEqual([{ path: 'apiKeys[1].id', line: 9, column: 11, message: 'duplicate API key id "ci"' }]);
  });
});
