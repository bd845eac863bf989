/**
 * The shipped DLP policy (policy/library/dlp-credentials.yaml) and the default policy's credential
 * rule against disguised credentials. fast-check makes random AWS-style access key ids (AKIA/ASIA
 * and 16 base32 characters, as AWS issues them) and hides each in random prose with one disguise:
 * zero-width, joiner, soft-hyphen and other invisible characters at random places, fullwidth
 * letters, case changes, spacing (letter by letter or in groups, various separators), a cut across
 * two messages or between the system prompt and a message, base64 and base64url, hex (plain,
 * `0x`, `\xNN`, spaced bytes), some or all characters escaped (URL `%NN`, `\uNNNN`, `\xNN`, HTML
 * `&#NN;` / `&#xNN;`), hard-wrapped across a line break (the key itself, or base64 of a credentials
 * file wrapped at 76 columns), sometimes with invisible characters sprinkled over the disguise too,
 * and PEM private key headers with other dash counts and dash characters. Every one must be refused with POLICY_DENIED, through `simulate` (what policy tests
 * and `tollgate explain` run) and through the real pipeline.
 *
 * The other way round: prose that mentions AKIA/ASIA in passing, with dates, numbers, capitals and
 * identifiers, and random benign base64/hex (random bytes, encoded prose, hashes, UUIDs, wrapped blocks) and escaped
 * text (URLs, HTML character references, JSON escapes) must be
 * allowed. Measured false positives on these generators: none in 3,000 prompts (see the last test).
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCompleteArgs } from '../../src/call/request.js';
import { GatewayError } from '../../src/errors.js';
import type { Principal } from '../../src/identity/principal.js';
import { buildRuntime, settingsFromEnv, type Runtime } from '../../src/main.js';
import { memorySink } from '../../src/metering/sink.js';
import { parsePolicy, type Policy } from '../../src/policy/load.js';
import { simulate } from '../../src/policy/simulate.js';
import { MemoryQuotaStore } from '../../src/quota/memory.js';

const NOW = Date.parse('2026-11-25T10:00:00Z');
const noEnv = { env: {}, readFile: () => { throw Object.assign(new Error('no file bindings here'), { code: 'ENOENT' }); } };
const dlp = parsePolicy(readFileSync(new URL('../../policy/library/dlp-credentials.yaml', import.meta.url), 'utf8'), 'dlp-credentials.yaml', { sources: noEnv });
const defaults = parsePolicy(readFileSync(new URL('../../policy/default.yaml', import.meta.url), 'utf8'), 'default.yaml', { sources: noEnv });
const principal: Principal = { user: 'alice', teams: ['platform'], groups: ['employees'], roles: [], authMethod: 'api_key' };

interface Prompt {
  system?: string;
  messages: string[];
}

function decideOn(policy: Policy, p: Prompt) {
  return simulate({
    policy,
    principal,
    request: { messages: p.messages.map((content) => ({ role: 'user' as const, content })), system: p.system, maxTokens: 256 },
    usage: {},
    now: NOW,
  }).decision;
}

// ---------------------------------------------------------------------------------------------
// Generators

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const awsKey = fc
  .tuple(fc.constantFrom('AKIA', 'ASIA'), fc.array(fc.constantFrom(...BASE32), { minLength: 16, maxLength: 16 }))
  .map(([prefix, rest]) => prefix + rest.join(''))
  .filter((k) => k !== 'AKIAIOSFODNN7EXAMPLE');

const WORDS = ['the', 'deploy', 'script', 'uses', 'this', 'key', 'for', 'our', 'bucket', 'please', 'check', 'why', 'it', 'fails', 'with', 'access', 'denied', 'on', 'staging', 'and', 'prod', 'thanks', 'a', 'in', 'to', 'of'];
const words = (min: number, max: number) => fc.array(fc.constantFrom(...WORDS), { minLength: min, maxLength: max }).map((w) => w.join(' '));

const INVISIBLE = ['\u200B', '\u200C', '\u200D', '\u2060', '\uFEFF', '\u00AD', '\u034F', '\uFE0F', '\u200E', '\u2062', '\u{E0020}'];
const insertInvisible = (s: string) =>
  fc.array(fc.tuple(fc.nat(s.length), fc.constantFrom(...INVISIBLE)), { minLength: 1, maxLength: 4 }).map((ins) => {
    const chars = [...s];
    for (const [at, ch] of ins.sort((a, b) => b[0] - a[0])) chars.splice(at, 0, ch);
    return chars.join('');
  });
const fullwidth = (s: string, which: boolean[]) => [...s].map((c, i) => (which[i % which.length] ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c)).join('');
const groups = (s: string, size: number) => s.match(new RegExp(`.{1,${size}}`, 'g'))!;

const ESCAPE = {
  url: (c: number) => `%${c.toString(16).toUpperCase().padStart(2, '0')}`,
  urlLower: (c: number) => `%${c.toString(16).padStart(2, '0')}`,
  jsonU: (c: number) => `\\u${c.toString(16).padStart(4, '0')}`,
  jsX: (c: number) => `\\x${c.toString(16).padStart(2, '0')}`,
  htmlDec: (c: number) => `&#${c};`,
  htmlHex: (c: number) => `&#x${c.toString(16)};`,
} as const;
const ESCAPES = Object.keys(ESCAPE) as (keyof typeof ESCAPE)[];

/** One disguise of `key`, as the text that stands for it and, for a cut, the two pieces. */
type Disguised = { kind: string; text: string } | { kind: string; cut: [string, string]; system?: boolean };

const disguise = (key: string): fc.Arbitrary<Disguised> =>
  fc.oneof(
    insertInvisible(key).map((text) => ({ kind: 'invisible', text })),
    fc.array(fc.boolean(), { minLength: 1, maxLength: 5 }).map((w) => ({ kind: 'fullwidth', text: fullwidth(key, w.some(Boolean) ? w : [true]) })),
    fc.constantFrom('lower', 'mixed').map((how) => ({ kind: `case-${how}`, text: how === 'lower' ? key.toLowerCase() : [...key].map((c, i) => (i % 2 ? c.toLowerCase() : c)).join('') })),
    fc
      .tuple(fc.integer({ min: 1, max: 6 }), fc.constantFrom(' ', '  ', '\t', '\n', ' - ', '-', '.', ', ', ' | ', '\u00A0', '\u3000'))
      .map(([size, sep]) => ({ kind: `spaced-${size}`, text: groups(key, size).join(sep) })),
    fc.tuple(fc.integer({ min: 1, max: key.length - 1 }), fc.boolean()).map(([at, system]) => ({ kind: system ? 'cut-system' : 'cut-messages', cut: [key.slice(0, at), key.slice(at)] as [string, string], system })),
    fc.tuple(fc.constantFrom('base64', 'base64url'), words(0, 3)).map(([enc, around]) => ({ kind: enc, text: Buffer.from(around ? `${around} ${key}` : key).toString(enc as BufferEncoding) })),
    fc.constantFrom('hex', 'HEX', '0x', '\\x', 'bytes').map((how) => {
      const hex = Buffer.from(key).toString('hex');
      const text = how === 'hex' ? hex : how === 'HEX' ? hex.toUpperCase() : how === '0x' ? `0x${hex}` : how === '\\x' ? groups(hex, 2).map((b) => `\\x${b}`).join('') : groups(hex, 2).join(' ');
      return { kind: `hex-${how}`, text };
    }),
    // Some or all characters escaped, one escape style or several: URL %NN, JSON/JS \uNNNN and
    // \xNN, HTML &#NN; and &#xNN;.
    fc.tuple(fc.array(fc.boolean(), { minLength: 1, maxLength: 7 }), fc.array(fc.constantFrom(...ESCAPES), { minLength: 1, maxLength: 3 })).map(([which, styles]) => {
      const mask = which.some(Boolean) ? which : [true];
      const text = [...key].map((c, i) => (mask[i % mask.length] ? ESCAPE[styles[i % styles.length]!](c.charCodeAt(0)) : c)).join('');
      return { kind: `escaped-${[...new Set(styles)].join('+')}`, text };
    }),
    // Hard-wrapped: a line break inside the key (a terminal or mail client wrapping a long line),
    // or base64 of a credentials file wrapped at 76 columns with the key across a line break.
    fc.integer({ min: 1, max: key.length - 1 }).map((at) => ({ kind: 'wrapped', text: `${key.slice(0, at)}\n${key.slice(at)}` })),
    fc.tuple(fc.string({ unit: fc.constantFrom(...'abcdefghij[]-_ '), maxLength: 40 }), fc.constantFrom('\n', '\r\n')).map(([pad, eol]) => ({
      kind: 'base64-wrapped',
      text: Buffer.from(`${pad}\naws_access_key_id = ${key}\n`).toString('base64').replace(/(.{76})/g, `$1${eol}`),
    })),
  );

/** A prompt carrying `d` between random prose. */
const promptWith = (d: Disguised): fc.Arbitrary<Prompt> =>
  fc.tuple(words(0, 6), words(0, 6)).map(([before, after]) => {
    if ('cut' in d) {
      const first = `${before} ${d.cut[0]}`.trimStart();
      const second = `${d.cut[1]} ${after}`.trimEnd();
      return d.system ? { system: first, messages: [second] } : { messages: [first, second] };
    }
    return { messages: [`${before} ${d.text} ${after}`.trim()] };
  });

/** A disguise, sometimes with invisible characters sprinkled over it as well (fullwidth + zero-width, spaced + soft hyphen, ...). */
const layered = (key: string): fc.Arbitrary<Disguised> =>
  fc.tuple(disguise(key), fc.boolean()).chain(([d, more]) =>
    more && 'text' in d ? insertInvisible(d.text).map((text) => ({ kind: `${d.kind}+invisible`, text })) : fc.constant(d),
  );

const disguisedKey = awsKey.chain((key) => layered(key).chain((d) => promptWith(d).map((prompt) => ({ key, d, prompt }))));

const DASHES = ['-', '\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2212', '\uFE63', '\uFF0D'];
const pemPrompt = fc
  .tuple(
    fc.constantFrom('RSA ', 'EC ', 'DSA ', 'OPENSSH ', 'ENCRYPTED ', ''),
    fc.integer({ min: 0, max: 8 }),
    fc.constantFrom(...DASHES),
    fc.uint8Array({ minLength: 24, maxLength: 120 }),
    words(0, 5),
    fc.boolean(),
  )
  .map(([kind, count, dash, body, before, end]) => {
    const d = dash.repeat(count);
    const b64 = Buffer.from(body).toString('base64');
    const block = `${d}BEGIN ${kind}PRIVATE KEY${d}\n${b64}${end ? `\n${d}END ${kind}PRIVATE KEY${d}` : ''}`;
    return { messages: [`${before}\n${block}`.trim()] } as Prompt;
  });

// Benign text: prose with AKIA/ASIA mentioned in passing, numbers, dates, capitals, identifiers.
const CASUAL = ['AKIA', 'ASIA', 'AKIA-prefixed', '"AKIA"', 'AKIA…', 'ASIA/AKIA', 'IAM', 'AWS', 'S3', 'Aida', 'Asia', 'Akia'];
const token = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...WORDS) },
  { weight: 2, arbitrary: fc.constantFrom(...CASUAL) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 99999 }).map(String) },
  { weight: 1, arbitrary: fc.date({ min: new Date('2000-01-01'), max: new Date('2030-01-01'), noInvalidDate: true }).map((d) => d.toISOString().slice(0, 16).replace('T', ' at ')) },
  { weight: 1, arbitrary: fc.constantFrom('The', 'Please', 'Our', 'Keys', 'Access', 'Key', 'IDs', 'Region', 'EU-WEST-1', 'README.md', 'v2.3.1', 'HTTP/1.1', 'ID', 'API') },
  { weight: 1, arbitrary: fc.constantFrom('camelCaseIdentifierName', 'snake_case_identifier', 'kebab-case-identifier', 'SCREAMING_CASE_CONSTANT', 'internationalization', '/usr/local/lib/node_modules') },
);
const casualProse = fc.array(token, { minLength: 3, maxLength: 40 }).map((t) => t.join(' '));
const benignEncoded = fc.oneof(
  fc.uint8Array({ minLength: 8, maxLength: 300 }).map((b) => Buffer.from(b).toString('base64')),
  fc.uint8Array({ minLength: 8, maxLength: 300 }).map((b) => Buffer.from(b).toString('base64url')),
  fc.uint8Array({ minLength: 16, maxLength: 64 }).map((b) => Buffer.from(b).toString('hex')),
  casualProse.map((s) => Buffer.from(s).toString('base64')),
  casualProse.map((s) => Buffer.from(s).toString('hex')),
  fc.uuid(),
  // Wrapped blocks: base64 at 76 columns, hashes one a line.
  fc.uint8Array({ minLength: 60, maxLength: 600 }).map((b) => Buffer.from(b).toString('base64').replace(/(.{76})/g, '$1\n')),
  fc.array(fc.uint8Array({ minLength: 16, maxLength: 32 }), { minLength: 2, maxLength: 6 }).map((hs) => hs.map((h) => Buffer.from(h).toString('hex')).join('\n')),
  // Escaped text of ordinary prompts: URLs with %NN, HTML character references, JSON escapes.
  casualProse.map((s) => `https://example.com/search?q=${encodeURIComponent(s)}&page=2`),
  casualProse.map((s) => s.replace(/[ '"/]/g, (c) => `&#${c.charCodeAt(0)};`)),
  casualProse.map((s) => JSON.stringify(s).replace(/\//g, '\\/').replace(/[aeiou]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)),
);
const benignPrompt = fc
  .tuple(casualProse, fc.array(benignEncoded, { maxLength: 3 }), casualProse)
  .map(([a, enc, b]) => ({ messages: [`${a} ${enc.join(' ')} ${b}`.trim()] }) as Prompt);

// ---------------------------------------------------------------------------------------------

describe('the shipped DLP policy against disguised credentials (simulate)', () => {
  it('refuses every disguised AWS access key id with dlp-aws-access-key', () => {
    fc.assert(
      fc.property(disguisedKey, ({ prompt }) => {
        const d = decideOn(dlp, prompt);
        expect(d).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'dlp-aws-access-key' });
      }),
      { numRuns: 600 },
    );
  });

  // Found by the property above (seed 1281158357): a key whose hex bytes are all digits, followed
  // by a two-letter word, was read as prose and allowed.
  it('refuses hex bytes made only of digits with a short word before or after them', () => {
    const bytes = [...'ASIA3Y6V42F3HAG4TP6B'].map((c) => c.charCodeAt(0).toString(16)).join(' ');
    expect(bytes).toMatch(/^[0-9 ]+$/);
    for (const text of [`${bytes} of`, `${bytes} a`, `to ${bytes}`, `see ${bytes} of it`, `${bytes}`]) {
      expect(decideOn(dlp, { messages: [text] } as Prompt), text).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'dlp-aws-access-key' });
    }
  });

  it('refuses a PEM private key header with any dash count and dash character', () => {
    fc.assert(
      fc.property(pemPrompt, (prompt) => {
        expect(decideOn(dlp, prompt)).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'dlp-private-key' });
      }),
      { numRuns: 300 },
    );
  });

  it('the default policy refuses the same disguises (no-credentials-in-prompts)', () => {
    fc.assert(
      fc.property(fc.oneof(disguisedKey.map((x) => x.prompt), pemPrompt), (prompt) => {
        expect(decideOn(defaults, prompt)).toMatchObject({ effect: 'deny', code: 'POLICY_DENIED', ruleId: 'no-credentials-in-prompts' });
      }),
      { numRuns: 300 },
    );
  });

  it('allows prose that mentions AKIA in passing and benign base64/hex', () => {
    fc.assert(
      fc.property(benignPrompt, (prompt) => {
        expect(decideOn(dlp, prompt).effect).toBe('allow');
        expect(decideOn(defaults, prompt).ruleId).not.toBe('no-credentials-in-prompts');
      }),
      { numRuns: 600 },
    );
  });

  it('measures false positives: none in 3,000 benign prompts', () => {
    const sample = fc.sample(benignPrompt, { numRuns: 3000, seed: 17 });
    const refused = sample.filter((p) => decideOn(dlp, p).effect === 'deny');
    expect(refused.map((p) => p.messages[0])).toEqual([]);
  });
});

describe('the shipped DLP policy against disguised credentials (real pipeline)', () => {
  let runtime: Runtime;
  beforeAll(async () => {
    runtime = await buildRuntime(settingsFromEnv({ TOLLGATE_LOG_LEVEL: 'silent' }), { policy: dlp, store: new MemoryQuotaStore(() => NOW), sink: memorySink(), now: () => NOW });
  });
  afterAll(async () => {
    await runtime?.close();
  });

  const call = async (p: Prompt): Promise<string> => {
    const request = parseCompleteArgs({ messages: p.messages.map((content) => ({ role: 'user', content })), system: p.system, max_tokens: 64 }, runtime.gateway.policy.config.limits);
    try {
      await runtime.gateway.complete({ principal, transport: 'cli', request });
      return 'allowed';
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      return `${err.code} ${String(err.details.ruleId)}`;
    }
  };

  it('answers POLICY_DENIED for every disguise before anything reaches the provider', async () => {
    await fc.assert(
      fc.asyncProperty(disguisedKey, async ({ prompt }) => {
        expect(await call(prompt)).toBe('POLICY_DENIED dlp-aws-access-key');
      }),
      { numRuns: 60 },
    );
  });

  it('serves benign prompts', async () => {
    await fc.assert(
      fc.asyncProperty(benignPrompt, async (prompt) => {
        expect(await call(prompt)).toBe('allowed');
      }),
      { numRuns: 40 },
    );
  });
});
