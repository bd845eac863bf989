/**
 * What content rules cost per call: normalising a prompt, building the compact view, decoding
 * base64/hex runs and running the credential finder (src/policy/content.ts), for prompts of a few
 * shapes and sizes; then the whole decision with the shipped DLP policy (`simulate`, which runs
 * decide() and the reservation replay) against a policy whose only rule is a plain regex on the text.
 *
 *   npm run bench:content -- [--size 200000] [--calls 40]
 *
 * Prints CPU milliseconds per call (median of --calls runs, each on a fresh prompt object, so
 * nothing is cached between calls).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PromptContent } from '../../src/policy/content.js';
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
};

function cpuMs(fn: () => void): number {
  const t = process.cpuUsage();
  fn();
  const u = process.cpuUsage(t);
  return (u.user + u.system) / 1000;
}
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function contentCost(parts: string[]): { text: number; all: number; spans: number; truncated: boolean } {
  const text: number[] = [];
  const all: number[] = [];
  let last: PromptContent | undefined;
  for (let i = 0; i < CALLS; i++) {
    text.push(cpuMs(() => void new PromptContent(parts).text));
    const c = new PromptContent(parts);
    all.push(cpuMs(() => void [c.text, c.compactText, c.decodedSpans, c.secrets]));
    last = c;
  }
  return { text: median(text), all: median(all), spans: last!.decodedSpans.length, truncated: last!.decodedTruncated };
}

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

function decisionCost(policy: Policy, parts: string[]): number {
  const principal = { user: 'bench', teams: [], groups: [], roles: [], authMethod: 'api_key' as const };
  const xs: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    xs.push(cpuMs(() => void simulate({ policy, principal, request: { messages: parts.map((content) => ({ role: 'user' as const, content })), maxTokens: 256 }, usage: {}, now: Date.now() })));
  }
  return median(xs);
}

process.stdout.write(`content of a ${SIZE.toLocaleString('en')}-character prompt, CPU ms per call (median of ${CALLS}):\n`);
for (const [name, make] of Object.entries(SHAPES)) {
  const parts = make(SIZE);
  for (let i = 0; i < 3; i++) contentCost(parts); // warm up
  const r = contentCost(parts);
  process.stdout.write(`  ${name.padEnd(52)} normalise ${r.text.toFixed(2).padStart(6)}   everything ${r.all.toFixed(2).padStart(6)}   (${r.spans} decoded spans${r.truncated ? ', truncated' : ''})\n`);
}
const parts = SHAPES['prose (ASCII)']!(SIZE);
for (let i = 0; i < 3; i++) decisionCost(bigDlp, parts), decisionCost(plain, parts);
process.stdout.write(`decision on the prose prompt: DLP library policy ${decisionCost(bigDlp, parts).toFixed(2)} ms, one plain regex rule ${decisionCost(plain, parts).toFixed(2)} ms\n`);
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
process.stdout.write(`1,000,000-character source-code prompt: everything ${r.all.toFixed(2)} ms (${r.spans} decoded spans${r.truncated ? ', truncated' : ''})\n`);
