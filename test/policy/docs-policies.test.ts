/**
 * Every YAML block in README.md and docs/ that is a whole policy passes what `tollgate check` runs
 * (issue 18 item 5). A block is a whole policy when it has the keys every policy must have
 * (version, providers, tiers); any other block must say what it is on the line before its fence:
 * `<!-- policy-fragment -->` (a part of a policy) or `<!-- not-a-policy -->` (a test file, tollgate.yaml).
 * A fragment made of top-level policy sections is checked too, set into a small offline policy.
 * Bindings get stand-in values: a doc cannot hold the reader's secrets.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { checkPolicyText } from '../../src/policy/check.js';
import { standInSources } from '../helpers/standIns.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const POLICY_KEYS = ['version', 'providers', 'tiers'];
/** The day the shipped models were last checked: the docs use no price checked 90 days before it, and no model retiring within 60 days of it. */
const NOW = Date.parse('2026-11-30T12:00:00Z');
const MARKERS = ['<!-- policy-fragment -->', '<!-- not-a-policy -->'] as const;

interface Block {
  file: string;
  line: number;
  text: string;
  marker?: (typeof MARKERS)[number];
}

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? markdownFiles(join(dir, e.name)) : e.name.endsWith('.md') ? [join(dir, e.name)] : [],
  );
}

/** The ```yaml blocks of a Markdown file, indented ones (inside list items) included, with the marker before each. */
function yamlBlocks(path: string): Block[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```yaml\b/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    let end = i + 1;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end]!)) end++;
    let before = i - 1;
    while (before >= 0 && lines[before]!.trim() === '') before--;
    const marker = MARKERS.find((m) => lines[before]?.trim() === m);
    blocks.push({ file: relative(ROOT, path), line: i + 1, text: lines.slice(i + 1, end).map((l) => l.slice(indent)).join('\n'), marker });
    i = end;
  }
  return blocks;
}

function mapping(text: string): Record<string, unknown> | undefined {
  const doc: unknown = parse(text);
  return doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>) : undefined;
}

function isWholePolicy(text: string): boolean {
  const doc = mapping(text);
  return doc !== undefined && POLICY_KEYS.every((k) => Object.hasOwn(doc, k));
}

/** The sections a policy may have at its top level, from policy/policy.schema.json. */
const SECTIONS = Object.keys(JSON.parse(readFileSync(join(ROOT, 'policy/policy.schema.json'), 'utf8')).properties as object);

/** The small offline policy a fragment of top-level sections is set into: the fragment's sections replace its own, its providers join the demo. */
const BASE = {
  version: 1,
  providers: { demo: { kind: 'demo' } },
  tiers: { premium: ['demo/large'], standard: ['demo/medium'], economy: ['demo/small'] },
  budgets: [{ id: 'team-monthly', scope: 'team', window: { calendar: 'month', timezone: 'UTC' }, limit: { usd: 500 } }],
};

const blocks = [join(ROOT, 'README.md'), ...markdownFiles(join(ROOT, 'docs'))].flatMap(yamlBlocks);
const policies = blocks.filter((b) => !b.marker && isWholePolicy(b.text));
const sectionFragments = blocks.filter((b) => {
  const doc = b.marker === '<!-- policy-fragment -->' ? mapping(b.text) : undefined;
  return doc !== undefined && Object.keys(doc).every((k) => SECTIONS.includes(k));
});

describe('YAML blocks in README.md and docs/', () => {
  it(`are each a whole policy or marked as a fragment or not a policy (${blocks.length} blocks: ${policies.length} policies, ${sectionFragments.length} fragments of sections)`, () => {
    const unmarked = blocks.filter((b) => !b.marker && !isWholePolicy(b.text)).map((b) => `${b.file}:${b.line}`);
    expect(unmarked, 'mark these <!-- policy-fragment --> or <!-- not-a-policy --> on the line before the fence, or make them whole policies').toEqual([]);
    expect(policies.length).toBeGreaterThan(0);
  });

  it('marked blocks are still valid YAML', () => {
    for (const b of blocks.filter((x) => x.marker)) expect(() => parse(b.text), `${b.file}:${b.line}`).not.toThrow();
  });

  for (const b of sectionFragments) {
    it(`${b.file}:${b.line} (a fragment) passes check inside a small offline policy`, () => {
      const fragment = mapping(b.text)!;
      const text = stringify({ ...BASE, ...fragment, providers: { ...BASE.providers, ...(fragment.providers as object | undefined) } });
      const r = checkPolicyText(text, `${b.file}:${b.line}`, { sources: standInSources(b.text) });
      expect(r.errors).toEqual([]);
    });
  }

  for (const b of policies) {
    it(`${b.file}:${b.line} passes check with no warning`, () => {
      const r = checkPolicyText(b.text, `${b.file}:${b.line}`, { sources: standInSources(b.text), now: NOW });
      expect(r.errors).toEqual([]);
      expect(r.warnings).toEqual([]);
    });
  }
});
