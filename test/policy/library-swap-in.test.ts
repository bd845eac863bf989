/**
 * Each library policy runs offline on the demo provider and says in its header how to swap in a
 * real provider: "replace providers, egress and tiers with these, and add the bindings". This
 * applies that swap-in as written and runs what `tollgate check` runs on the result (issue 18 item 5).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { checkPolicyText } from '../../src/policy/check.js';
import { standInSources } from '../helpers/standIns.js';

const LIBRARY = fileURLToPath(new URL('../../policy/library/', import.meta.url));
const policies = readdirSync(LIBRARY).filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml')).sort();
const INTRO = 'replace providers, egress and tiers with these, and add the bindings:';
/** The day the shipped models were last checked: a price checked before 2026-09-01 would warn, a model retiring before 2027-01-29 too. */
const NOW = Date.parse('2026-11-30T12:00:00Z');

/** The commented snippet after INTRO, uncommented: each line is `#   <yaml>`. */
function swapIn(text: string): Record<string, unknown> {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.includes(INTRO));
  if (start === -1) throw new Error(`no line saying "${INTRO}"`);
  const body: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith('#   ')) break;
    body.push(line.slice(4));
  }
  return parse(body.join('\n')) as Record<string, unknown>;
}

/** The policy with the swap-in applied as its header says. */
function applied(text: string): string {
  const policy = parse(text) as Record<string, unknown>;
  const snippet = swapIn(text);
  expect(Object.keys(snippet).sort()).toEqual(expect.arrayContaining(['providers', 'tiers']));
  for (const key of Object.keys(snippet)) expect(['bindings', 'providers', 'egress', 'tiers']).toContain(key);
  const bindings = { ...(policy.bindings as object | undefined), ...(snippet.bindings as object | undefined) };
  return stringify({ ...policy, ...snippet, ...(Object.keys(bindings).length ? { bindings } : {}) });
}

describe('the swap-in each library policy documents', () => {
  for (const name of policies) {
    it(`${name}: the policy with its swap-in applied passes check`, () => {
      const text = applied(readFileSync(join(LIBRARY, name), 'utf8'));
      const r = checkPolicyText(text, name, { sources: standInSources(text), now: NOW });
      expect(r.errors).toEqual([]);
      expect(Object.values(r.policy!.config.providers).map((p) => p.kind)).not.toContain('demo');
      // openai/gpt-5's shipped price comes from a secondary table dated 2026-06-20: check says so.
      const stale = name === 'team-tier-ladder.yaml' ? ['openai/gpt-5'] : [];
      // No swap-in routes to a model retired or retiring within 60 days (MODEL_RETIRED, MODEL_RETIRING).
      expect(r.warnings.map((w) => w.code)).toEqual(stale.map(() => 'PRICE_UNCHECKED'));
      expect(r.warnings.map((w) => /^the shipped price of (\S+) was last checked on 2026-06-20 \(163 days ago, .*source https:\/\/developers\.openai\.com\/api\/docs\/pricing\)/.exec(w.message)?.[1])).toEqual(stale);
    });
  }
});
