/**
 * Binding sources for a policy from the docs or the library, which cannot hold the reader's
 * secrets: each `${env:NAME}` without a default gets a stand-in value, every `${file:...}` reads as
 * a stand-in secret, and `${env:NAME:-default}` keeps its default.
 */
import type { BindingSources } from '../../src/policy/bindings.js';

export function standInSources(text: string): BindingSources {
  const env: Record<string, string> = {};
  for (const m of text.matchAll(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g)) env[m[1]!] = `stand-in-${m[1]!.toLowerCase()}`;
  return { env, readFile: () => 'stand-in-secret' };
}
