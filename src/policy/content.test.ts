/**
 * What content rules read (src/policy/content.ts): the normalised text, the compact view, decoded
 * spans and their bounds, the credential finder and its redaction.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CONTENT_LIMITS, PromptContent, contentCaches, contentOf, normalizeText, redactSecrets, withContent } from './content.js';
import { mayHoldSecret } from './secretPatterns.js';

const KEY = 'AKIAZ3MBRXQ7LPDE4KTY';

describe('normalised text', () => {
  it('applies NFKC and removes format and default-ignorable characters', () => {
    expect(normalizeText('ＡＫＩＡ')).toBe('AKIA');
    expect(normalizeText('A\u200BK\u200CI\u200DA\u2060\uFEFF\u00AD\u034F\uFE0F\u200E\u{E0041}')).toBe('AKIA');
    expect(normalizeText('ﬁle\u00A0name')).toBe('file name');
  });

  it('returns ASCII text as it is, and normalises any text with one character outside ASCII', () => {
    const full = (s: string) => s.replace(/[\p{Cf}\p{Default_Ignorable_Code_Point}]/gu, '').normalize('NFKC').replace(/[\p{Cf}\p{Default_Ignorable_Code_Point}]/gu, '');
    const ascii = fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 80 });
    const any = fc.oneof(ascii, fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: fc.constantFrom('a', ' ', '\u0080', '\u00ad', '\u200b', '\ufb01', '\ud800', '\udfff', '\uff21'), maxLength: 20 }));
    fc.assert(fc.property(ascii, (s) => normalizeText(s) === s));
    fc.assert(fc.property(any, (s) => normalizeText(s) === (/[^\x00-\x7f]/.test(s) ? full(s) : s)));
    expect(normalizeText('AKIA\u0080')).toBe('AKIA\u0080');
    expect(normalizeText('AK\u00adIA')).toBe('AKIA');
  });

  it('joins the system prompt and every message with a newline; rawText keeps them as sent', () => {
    const c = contentOf({ system: 'sys\u200B', messages: [{ content: 'one' }, { content: 'ｔｗｏ' }] });
    expect(c.text).toBe('sys\none\ntwo');
    expect(c.rawText).toBe('sys\u200B\none\nｔｗｏ');
    expect(contentOf({ messages: [{ content: 'only' }] }).text).toBe('only');
  });
});

describe('a value cut across pieces, with more text after them', () => {
  // The compact view glues every piece to the next: the key's end ran into the next message's
  // first word ("...EXAMPLFhi"), which a pattern ending at a word boundary does not match.
  it.each([4, 10, 16])('is found cut at %i between two system pieces, a user message after them', (cut) => {
    const [a, b] = [KEY.slice(0, cut), KEY.slice(cut)];
    expect(contentOf({ system: `${a}\n${b}`, systemParts: [a, b], messages: [{ content: 'hi' }] }).secrets).toHaveLength(1);
    expect(contentOf({ messages: [{ content: a }, { content: b }, { content: 'thanks' }] }).secrets).toHaveLength(1);
    expect(contentOf({ messages: [{ content: 'use' }, { content: a }, { content: b }] }).secrets).toHaveLength(1);
  });

  it('is still found cut in three pieces', () => {
    expect(contentOf({ messages: [{ content: KEY.slice(0, 6) }, { content: KEY.slice(6, 13) }, { content: KEY.slice(13) }] }).secrets).toHaveLength(1);
  });
});

describe('compact text', () => {
  const compact = (...parts: string[]) => new PromptContent(parts).compactText;

  it('leaves control characters that show nothing out of the compact view (C0 but tab, line breaks, VT and FF; DEL; C1 but NEL) and the braille blank, so a key with one inside is found', () => {
    for (const c of ['\u0000', '\u0001', '\u0007', '\b', '\u000e', '\u001b', '\u001f', '\u007f', '\u0080', '\u009b', '\u009f', '\u2800']) {
      expect(new PromptContent([`deploy AK${c}IA${c}${c}Z3 now`]).compactText, JSON.stringify(c)).toBe('deploy AKIAZ3 now');
      expect(contentOf({ messages: [{ content: `deploy with AKIA${c}Z3MBRXQ7LPDE4KTY please` }] }).secrets, JSON.stringify(c)).toHaveLength(1);
      expect(contentOf({ messages: [{ content: `deploy with ÅKIA AKIA${c}Z3MBRXQ7LPDE4KTY please` }] }).secrets, JSON.stringify(c)).toHaveLength(1);
    }
    for (const c of ['\t', '\r', '\u000b', '\u000c', '\u0085']) expect(new PromptContent([`deploy AK${c}IA now`]).compactText).toBe(`deploy AK${c}IA now`);
  });

  it('glues messages end to end', () => {
    expect(compact('deploy with AKIAZ3MBRX ', '\nQ7LPDE4KTY please')).toBe(`deploy with ${KEY} please`);
  });

  it('glues spaced-out groups of one size, whatever the separator', () => {
    expect(compact(`key ${[...KEY].join(' ')} ok`)).toBe(`key ${KEY} ok`);
    expect(compact('key AKIA Z3MB RXQ7 LPDE 4KTY ok')).toBe(`key ${KEY} ok`);
    expect(compact('key AKIA-Z3MB-RXQ7-LPDE-4KTY ok')).toBe(`key ${KEY} ok`);
    expect(compact('key AKIAZ3 MBRXQ7 LPDE4K TY ok')).toBe(`key ${KEY} ok`);
    expect(compact('bytes 41 4b 49 41 5a 33 ok')).toBe('bytes 414b49415a33 ok');
  });

  it('leaves prose, dates, numbers and identifiers alone', () => {
    for (const prose of [
      'the cat sat on the mat and ran off',
      'See you on 2026-11-25 at 10:00, room 4.12, phone 06 12 34 56 78.',
      'UUID 11111111-2222-3333-4444-555555555555 and v2.3.1',
      'The Cat Sat And Then Went Home',
    ]) {
      expect(compact(prose)).toBe(prose);
    }
  });
});

describe('decoded spans', () => {
  it('decodes base64, base64url, hex, \\xNN and %NN runs into readable text', () => {
    const b64 = Buffer.from('the key is AKIAZ3MBRXQ7LPDE4KTY').toString('base64');
    const url = Buffer.from('é?>>? secret value ~~').toString('base64url');
    const hex = Buffer.from('hello, hex world').toString('hex');
    const esc = [...Buffer.from('escaped bytes')].map((b) => `\\x${b.toString(16)}`).join('');
    const pct = [...Buffer.from('percent coded')].map((b) => `%${b.toString(16)}`).join('');
    const c = new PromptContent([`a ${b64} b ${url} c ${hex} d ${esc} e ${pct}`]);
    expect(c.decodedSpans).toEqual(expect.arrayContaining(['the key is AKIAZ3MBRXQ7LPDE4KTY', 'é?>>? secret value ~~', 'hello, hex world', expect.stringMatching(/d escaped bytes e percent coded$/)]));
    expect(c.decodedTruncated).toBe(false);
  });

  it('decodes escapes among plain characters: URL %NN, \\uNNNN, \\xNN, \\/ and HTML character references', () => {
    const cases: [string, string][] = [
      [`key %41${KEY.slice(1)} ok`, `key A${KEY.slice(1)}`],
      [`key \\u0041\\u004b${KEY.slice(2)} ok`, `key AK${KEY.slice(2)}`],
      [`key &#65;&#x4B;${KEY.slice(2)} ok`, `key AK${KEY.slice(2)}`],
      ['-----BEGIN%20RSA%20PRIVATE%20KEY-----%0AMIIEow', '-----BEGIN RSA PRIVATE KEY-----\nMIIEow'],
      ['"secret": "wJalrXUtnFEMI\\/K7MDENG"', '"secret": "wJalrXUtnFEMI/K7MDENG'],
      ['\\u002d\\u002dBEGIN OPENSSH PRIVATE KEY\\u002d\\u002d', '--BEGIN OPENSSH PRIVATE KEY--'],
      ['smile \\ud83d\\ude00 and &#128512; twice', 'smile 😀 and 😀'],
    ];
    for (const [text, decoded] of cases) expect(new PromptContent([text]).decodedSpans, text).toEqual([decoded]);
  });

  it('finds credentials whose characters are partly escaped, and ones escaped as ordinary encoders do', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ1xWdmPqR';
    expect(new PromptContent([`deploy %41%4B%49%41${KEY.slice(4)}`]).secrets).toEqual(['aws']);
    expect(new PromptContent([`{"id": "\\u0041KIA${KEY.slice(4)}"}`]).secrets).toEqual(['aws']);
    expect(new PromptContent([`<code>&#x41;&#x4b;IA${KEY.slice(4)}</code>`]).secrets).toEqual(['aws']);
    // A secret access key in a query string (%2F) or in JSON from an encoder that escapes "/".
    expect(new PromptContent([`aws_secret_access_key=${secret.replace(/\//g, '%2F')}`]).secrets).toEqual(['aws']);
    expect(new PromptContent([`{"aws_secret_access_key": "${secret.replace(/\//g, '\\/')}"}`]).secrets).toEqual(['aws']);
    // A private key in a URL-encoded form body.
    expect(new PromptContent([`key=${encodeURIComponent('-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA')}`]).secrets).toContain('pem-header');
  });

  it('reads a value hard-wrapped across a line break whole: a base64 block wrapped at 76 columns, a wrapped log line', () => {
    const creds = `[default]\naws_access_key_id = ${KEY}\nregion = eu-west-1\n`;
    for (const pad of ['', 'x', 'xx', '[profile-name-here]\n', 'abcdefghijklmnop']) {
      const wrapped = Buffer.from(pad + creds).toString('base64').replace(/(.{76})/g, '$1\n');
      expect(new PromptContent([`my credentials file:\n${wrapped}`]).secrets, pad).toEqual(['aws']);
      expect(new PromptContent([`my credentials file:\r\n${wrapped.replace(/\n/g, '\r\n')}`]).secrets, pad).toEqual(['aws']);
    }
    const line = `2026-11-30 12:00:01 INFO deploy starting with credentials key=${KEY} region=eu-west-1`;
    for (const width of [70, 72, 76, 78, 80]) {
      const wrapped = line.replace(new RegExp(`(.{${width}})`, 'g'), '$1\n');
      expect(new PromptContent([wrapped]).secrets, wrapped).toEqual(['aws']);
    }
  });

  it('leaves words of prose and short identifiers across a line break apart', () => {
    for (const text of ['the deploy script\nuses this key', 'see internationalization\nguidelines', 'x = 1\ny = 2', 'Release v2\nNotes for AKIA users']) {
      expect(new PromptContent([text]).compactText).toBe(text);
    }
  });

  it('keeps the decodings of all escaped runs of a message in one span, leaving the span bound to base64 and hex', () => {
    const html = Array.from({ length: 2 * CONTENT_LIMITS.maxSpans }, (_, i) => `see https://example.com/a%20b/page${i} for it`).join('\n');
    const c = new PromptContent([html, `then ${Buffer.from(`key ${KEY}`).toString('base64')}`]);
    expect(c.decodedSpans).toHaveLength(2);
    expect(c.decodedSpans[0]).toContain('//example.com/a b/page511');
    expect(c.secrets).toEqual(['aws']);
    expect(c.decodedTruncated).toBe(false);
  });

  it('keeps nothing for random bytes, and decodes twice at most', () => {
    const random = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 97 + 13) % 256)).toString('base64');
    expect(new PromptContent([random]).decodedSpans).toEqual([]);
    const twice = Buffer.from(Buffer.from(KEY).toString('hex')).toString('base64');
    expect(new PromptContent([twice]).decodedSpans).toEqual([Buffer.from(KEY).toString('hex'), KEY]);
  });

  it('stays bounded on a 1 MB prompt made of encoded text, and says so', () => {
    const chunk = Buffer.from('an innocent sentence, encoded').toString('base64');
    const huge = Array.from({ length: Math.ceil(1_048_576 / (chunk.length + 1)) }, (_, i) => `${chunk.slice(0, -4)}${String(i % 10_000).padStart(4, '0')}`).join(' ');
    const c = new PromptContent([huge]);
    const t = performance.now();
    expect(c.decodedSpans.length).toBeLessThanOrEqual(CONTENT_LIMITS.maxSpans);
    expect(c.decodedTruncated).toBe(true);
    void c.secrets;
    expect(performance.now() - t).toBeLessThan(2000);
  });
});

describe('credentials found', () => {
  it('names the kind from the pattern set, plus pem-header, bearer and jwt', () => {
    expect(new PromptContent([`use ${KEY}`]).secrets).toEqual(['aws']);
    expect(new PromptContent(['ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3gH5']).secrets).toEqual(['github']);
    expect(new PromptContent(['---BEGIN PRIVATE KEY---\nabc']).secrets).toEqual(['pem-header']);
    expect(new PromptContent(['Authorization: Bearer abcdefghijklmnopqrstuvwxyz']).secrets).toEqual(['bearer']);
    expect(new PromptContent(['Keys start with AKIA or ASIA; AWS account ids are 12 digits.']).secrets).toEqual([]);
    // An AWS account id is an identifier, not a secret.
    expect(new PromptContent(['aws_account_id = 123456789012']).secrets).toEqual([]);
  });

  it('redacts what it finds, on the normalised text when that was needed', () => {
    expect(redactSecrets(`a ${KEY} b`, '[X]')).toBe('a [X] b');
    expect(redactSecrets('a AKIA\u200BZ3MBRXQ7LPDE4KTY b\u200B', '[X]')).toBe('a [X] b');
    expect(redactSecrets(`a ${Buffer.from(KEY).toString('base64')} b`, '[X]')).toBe('a [X] b');
    expect(redactSecrets('a AKIA Z3MB RXQ7 LPDE 4KTY b', '[X]')).toBe('a [X] b');
    expect(redactSecrets('nothing here\u200B', '[X]')).toBe('nothing here\u200B');
  });
});

describe('the request fields rules read', () => {
  it('are computed on first read only', () => {
    const c = new PromptContent([KEY]);
    const request = withContent({ tier: 'standard' }, c);
    expect(Object.keys(request)).toEqual(['tier', 'text', 'rawText', 'compactText', 'decodedSpans', 'decodedTruncated', 'secrets']);
    expect((c as unknown as { _findings?: unknown })._findings).toBeUndefined();
    expect((request as unknown as { secrets: string[] }).secrets).toEqual(['aws']);
  });
});

describe('messages analysed one by one', () => {
  const filler = (n: number, seed: number) => Array.from({ length: n }, (_, i) => ['the', 'report', 'shows', 'revenue', 'up', 'in', 'Europe', 'and', 'costs', 'flat.'][(i * 7 + seed) % 10]).join(' ');

  it('finds a value cut across two long messages near the cut, in the text and in the compact view', () => {
    const before = filler(400, 1);
    const after = filler(400, 2);
    expect(new PromptContent([`${before} deploy with AKIAZ3MBRX`, `Q7LPDE4KTY please ${after}`]).secrets).toEqual(['aws']);
    // "Bearer" and its token on either side of the newline that joins the messages in `text`.
    expect(new PromptContent([`${before} Authorization: Bearer`, `abcdefghijklmnopqrstuvwxyz ${after}`]).secrets).toEqual(['bearer']);
    // Cut across three messages, the middle one short.
    expect(new PromptContent([`${before} key AKIAZ3`, 'MBRXQ7', `LPDE4KTY ${after}`]).secrets).toEqual(['aws']);
    expect(new PromptContent([`${before} nothing`, `here ${after}`]).secrets).toEqual([]);
  });

  it('places findings on the text of the whole prompt', () => {
    const first = filler(100, 3);
    const c = new PromptContent([first, `use ${KEY} now`]);
    expect(c.findings).toEqual([{ kind: 'aws', start: first.length + 1 + 4, end: first.length + 1 + 4 + KEY.length }]);
    expect(c.text.slice(c.findings[0]!.start, c.findings[0]!.end)).toBe(KEY);
  });

  it('remembers a long message by its hash: the history resent on the next turn is not scanned again', () => {
    const history = `${filler(300, 4)} ${Math.random()} ${Buffer.from('a secret sentence, encoded').toString('base64')} ${KEY}`;
    const before = { hits: contentCaches.parts.hits, misses: contentCaches.parts.misses };
    const turn1 = new PromptContent([history, 'What does it say?']);
    expect(turn1.secrets).toEqual(['aws']);
    expect(contentCaches.parts.misses - before.misses).toBe(1);
    const turn2 = new PromptContent([history, 'What does it say?', 'And in French?']);
    expect(turn2.secrets).toEqual(['aws']);
    expect(turn2.decodedSpans).toEqual(turn1.decodedSpans);
    expect(turn2.decodedSpans).toContain('a secret sentence, encoded');
    expect(contentCaches.parts.hits - before.hits).toBe(1);
    expect(turn2.findings.filter((f) => f.start < history.length)).toEqual(turn1.findings.filter((f) => f.start < history.length));
  });

  it('does not remember a message holding a lone surrogate (its hash would read it as U+FFFD)', () => {
    const text = `${filler(300, 5)} \ud800 ${KEY}`;
    const before = contentCaches.parts.misses + contentCaches.parts.hits;
    expect(new PromptContent([text]).secrets).toEqual(['aws']);
    expect(new PromptContent([text]).secrets).toEqual(['aws']);
    expect(contentCaches.parts.misses + contentCaches.parts.hits).toBe(before);
  });

  it('finds in a prompt sent as messages every kind found in the same text sent as one message', () => {
    // Spaced-out groups are glued within a message only (sent as one message, groups on both sides
    // of a newline glue too), so they are left out here; so is a value wrapped across a single line
    // break, glued within a message only: the one message joins the pieces with a blank line.
    const secrets = [KEY, 'ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3gH5', 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz', '---BEGIN PRIVATE KEY---\nabc'];
    const prompt = fc
      .array(fc.oneof(fc.constantFrom(...secrets), fc.integer({ min: 1, max: 120 }).map((n) => filler(n, n))), { minLength: 1, maxLength: 6 })
      .chain((pieces) => {
        const whole = pieces.join(' ');
        return fc.uniqueArray(fc.integer({ min: 1, max: whole.length - 1 }), { maxLength: 4 }).map((cuts) => {
          const at = [0, ...cuts.sort((a, b) => a - b), whole.length];
          return at.slice(1).map((end, i) => whole.slice(at[i], end));
        });
      });
    fc.assert(
      fc.property(prompt, (parts) => {
        const joined = new PromptContent([parts.join('\n\n')]).secrets;
        expect(new PromptContent(parts).secrets).toEqual(expect.arrayContaining(joined));
      }),
      { numRuns: 300 },
    );
  });
});

describe('the pre-check before the pattern set', () => {
  it('answers as the regex it replaces', () => {
    const regex = /[A-Za-z0-9+/=_.-]{16}|@|begin/i;
    const text = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.string({ unit: fc.constantFrom(...'aAbBeEgGiInN09+/=_.- @\u0130\u017f\n'), maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
    );
    fc.assert(
      fc.property(text, (s) => {
        expect(mayHoldSecret(s)).toBe(regex.test(s));
      }),
      { numRuns: 3000 },
    );
  });
});
