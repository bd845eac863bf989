import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultSources } from '../../src/policy/bindings.js';
import { parsePolicy, PolicyError, type PolicyIssue } from '../../src/policy/load.js';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-bind-'));
const secret = join(dir, 'openai-key');
writeFileSync(secret, 'sk-from-file\n');

const policyWith = (apiKey: string, extra = '') => `version: 1
${extra}providers:
  openai: { kind: openai, apiKey: "${apiKey}" }
egress: { allow: [api.openai.com] }
tiers:
  standard: [openai/gpt-5-mini]
models:
  openai/gpt-5-mini: { price: { inputPerMTok: 0.25, outputPerMTok: 2 } }
`;
const sources = (env: Record<string, string> = {}) => ({ env, readFile: defaultSources.readFile });

function issuesOf(text: string, env: Record<string, string> = {}): PolicyIssue[] {
  try {
    parsePolicy(text, 'p.yaml', { sources: sources(env) });
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return (err as PolicyError).issues;
  }
  throw new Error('policy unexpectedly valid');
}

const apiKeyOf = (text: string, env: Record<string, string> = {}) => {
  const p = parsePolicy(text, 'p.yaml', { sources: sources(env) }).config.providers.openai!;
  return p.kind === 'openai' ? p.apiKey : undefined;
};

describe('policy bindings', () => {
  it('reads a secret from a mounted file, without its trailing newline', () => {
    expect(apiKeyOf(policyWith(`\${file:${secret}}`))).toBe('sk-from-file');
  });

  it('names a file binding that cannot be read and where it is used', () => {
    expect(issuesOf(policyWith(`\${file:${join(dir, 'missing')}}`))).toEqual([
      { path: 'providers.openai.apiKey', line: 3, column: 35, message: `cannot read file binding ${join(dir, 'missing')}: ENOENT` },
    ]);
  });

  it('uses the fallback of an unset variable', () => {
    expect(apiKeyOf(policyWith('${env:OPENAI_KEY:-sk-fallback}'))).toBe('sk-fallback');
    expect(apiKeyOf(policyWith('${env:OPENAI_KEY:-sk-fallback}'), { OPENAI_KEY: 'sk-env' })).toBe('sk-env');
  });

  it('resolves a named binding declared under bindings', () => {
    expect(apiKeyOf(policyWith('${openaiKey}', 'bindings:\n  openaiKey: ${env:OPENAI_KEY}\n'), { OPENAI_KEY: 'sk-named' })).toBe('sk-named');
  });

  it('names an unset variable behind a named binding, at the binding', () => {
    expect(issuesOf(policyWith('${openaiKey}', 'bindings:\n  openaiKey: ${env:OPENAI_KEY}\n'))).toEqual([
      { path: 'bindings.openaiKey', line: 3, column: 14, message: 'environment variable OPENAI_KEY is not set' },
    ]);
  });

  it('names an unknown binding', () => {
    expect(issuesOf(policyWith('${openaiKye}'))).toEqual([{ path: 'providers.openai.apiKey', line: 3, column: 35, message: 'unknown binding ${openaiKye}' }]);
  });
});
