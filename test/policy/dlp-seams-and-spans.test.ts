/**
 * Disguises that combine: found by a probe session, each passed the content rule and reached the
 * provider (and, with logPrompts, the events file unredacted).
 * - A value spaced out in groups and cut across two messages (or parts, or the system prompt and a
 *   message): each side alone has too few groups to glue, so neither message's compact view glued
 *   it, and a seam only joined the two compact views.
 * - An encoded run whose decoded text is itself disguised (spaced, lowercased, hard-wrapped): the
 *   decoded spans were scanned as they are, without the compact view or the uppercase pass that
 *   plain text gets.
 * - The other way round, a camelCase or PascalCase identifier of words starting with an AWS prefix
 *   ("asiaPacificCountries") was uppercased and refused as a key.
 * The property at the end cuts random spaced-out keys at every place across two messages.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PromptContent } from '../../src/policy/content.js';

const KEY = 'AKIAZ3MBRXQ7TLWUVY2P';
const secrets = (...parts: string[]) => new PromptContent(parts).secrets;
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('a spaced-out value cut across two messages', () => {
  it.each([
    ['groups of four, two and three', ['my key: AKIA Z3MB ', 'RXQ7 TLWU VY2P thanks']],
    ['dashes', ['AKIA-Z3MB-', 'RXQ7-TLWU-VY2P']],
    ['three and two', ['AKIA Z3MB RXQ7 ', 'TLWU VY2P']],
    ['letter by letter, cut early', ['A K I ', 'A Z 3 M B R X Q 7 T L W U V Y 2 P']],
    ['letter by letter, cut late', ['key: A K I A Z 3 M B R X Q 7 T L W U V Y ', '2 P']],
    ['spaced hex bytes', ['41 4b ', '49 41 5a 33 4d 42 52 58 51 37 54 4c 57 55 56 59 32 50']],
  ])('is found: %s', (_what, parts) => {
    expect(secrets(...parts)).toEqual(['aws']);
  });

  // Found by a re-probe: the window read without the break removed only the one at the seam.
  it.each([
    ['cut inside groups at two seams', ['AKIA Z3', 'MB RX', 'Q7 TLWU VY2P']],
    ['cut inside a group with an empty message between', ['AKIA Z3', '', 'MB RXQ7 TLWU VY2P']],
    ['dashes, three parts', ['AKIA-Z3', 'MB-RX', 'Q7-TLWU-VY2P']],
  ])('is found: %s', (_what, parts) => {
    expect(secrets(...parts)).toEqual(['aws']);
  });

  it('is found one part on each side of many short messages', () => {
    expect(secrets('hello', 'AKIA Z3MB', 'RXQ7 TLWU VY2P', 'bye')).toEqual(['aws']);
  });
});

describe('an encoded run whose decoded text is disguised', () => {
  it.each([
    ['a JSON \\u000a line break inside the key', `{"key": "${KEY.slice(0, 10)}\\u000a${KEY.slice(10)}"}`],
    ['a URL %0A inside the key', `key=${KEY.slice(0, 10)}%0A${KEY.slice(10)}`],
    ['base64 of the key hard-wrapped', b64(`key ${KEY.slice(0, 10)}\n${KEY.slice(10)}`)],
    ['base64 of the key spaced out', b64('key AKIA Z3MB RXQ7 TLWU VY2P')],
    ['base64 of the key lowercased', b64(`key ${KEY.toLowerCase()}`)],
    ['URL-encoded spaces between groups', 'GET /x?k=AKIA%20Z3MB%20RXQ7%20TLWU%20VY2P'],
    ['URL-encoded, lowercased', 'GET /x?k=%61kiaz3mbrxq7tlwuvy2p'],
    ['hex of the key lowercased', Buffer.from(KEY.toLowerCase()).toString('hex')],
  ])('is found: %s', (_what, text) => {
    expect(secrets(text)).toEqual(['aws']);
  });
});

describe('decoded prose that only looks like a key once glued and uppercased', () => {
  // Found by the benign-prompt property of dlp-disguises.test.ts in a CI run.
  it('is not a secret: a key id holds none of 0, 1, 8, 9', () => {
    expect(secrets('the the the "Ak\\u0069\\u0061 10000 10000 scr\\u0069pt" the AKIA the')).toEqual([]);
  });
});

describe('identifiers that only look like a key once uppercased', () => {
  it.each([
    'Write a SQL view named asiaPacificCountries that lists our APAC markets.',
    'const asiaPacificCustomers = customers.filter((c) => c.region === "APAC");',
    'class AsiaPacificCountryList extends Base {}',
    'the aidaMarketingCampaigns table',
  ])('is not a secret: %s', (text) => {
    expect(secrets(text)).toEqual([]);
  });

  it('is not a secret cut across two messages either', () => {
    expect(secrets('const asiaPacific', 'Customers = 1')).toEqual([]);
  });

  // Found by a re-probe: a key written as an identifier of words passed once the rule above came
  // in; a word of the rule must read as one (a vowel), which a key's letters rarely give every piece.
  it('a key written as camelCase with a piece that is no word is still found', () => {
    expect(secrets('my key akiaQwerTyuiOpasDfgh ok')).toEqual(['aws']);
    expect(secrets('temp creds AsiaBcdeFghjKlmnPqrs')).toEqual(['aws']);
  });

  it('a lowercased or case-alternated key is still found', () => {
    expect(secrets(`key ${KEY.toLowerCase()}`)).toEqual(['aws']);
    expect(secrets(`key ${[...KEY].map((c, i) => (i % 2 ? c.toLowerCase() : c)).join('')}`)).toEqual(['aws']);
  });
});

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const awsKey = fc
  .tuple(fc.constantFrom('AKIA', 'ASIA'), fc.array(fc.constantFrom(...BASE32), { minLength: 16, maxLength: 16 }))
  .map(([prefix, rest]) => prefix + rest.join(''))
  .filter((k) => k !== 'AKIAIOSFODNN7EXAMPLE');

describe('every spaced-out key cut at two places across three messages', () => {
  it('is found', () => {
    fc.assert(
      fc.property(awsKey, fc.integer({ min: 1, max: 6 }), fc.constantFrom(' ', '-', ' - ', '.', ', '), fc.nat(), fc.nat(), fc.boolean(), (key, size, sep, c1, c2, empty) => {
        const spaced = key.match(new RegExp(`.{1,${size}}`, 'g'))!.join(sep);
        const [a, b] = [1 + (c1 % (spaced.length - 2)), 1 + (c2 % (spaced.length - 2))].sort((x, y) => x - y);
        const at = [a!, a === b ? b! + 1 : b!];
        const parts = [`the key is ${spaced.slice(0, at[0])}`, spaced.slice(at[0], at[1]), `${spaced.slice(at[1])} thanks`];
        if (empty) parts.splice(1, 0, '');
        expect(secrets(...parts)).toEqual(['aws']);
      }),
      { numRuns: 400 },
    );
  });
});

describe('every spaced-out key cut anywhere across two messages', () => {
  it('is found', () => {
    fc.assert(
      fc.property(awsKey, fc.integer({ min: 1, max: 6 }), fc.constantFrom(' ', '  ', '-', ' - ', '.', ', ', '\t'), fc.nat(), (key, size, sep, cutAt) => {
        const spaced = key.match(new RegExp(`.{1,${size}}`, 'g'))!.join(sep);
        const at = 1 + (cutAt % (spaced.length - 1));
        expect(secrets(`the key is ${spaced.slice(0, at)}`, `${spaced.slice(at)} thanks`)).toEqual(['aws']);
      }),
      { numRuns: 400 },
    );
  });
});
