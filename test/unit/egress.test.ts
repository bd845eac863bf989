import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { guardedFetch, isEgressAllowed } from '../../src/providers/egress.js';
import { parsePolicy, PolicyError } from '../../src/policy/load.js';

const ALLOW = ['api.anthropic.com', 'bedrock-runtime.*.amazonaws.com', 'llm.internal:8443', '127.0.0.1'];

describe('egress allowlist', () => {
  it('allows listed hosts on any port unless the pattern names one', () => {
    expect(isEgressAllowed('https://api.anthropic.com/v1/messages', ALLOW)).toBe(true);
    expect(isEgressAllowed('http://127.0.0.1:41234/v1', ALLOW)).toBe(true);
    expect(isEgressAllowed('https://llm.internal:8443/v1', ALLOW)).toBe(true);
    expect(isEgressAllowed('https://llm.internal/v1', ALLOW)).toBe(false);
  });

  it('lets * stand for exactly one DNS label', () => {
    expect(isEgressAllowed('https://bedrock-runtime.eu-west-1.amazonaws.com', ALLOW)).toBe(true);
    expect(isEgressAllowed('https://bedrock-runtime.evil.example.amazonaws.com', ALLOW)).toBe(false);
    expect(isEgressAllowed('https://bedrock-runtime.amazonaws.com', ALLOW)).toBe(false);
  });

  it('does not match look-alike hosts', () => {
    expect(isEgressAllowed('https://api.anthropic.com.evil.example', ALLOW)).toBe(false);
    expect(isEgressAllowed('https://evilapi.anthropic.com', ALLOW)).toBe(false);
    expect(isEgressAllowed('https://API.ANTHROPIC.COM', ALLOW)).toBe(true);
  });

  it('refuses a request to an unlisted host before any byte leaves', async () => {
    let called = 0;
    const f = guardedFetch('anthropic', ALLOW, (async () => {
      called++;
      return new Response('{}');
    }) as typeof fetch);
    await expect(f('https://api.openai.com/v1/chat/completions')).rejects.toMatchObject({ code: 'EGRESS_DENIED' });
    expect(called).toBe(0);
    await f('https://api.anthropic.com/v1/messages');
    expect(called).toBe(1);
  });
});

describe('egress at policy load', () => {
  const policy = (egress: string, baseUrl = '') => `version: 1
providers:
  claude: { kind: anthropic, apiKey: sk-test${baseUrl ? `, baseUrl: "${baseUrl}"` : ''} }
egress: ${egress}
models:
  claude/claude-sonnet-4-5: { price: { inputPerMTok: 3, outputPerMTok: 15 } }
tiers:
  standard: [claude/claude-sonnet-4-5]
`;

  it('fails start-up when a provider endpoint is not allowed, naming the host and the fix', () => {
    let err: unknown;
    try {
      parsePolicy(policy('{ allow: [api.openai.com] }'), 'p.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    const issues = (err as PolicyError).issues;
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe('providers.claude');
    expect(issues[0]!.message).toBe('api.anthropic.com is not on egress.allow; add it there to let claude traffic leave');
    expect((err as GatewayError).code).toBe('POLICY_INVALID');
  });

  it('checks a custom baseUrl, pointing at its line', () => {
    try {
      parsePolicy(policy('{ allow: [api.anthropic.com] }', 'https://proxy.example.net'), 'p.yaml');
      throw new Error('expected a policy error');
    } catch (e) {
      const issue = (e as PolicyError).issues[0]!;
      expect(issue.path).toBe('providers.claude.baseUrl');
      expect(issue.line).toBe(3);
    }
  });

  it('loads when every endpoint is allowed', () => {
    expect(parsePolicy(policy('{ allow: [api.anthropic.com] }'), 'p.yaml').models.size).toBe(1);
  });
});
