/**
 * What content rules read (src/policy/content.ts): the normalised text, the compact view, decoded
 * spans and their bounds, the credential finder and its redaction.
 */
import { describe, expect, it } from 'vitest';
import { CONTENT_LIMITS, PromptContent, contentOf, normalizeText, redactSecrets, withContent } from './content.js';

const KEY = 'AKIAZ3MBRXQ7LPDE4KTY';

describe('normalised text', () => {
  it('applies NFKC and removes format and default-ignorable characters', () => {
    expect(normalizeText('ＡＫＩＡ')).toBe('AKIA');
    expect(normalizeText('A\u200BK\u200CI\u200DA\u2060\uFEFF\u00AD\u034F\uFE0F\u200E\u{E0041}')).toBe('AKIA');
    expect(normalizeText('ﬁle\u00A0name')).toBe('file name');
  });

  it('joins the system prompt and every message with a newline; rawText keeps them as sent', () => {
    const c = contentOf({ system: 'sys\u200B', messages: [{ content: 'one' }, { content: 'ｔｗｏ' }] });
    expect(c.text).toBe('sys\none\ntwo');
    expect(c.rawText).toBe('sys\u200B\none\nｔｗｏ');
    expect(contentOf({ messages: [{ content: 'only' }] }).text).toBe('only');
  });
});

describe('compact text', () => {
  const compact = (...parts: string[]) => new PromptContent(parts).compactText;

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
    expect(c.decodedSpans).toEqual(expect.arrayContaining(['the key is AKIAZ3MBRXQ7LPDE4KTY', 'é?>>? secret value ~~', 'hello, hex world', 'escaped bytes', 'percent coded']));
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
