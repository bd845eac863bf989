/**
 * egress.allow patterns read as docs/providers.md says: a host, optionally with a port, and `*`
 * for exactly one DNS label. An IPv6 address is a host like any other, written in brackets as in a
 * URL, with or without a port.
 */
import { describe, expect, it } from 'vitest';
import { isEgressAllowed } from '../../src/providers/egress.js';
import { parsePolicy } from '../../src/policy/load.js';

describe('egress patterns naming an IPv6 address', () => {
  it('allows the address on any port when the pattern names no port', () => {
    expect(isEgressAllowed('http://[::1]:11434/v1', ['[::1]'])).toBe(true);
    expect(isEgressAllowed('https://[fd00::7]/v1', ['[fd00::7]'])).toBe(true);
  });

  it('allows only the named port when the pattern names one', () => {
    expect(isEgressAllowed('http://[::1]:11434/v1', ['[::1]:11434'])).toBe(true);
    expect(isEgressAllowed('http://[::1]:11435/v1', ['[::1]:11434'])).toBe(false);
  });

  it('matches the address however either side writes it', () => {
    expect(isEgressAllowed('http://[0:0:0:0:0:0:0:1]:11434/v1', ['[::1]'])).toBe(true);
    expect(isEgressAllowed('http://[::1]:11434/v1', ['[0:0::1]'])).toBe(true);
    expect(isEgressAllowed('http://[::ffff:127.0.0.1]/v1', ['[::ffff:7f00:1]'])).toBe(true);
  });

  it('does not let an IPv6 pattern allow another address or an IPv4 one', () => {
    expect(isEgressAllowed('http://[::2]/v1', ['[::1]'])).toBe(false);
    expect(isEgressAllowed('http://127.0.0.1/v1', ['[::1]'])).toBe(false);
    expect(isEgressAllowed('http://[::ffff:127.0.0.1]/v1', ['127.0.0.1'])).toBe(false);
  });

  it('loads a policy whose local provider listens on [::1]', () => {
    const policy = parsePolicy(
      `version: 1
providers:
  local: { kind: openai, apiKey: unused, baseUrl: "http://[::1]:11434/v1" }
egress: { allow: ["[::1]"] }
models:
  local/llama: { price: { inputPerMTok: 0, outputPerMTok: 0 } }
tiers:
  standard: [local/llama]
`,
      'p.yaml',
    );
    expect(policy.config.egress.allow).toEqual(['[::1]']);
  });
});

describe('egress wildcards', () => {
  it('does not let * stand for the empty label after a trailing dot', () => {
    expect(isEgressAllowed('http://llm./v1', ['llm.*'])).toBe(false);
    expect(isEgressAllowed('http://llm.internal/v1', ['llm.*'])).toBe(true);
  });

  it('does not let * stand for an IPv6 address', () => {
    expect(isEgressAllowed('http://[::1]:11434/v1', ['*'])).toBe(false);
    expect(isEgressAllowed('http://localhost:11434/v1', ['*'])).toBe(true);
  });
});
