/**
 * What content rules cost per call: normalising a prompt, building the compact view, decoding
 * base64/hex runs and running the credential finder (src/policy/content.ts), for prompts of a few
 * shapes and sizes; then the whole decision with the shipped DLP policy (`simulate`, which runs
 * decide() and the reservation replay) against a policy whose only rule is a plain regex on the text.
 *
 *   npm run bench:content -- [--size 200000] [--calls 40]
 *
 * Prints CPU milliseconds per call (median of --calls runs), cold and warm. Messages are analysed one
 * by one and remembered by their hash (content.ts), so: "cold" makes each call's text new (a
 * number in front), so nothing is remembered; "warm" sends the same prompt as the history of a
 * conversation followed by a new short question each call, as a client resends it turn after turn.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PromptContent, contentCaches } from '../../src/policy/content.js';
import { parsePolicy, type Policy } from '../../src/policy/load.js';
import { simulate } from '../../src/policy/simulate.js';

const { values } = parseArgs({ options: { size: { type: 'string', default: '200000' }, calls: { type: 'string', default: '40' } } });
const SIZE = Number(values.size);
const CALLS = Number(values.calls);

const WORDS = 'the quarterly report shows revenue up in Europe and Asia while costs stayed flat ; please summarise it for the board meeting on 2026-11-25 at 10:00 and mention AKIA keys rotated by IAM in v2.3.1 of our runbook .'.split(' ');
let seed = 17;
const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
const fill = (size: number, next: () => string) => {
  const parts: string[] = [];
  let len = 0;
  while (len < size) {
    const w = next();
    parts.push(w);
    len += w.length + 1;
  }
  return parts.join(' ').slice(0, size);
};
const prose = (size: number) => fill(size, () => WORDS[rand(WORDS.length)]! + (rand(12) === 0 ? '\n' : ''));

const SHAPES: Record<string, (size: number) => string[]> = {
  'prose (ASCII)': (size) => [prose(size)],
  'prose, non-ASCII (accents, fullwidth)': (size) => [prose(size).replace(/e/g, 'é').replace(/Q/g, 'Ｑ')],
  'prose in 20 messages': (size) => Array.from({ length: 20 }, () => prose(size / 20)),
  'source code with hashes and base64': (size) =>
    [fill(size, () => (rand(4) === 0 ? randomBytes(24).toString(rand(2) ? 'base64' : 'hex') : `const x${rand(999)} = call(${rand(99)});`))],
  'base64 blob (random bytes)': (size) => [randomBytes(Math.floor((size * 3) / 4)).toString('base64')],
  'spaced hex bytes (worst case for the compact view)': (size) => [fill(size, () => randomBytes(1).toString('hex'))],
  // Escapes every few words: URLs with %NN, HTML character references, JSON with \/ and \uNNNN.
  'prose with URLs, HTML and JSON escapes': (size) => [
    fill(size, () =>
      rand(3) === 0
        ? [`https://example.com/q?s=${encodeURIComponent(prose(40))}`, `it&#39;s &#x201C;${prose(20)}&#x201D;`, `{"path": ${JSON.stringify(`/srv/${prose(20)}/`).replace(/\//g, '\\/')}, "name": "caf\\u00e9"}`][rand(3)]!
        : prose(60),
    ),
  ],
};

function cpuMs(fn: () => void): number {
  const t = process.cpuUsage();
  fn();
  const u = process.cpuUsage(t);
  return (u.user + u.system) / 1000;
}
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Each call's prompt: cold, every part made new (a number in front); warm, the parts then a new question. */
// Flat strings, as a request's texts arrive from JSON (a regex over a concatenation flattens it first).
const flat = (s: string): string => JSON.parse(JSON.stringify(s)) as string;
const coldParts = (parts: string[], i: number) => parts.map((p) => flat(`${i} ${p}`));
const warmParts = (parts: string[], i: number) => [...parts.map(flat), flat(`And what about item ${i}?`)];

function contentCost(parts: string[]): { text: number; cold: number; warm: number; coldSecrets: number; warmSecrets: number; spans: number; truncated: boolean } {
  const text: number[] = [];
  const cold: number[] = [];
  const warm: number[] = [];
  const coldSecrets: number[] = [];
  const warmSecrets: number[] = [];
  let last: PromptContent | undefined;
  const all = (c: PromptContent) => cpuMs(() => void [c.text, c.compactText, c.decodedSpans, c.secrets]);
  for (let i = 0; i < CALLS; i++) {
    text.push(cpuMs(() => void new PromptContent(parts).text));
    const c = new PromptContent(coldParts(parts, i + CALLS * round));
    cold.push(all(c));
    last = c;
    const d = new PromptContent(coldParts(parts, i + CALLS * round + 1_000_000));
    coldSecrets.push(cpuMs(() => void d.secrets));
  }
  void new PromptContent(parts).secrets; // the history, remembered
  for (let i = 0; i < CALLS; i++) {
    warm.push(all(new PromptContent(warmParts(parts, i))));
    const d = new PromptContent(warmParts(parts, i + CALLS));
    warmSecrets.push(cpuMs(() => void d.secrets));
  }
  round++;
  return { text: median(text), cold: median(cold), warm: median(warm), coldSecrets: median(coldSecrets), warmSecrets: median(warmSecrets), spans: last!.decodedSpans.length, truncated: last!.decodedTruncated };
}
let round = 0;

const noEnv = { env: {}, readFile: () => { throw new Error('no file bindings'); } };
const plain = parsePolicy(
  `version: 1
providers: { demo: { kind: demo } }
tiers: { standard: [demo/medium] }
limits: { maxInputChars: 2000000 }
rules:
  - { id: aws-regex, when: "request.rawText.matches('AKIA[0-9A-Z]{16}')", effect: deny }
`,
  'plain.yaml',
);
const bigDlp = parsePolicy(readFileSync(new URL('../../policy/library/dlp-credentials.yaml', import.meta.url), 'utf8').replace('rules:', 'limits: { maxInputChars: 2000000 }\nrules:'), 'dlp.yaml', { sources: noEnv });

function decisionCost(policy: Policy, parts: string[], warm: boolean): number {
  const principal = { user: 'bench', teams: [], groups: [], roles: [], authMethod: 'api_key' as const };
  const xs: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const p = warm ? warmParts(parts, i) : coldParts(parts, i + CALLS * round++);
    xs.push(cpuMs(() => void simulate({ policy, principal, request: { messages: p.map((content) => ({ role: 'user' as const, content })), maxTokens: 256 }, usage: {}, now: Date.now() })));
  }
  return median(xs);
}

process.stdout.write(`content of a ${SIZE.toLocaleString('en')}-character prompt, CPU ms per call (median of ${CALLS}); cold: new text each call; warm: the same text resent with a new short question; secrets: request.secrets alone; everything: text, compactText, decodedSpans and secrets:\n`);
for (const [name, make] of Object.entries(SHAPES)) {
  const parts = make(SIZE);
  for (let i = 0; i < 3; i++) contentCost(parts); // warm up
  const r = contentCost(parts);
  process.stdout.write(`  ${name.padEnd(52)} normalise ${r.text.toFixed(2).padStart(6)}   secrets cold ${r.coldSecrets.toFixed(2).padStart(6)} warm ${r.warmSecrets.toFixed(2).padStart(6)}   everything cold ${r.cold.toFixed(2).padStart(6)} warm ${r.warm.toFixed(2).padStart(6)}   (${r.spans} decoded spans${r.truncated ? ', truncated' : ''})\n`);
}
const parts = SHAPES['prose (ASCII)']!(SIZE);
for (let i = 0; i < 3; i++) decisionCost(bigDlp, parts, false), decisionCost(plain, parts, false);
process.stdout.write(`decision on the prose prompt, cold: DLP library policy ${decisionCost(bigDlp, parts, false).toFixed(2)} ms, one plain regex rule ${decisionCost(plain, parts, false).toFixed(2)} ms\n`);
process.stdout.write(`decision on the prose prompt, warm: DLP library policy ${decisionCost(bigDlp, parts, true).toFixed(2)} ms, one plain regex rule ${decisionCost(plain, parts, true).toFixed(2)} ms\n`);
{
  // A short prompt, as most calls are: the finder's fixed cost per call.
  const short = ['Summarise the quarterly report in three lines'];
  const principal = { user: 'bench', teams: [], groups: [], roles: [], authMethod: 'api_key' as const };
  const run = (policy: Policy) => {
    const t = process.cpuUsage();
    for (let i = 0; i < 2000; i++) simulate({ policy, principal, request: { messages: short.map((content) => ({ role: 'user' as const, content })), maxTokens: 256 }, usage: {}, now: Date.now() });
    const u = process.cpuUsage(t);
    return (u.user + u.system) / 2000;
  };
  run(bigDlp);
  run(plain);
  process.stdout.write(`decision on a 45-character prompt: DLP library policy ${run(bigDlp).toFixed(1)} µs, one plain regex rule ${run(plain).toFixed(1)} µs\n`);
}
const mb = SHAPES['source code with hashes and base64']!(1_000_000);
const r = contentCost(mb);
process.stdout.write(`1,000,000-character source-code prompt: cold ${r.cold.toFixed(2)} ms, warm ${r.warm.toFixed(2)} ms (${r.spans} decoded spans${r.truncated ? ', truncated' : ''})\n`);
process.stdout.write(`message cache: ${contentCaches.parts.size} entries, ${contentCaches.parts.hits} hits, ${contentCaches.parts.misses} misses\n`);
