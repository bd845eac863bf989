/**
 * The input estimator (src/providers/estimate.ts) and the tokenizer under it: the bound is never
 * below what a real byte-level BPE tokenizer counts, for any text (fast-check, the hostile shapes
 * included); the heap merge gives exactly the package's own tokens; the OpenAI count adds the
 * framing OpenAI documents.
 */
import fc from 'fast-check';
import { countTokens as o200kCount } from 'gpt-tokenizer/encoding/o200k_base';
import { countTokens as cl100kCount } from 'gpt-tokenizer/encoding/cl100k_base';
import { beforeAll, describe, expect, it } from 'vitest';
import { boundOpenAIInput, chargeableUsage, countInput, countOpenAIInput, FRAMING, framingFor, inputTokenBound, openAIBoundCaches, openAIEncoding, sumOfCounts, WIDEST_FRAMING } from '../../src/providers/estimate.js';
import { tokenBounder, tokenCounter } from '../../src/providers/tokenizer.js';
import { asciiPieceEnd } from '../../src/providers/asciiPieces.js';
import o200kEncoding from 'gpt-tokenizer/encoding/o200k_base';

const asText = { disallowedSpecial: new Set<string>() };

/** Texts of the shapes that defeat a bytes-per-token rule: one-letter words, digits, code, CJK, emoji, base64, special-token spellings. */
const hostile = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.array(fc.constantFrom('a', 'b', 'I', '1', '0'), { maxLength: 400 }).map((w) => w.join(' ')),
  fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 600 }).map((d) => d.join('')),
  fc.array(fc.constantFrom('{', '}', '(', ')', ';', '=>', 'const', ' ', '\n', '\t', 'x', '[]', '0x1f', '!==', '/*', '*/'), { maxLength: 300 }).map((t) => t.join('')),
  fc.array(fc.constantFrom('中', '文', '字', '日', '本', '語', '한', '국', 'ア', 'ー'), { maxLength: 300 }).map((c) => c.join('')),
  fc.array(fc.constantFrom('😀', '🎉', '👍🏽', '👨‍👩‍👧', '🏳️‍🌈', '\u200d', '\ufe0f'), { maxLength: 200 }).map((e) => e.join('')),
  fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b).toString('base64')),
  fc.array(fc.constantFrom('<|endoftext|>', '<|im_start|>', '<|fim_prefix|>', ' ', 'x'), { maxLength: 40 }).map((t) => t.join('')),
);

describe('the input bound', () => {
  let o200k: (t: string) => number;
  let cl100k: (t: string) => number;
  beforeAll(async () => {
    o200k = await tokenCounter('o200k_base');
    cl100k = await tokenCounter('cl100k_base');
  });

  it('counts a message sent as parts part by part, each with a message\'s framing', () => {
    const parts = { messages: [{ content: 'alpha beta\ngamma delta', parts: ['alpha beta', 'gamma delta'] }] };
    expect(inputTokenBound(parts, { perMessage: 4, perRequest: 3 })).toBe(10 + 4 + 11 + 4 + 3);
    // Never below the same text sent joined, whichever way the provider takes it.
    expect(inputTokenBound(parts)).toBeGreaterThan(inputTokenBound({ messages: [{ content: 'alpha beta\ngamma delta' }] }));
  });

  it('is the UTF-8 bytes of every text plus the framing per message and per request', () => {
    expect(inputTokenBound({ system: 'héllo', messages: [{ content: 'a a' }, { content: '😀' }] }, { perMessage: 2, perRequest: 5 })).toBe(6 + 3 + 4 + 3 * 2 + 5);
    expect(inputTokenBound({ messages: [] }, FRAMING.openai)).toBe(3);
    expect(inputTokenBound({ messages: [{ content: '' }] })).toBe(WIDEST_FRAMING.perMessage + WIDEST_FRAMING.perRequest);
    // A lone surrogate is sent as U+FFFD: 3 bytes.
    expect(inputTokenBound({ messages: [{ content: '\ud800' }] }, { perMessage: 0, perRequest: 0 })).toBe(3);
  });

  it('takes the widest framing for a kind this build does not know', () => {
    expect(framingFor('openai')).toEqual(FRAMING.openai);
    expect(framingFor('toString')).toEqual(WIDEST_FRAMING);
    expect(WIDEST_FRAMING).toEqual({ perMessage: 8, perRequest: 16 });
  });

  it('is never below the o200k_base or cl100k_base count of any text, hostile shapes included', () => {
    fc.assert(
      fc.property(fc.array(hostile, { minLength: 1, maxLength: 4 }), fc.option(hostile, { nil: undefined }), (texts, system) => {
        const prompt = { system, messages: texts.map((content) => ({ content })) };
        const all = system === undefined ? texts : [system, ...texts];
        const framing = { perMessage: 0, perRequest: 0 };
        const bound = inputTokenBound(prompt, framing);
        expect(bound).toBeGreaterThanOrEqual(all.reduce((n, t) => n + o200k(t), 0));
        expect(bound).toBeGreaterThanOrEqual(all.reduce((n, t) => n + cl100k(t), 0));
        // And with OpenAI's framing, never below what OpenAI bills (the local count).
        expect(inputTokenBound(prompt, FRAMING.openai)).toBeGreaterThanOrEqual(all.reduce<number>((n, t) => n + o200k(t) + FRAMING.openai.perMessage, FRAMING.openai.perRequest));
      }),
      { numRuns: 400 },
    );
  });

  it('holds on the shapes of the measured overshoot: one-letter words, digits, CJK, emoji (a token per byte at worst)', () => {
    for (const text of ['a '.repeat(5000), '7'.repeat(9000), '中文字符'.repeat(2000), '😀'.repeat(2000), '\u0301'.repeat(3000)]) {
      expect(inputTokenBound({ messages: [{ content: text }] }, { perMessage: 0, perRequest: 0 })).toBeGreaterThanOrEqual(o200k(text));
    }
  });
});

/** Prose-like text: common and made-up words (the made-up ones are not tokens and get merged), capitals, contractions, numbers, punctuation, line breaks. */
const proseLike = fc
  .array(
    fc.oneof(
      fc.constantFrom('the', 'committee', 'Revenue', 'grew', 'modestly', 'postpone', "didn't", "We'll", 'IBM', 'naïve', 'café', 'Notwithstanding', 'circumvention', 'copyleft'),
      fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzQXZ'), minLength: 1, maxLength: 40 }),
      fc.integer({ min: 0, max: 100_000 }).map(String),
      fc.constantFrom('.', ',', ';', ' -- ', '(', ')', '"', '\n', '\n\n', '  ', '\t', '...', '?!', "'s", 'https://example.com/a/b'),
    ),
    { maxLength: 300 },
  )
  .map((w) => w.join(' '));

describe('the OpenAI vocabulary bound (every call)', () => {
  let o200k: (t: string) => number;
  let cl100k: (t: string) => number;
  let o200kBound: (t: string) => number;
  let cl100kBound: (t: string) => number;
  beforeAll(async () => {
    [o200k, cl100k, o200kBound, cl100kBound] = await Promise.all([tokenCounter('o200k_base'), tokenCounter('cl100k_base'), tokenBounder('o200k_base'), tokenBounder('cl100k_base')]);
  });

  it('is never below the o200k_base or cl100k_base count, and never above the bytes, for prose-like and hostile text', () => {
    fc.assert(
      fc.property(fc.oneof(proseLike, hostile), (text) => {
        const bytes = Buffer.byteLength(text);
        expect(o200kBound(text)).toBeGreaterThanOrEqual(o200kCount(text, asText));
        expect(cl100kBound(text)).toBeGreaterThanOrEqual(cl100kCount(text, asText));
        expect(o200kBound(text)).toBeLessThanOrEqual(bytes);
        expect(cl100kBound(text)).toBeLessThanOrEqual(bytes);
      }),
      { numRuns: 500 },
    );
  });

  it("is the exact count when every piece is a token or a short ASCII word (the merge is the encoder's)", () => {
    // At most 6 words of 21 characters: within the merge allowance of any text (128 characters).
    const shortWords = fc
      .array(fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzEQZ019'), minLength: 1, maxLength: 20 }), { minLength: 1, maxLength: 6 })
      .map((w) => w.join(' '));
    fc.assert(
      fc.property(shortWords, (text) => {
        expect(o200kBound(text)).toBe(o200kCount(text, asText));
        expect(cl100kBound(text)).toBe(cl100kCount(text, asText));
      }),
      { numRuns: 600 },
    );
  });

  it('counts bytes for what it does not merge: a non-ASCII word that is not a token, a run past 32 characters', () => {
    const run = 'q'.repeat(40);
    expect(o200kBound(run)).toBe(40);
    expect(o200k(run)).toBeLessThan(40);
    const cjk = '自然言語処理の研究';
    expect(o200kBound(cjk)).toBe(Buffer.byteLength(cjk));
  });

  it('stops merging after a quarter of the text and counts the rest in bytes, still above the count', () => {
    // Words that are not tokens, with no vocabulary word between them to spend nothing on.
    let seed = 7;
    const letter = () => String.fromCharCode(97 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % 26));
    const text = Array.from({ length: 400 }, () => ' ' + Array.from({ length: 9 }, letter).join('')).join('');
    expect(o200kBound(text)).toBeGreaterThan(o200k(text));
    expect(o200kBound(text)).toBeLessThan(Buffer.byteLength(text));
  });

  it('is within 10 % of the count on English prose', () => {
    const prose =
      'The committee met on Tuesday to review the quarterly figures. Revenue grew modestly in the northern region, while costs ' +
      'rose faster than expected because of delayed shipments and higher energy prices. After a long discussion, members agreed ' +
      'to postpone the final decision until the external audit is complete, and asked the finance team to prepare two scenarios.';
    expect(o200kBound(prose)).toBeLessThanOrEqual(Math.ceil(o200k(prose) * 1.1));
    expect(cl100kBound(prose)).toBeLessThanOrEqual(Math.ceil(cl100k(prose) * 1.1));
  });

  it('bounds an OpenAI prompt with its framing: at least the count, at most the byte bound, recomputed when a text changes', async () => {
    const messages = [{ content: 'Name a colour' }, { content: 'Blue.' }];
    const prompt = { system: 'Answer in French.', messages };
    const n = await boundOpenAIInput(prompt, 'gpt-5-mini');
    expect(n).toBe(await countOpenAIInput(prompt, 'gpt-5-mini'));
    expect(await boundOpenAIInput(prompt, 'gpt-4-turbo')).toBe(await countOpenAIInput(prompt, 'gpt-4-turbo'));
    expect(n!).toBeLessThanOrEqual(inputTokenBound(prompt, FRAMING.openai));
    messages[1] = { content: 'Blue, and a much longer answer now.' };
    expect(await boundOpenAIInput(prompt, 'gpt-5-mini')).toBe(await countOpenAIInput(prompt, 'gpt-5-mini'));
    expect(await boundOpenAIInput({ ...prompt, system: undefined }, 'gpt-5-mini')).toBe(await countOpenAIInput({ messages }, 'gpt-5-mini'));
    expect(await boundOpenAIInput(prompt, 'llama3')).toBeUndefined();
  });

  it('is the same for a text whatever other texts were bounded before (what a cache may remember)', () => {
    // Words that are not tokens, past the text's merge allowance: counted in bytes, even once
    // another text has merged them (the merged-piece memo must not make the bound tighter).
    let seed = 11;
    const letter = () => String.fromCharCode(97 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % 26));
    const words = Array.from({ length: 200 }, () => Array.from({ length: 9 }, letter).join(''));
    const text = words.map((w) => ` ${w}`).join('');
    const first = o200kBound(text);
    // Each word once among many vocabulary words: well within that text's allowance, so merged.
    const roomy = words.map((w) => ` ${w}${' the'.repeat(40)}`).join('');
    o200kBound(roomy);
    expect(o200kBound(text)).toBe(first);
    expect(first).toBeGreaterThan(o200k(text));
  });

  it('remembers the bound of a long text by its hash: a resent history is not split again', async () => {
    const history = `${'The committee met on Tuesday to review the quarterly figures. '.repeat(20)}${Math.random()}`;
    const caches = openAIBoundCaches.o200k_base;
    const prompt = (last: string) => ({ messages: [{ content: history }, { content: last }] });
    const before = { hits: caches.hits, misses: caches.misses };
    const first = await boundOpenAIInput(prompt('Summarise.'), 'gpt-5-mini');
    expect(caches.misses - before.misses).toBe(1); // the history; 'Summarise.' is too short to hash
    const second = await boundOpenAIInput(prompt('And now in French.'), 'gpt-5-mini');
    expect(caches.hits - before.hits).toBe(1);
    expect(second! - first!).toBe(o200kBound('And now in French.') - o200kBound('Summarise.'));
    expect(second).toBe(await countOpenAIInput(prompt('And now in French.'), 'gpt-5-mini'));
  });
});

describe("the ASCII pre-tokenizer (o200k_base's regex without the regex)", () => {
  const regex = (o200kEncoding as unknown as { bytePairEncodingCoreProcessor: { tokenSplitRegex: RegExp } }).bytePairEncodingCoreProcessor.tokenSplitRegex;
  /** The pieces as the bound finds them: the scan where it answers, the regex at that place where it does not. */
  const scanned = (text: string): string[] => {
    const sticky = new RegExp(regex.source, 'uy');
    const out: string[] = [];
    for (let i = 0; i < text.length; ) {
      let end = asciiPieceEnd(text, i);
      if (end < 0) {
        sticky.lastIndex = i;
        end = i + sticky.exec(text)![0].length;
      }
      out.push(text.slice(i, end));
      i = end;
    }
    return out;
  };
  // Every class the regex tells apart, in and out of ASCII: cases, digits, contractions, spaces, line breaks, punctuation, marks, letters and spaces beyond ASCII.
  const unit = fc.constantFrom(...'aAzZqQ09\'sStTdDlLvVeErRmM .,;/()-_"', ' ', '  ', '\t', '\n', '\r', '\r\n', '\v', '\f', '\x1c', '\x00', '\x7f', 'é', 'É', 'ǅ', 'ʰ', '\u0301', '’', '“', '—', '\u00a0', '\u3000', '\u2028', '²', '٣', '中', '😀', "'ll", "'VE", "'re");

  it("finds exactly the regex's pieces, in any mix of ASCII and other characters", () => {
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 80 }).map((u) => u.join('')), (text) => {
        expect(scanned(text)).toEqual([...text.matchAll(regex)].map((m) => m[0]));
      }),
      { numRuns: 3000 },
    );
  });

  it("finds exactly the regex's pieces in prose", () => {
    fc.assert(
      fc.property(proseLike, (text) => {
        expect(scanned(text)).toEqual([...text.matchAll(regex)].map((m) => m[0]));
      }),
      { numRuns: 300 },
    );
  });
});

describe('the tokenizer', () => {
  let o200k: (t: string) => number;
  let cl100k: (t: string) => number;
  beforeAll(async () => {
    o200k = await tokenCounter('o200k_base');
    cl100k = await tokenCounter('cl100k_base');
  });

  it("counts exactly what gpt-tokenizer's own encoder counts, long pieces (merged with a heap) included", () => {
    // Pieces past 256 bytes take the heap merge: long runs without a space or a case change.
    const long = fc.oneof(
      fc.array(fc.constantFrom('中', '文', '字', '日', '本', '語', 'の', '한'), { minLength: 90, maxLength: 700 }).map((c) => c.join('')),
      fc.array(fc.constantFrom('😀', '🎉', '👍🏽', '🏳️‍🌈'), { minLength: 70, maxLength: 400 }).map((e) => e.join('')),
      fc.array(fc.constantFrom('a', 'b', 'e', 'r', 's', 't', 'x', 'q'), { minLength: 260, maxLength: 1500 }).map((c) => c.join('')),
      fc.array(fc.constantFrom('=', '-', '*', '#', '~', '.', '!'), { minLength: 260, maxLength: 1500 }).map((c) => c.join('')),
    );
    fc.assert(
      fc.property(fc.oneof(hostile, long), (text) => {
        expect(o200k(text)).toBe(o200kCount(text, asText));
        expect(cl100k(text)).toBe(cl100kCount(text, asText));
      }),
      { numRuns: 300 },
    );
  });

  it('counts 360 KB of CJK without a space in seconds at most (the package alone takes minutes on it)', () => {
    const text = '中文字符测试'.repeat(20_000);
    const t0 = performance.now();
    const n = o200k(text);
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThanOrEqual(Buffer.byteLength(text));
    expect(performance.now() - t0).toBeLessThan(3_000);
  });
});

describe('the OpenAI count', () => {
  it('knows the encoding of OpenAI model families and nothing else', () => {
    expect(openAIEncoding('gpt-5-mini')).toBe('o200k_base');
    expect(openAIEncoding('gpt-4o-2024-08-06')).toBe('o200k_base');
    expect(openAIEncoding('gpt-4.1-nano')).toBe('o200k_base');
    expect(openAIEncoding('o3-mini')).toBe('o200k_base');
    expect(openAIEncoding('gpt-4-turbo')).toBe('cl100k_base');
    expect(openAIEncoding('gpt-3.5-turbo')).toBe('cl100k_base');
    expect(openAIEncoding('meta-llama/Llama-3.1-8B-Instruct')).toBeUndefined();
    expect(openAIEncoding('my-azure-deployment')).toBeUndefined();
  });

  it('is the tokens of every text plus 4 per message and 3 for the reply primer (OpenAI cookbook)', async () => {
    const prompt = { system: 'Answer in French.', messages: [{ content: 'Name a colour' }] };
    const expected = o200kCount('Answer in French.', asText) + o200kCount('Name a colour', asText) + 2 * 4 + 3;
    expect(await countOpenAIInput(prompt, 'gpt-5')).toBe(expected);
    expect(await countInput(prompt, 'o200k_base', FRAMING.openai)).toBe(expected);
    expect(await countOpenAIInput(prompt, 'llama3')).toBeUndefined();
  });
});

describe('an input count summed from its parts (Anthropic, Bedrock)', () => {
  it('reads an absent main figure as not reported, charged at the bound as OpenAI reads an absent prompt_tokens', () => {
    expect(sumOfCounts(undefined, 5, 0)).toBeNaN();
    expect(sumOfCounts(null)).toBeNaN();
    expect(chargeableUsage({ inputTokens: sumOfCounts(undefined), outputTokens: 2 }, 57, 9)).toEqual({ inputTokens: 57, outputTokens: 2 });
    expect(chargeableUsage({ inputTokens: undefined as unknown as number, outputTokens: 2 }, 57, 9)).toEqual({ inputTokens: 57, outputTokens: 2 });
  });

  it('reads absent cache figures as 0', () => {
    expect(sumOfCounts(10, undefined, null)).toBe(10);
    expect(sumOfCounts(10, 5, 3)).toBe(18);
  });
});
