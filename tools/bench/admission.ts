/**
 * Admission against a hostile corpus (issue 17 item 1): one-letter words, digits, code, CJK, emoji,
 * base64, 1 MB prompts and ordinary English prose, sent through a real gateway and the official
 * SDKs to the three fake providers billing with a real BPE tokenizer (tools/fake-providers/billing.ts),
 * each call against a tight token budget of its own. Prints, per provider and prompt, what was
 * reserved for the input, what the provider billed, and whether `used` ended above the limit; then
 * prose on roomy budgets with each provider's counting setting; then the CPU time of each way of
 * figuring the input (byte bound, OpenAI vocabulary bound, exact local count, the count APIs).
 *
 *   npm run bench:admission [-- --prose-file <text file>] [-- --cpu-only]
 *
 * --prose-file: the CPU table's prose (default: the built-in paragraphs); it is cut or repeated to
 * 3 KB, 40 KB and 200 KB.
 *
 * Budgets: for each prompt, three limits around the call's real cost (billed input + max_tokens):
 * 0.9x (must be refused), 1.02x and 10x (should be admitted; at 10x the bound itself fits for most
 * prompts and no count is made). The policy raises limits.maxInputChars to 2,000,000 for the 1 MB prompts. The figures that matter: calls that left
 * `used` above the limit (must be 0), and over-reservation on prose when admitted (reserved input
 * over billed input, at most 1.3).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { startFakeAnthropic } from '../fake-providers/anthropic.js';
import { startFakeBedrock } from '../fake-providers/bedrock.js';
import { startFakeOpenAI } from '../fake-providers/openai.js';
import type { FakeProviderServer } from '../fake-providers/types.js';
import { billedInputTokens } from '../fake-providers/billing.js';
import { createAnthropicProvider } from '../../src/providers/anthropic.js';
import { createBedrockProvider } from '../../src/providers/bedrock.js';
import { boundOpenAIInput, countOpenAIInput, inputTokenBound } from '../../src/providers/estimate.js';
import type { CompletionRequest, Provider } from '../../src/providers/provider.js';
import { sha } from '../../test/fixtures/policies.js';
import { connectHttp, startTestGateway } from '../../test/helpers/gateway.js';

const MAX_TOKENS = 16;
const PROVIDERS = [
  { kind: 'openai', ref: 'openai/gpt-5-mini', modelId: 'gpt-5-mini' },
  { kind: 'anthropic', ref: 'anthropic/claude-sonnet-5-5', modelId: 'claude-sonnet-5-5' },
  { kind: 'bedrock', ref: 'bedrock/anthropic.claude-sonnet-4-5-v1:0', modelId: 'anthropic.claude-sonnet-4-5-v1:0' },
] as const;

/** Ordinary English prose: paragraphs of different registers (a report, a story, a letter, a guide, a review), about 3 KB. */
const PROSE = [
  'The committee met on Tuesday to review the quarterly figures. Revenue grew modestly in the northern region, while costs ' +
    'rose faster than expected because of delayed shipments and higher energy prices. After a long discussion, members agreed ' +
    'to postpone the final decision until the external audit is complete, and asked the finance team to prepare two scenarios.',
  "By the time Margaret reached the harbour, the fog had thickened into something almost solid. She could hear the gulls " +
    "but not see them, and the fishing boats knocked against the pier like restless animals. Her brother had promised to wait " +
    "by the lighthouse; she wasn't surprised to find the bench empty, only a little disappointed that he hadn't left a note.",
  'Dear Mr Okonkwo, thank you for your letter of 14 March and for the detailed account of your experience with our ' +
    'delivery service. I am sorry that the parcel arrived damaged and three weeks late. We have refunded the shipping charge ' +
    'in full, and our warehouse manager has reviewed how fragile items are packed. Please accept the enclosed voucher.',
  'Before you begin, make sure the soil is moist but not waterlogged. Dig a hole roughly twice as wide as the root ball, ' +
    'loosen the roots gently with your fingers, and set the plant so that it sits at the same depth as it did in the pot. ' +
    'Fill the hole, press the earth down firmly, and water generously during the first fortnight, especially in dry weather.',
  "The new museum wing is a quiet triumph. Its architects resisted the temptation to compete with the collection, choosing " +
    "pale stone, generous daylight and long sightlines instead. Visitors wander from medieval tapestries to contemporary " +
    "photography without feeling rushed, and the café, for once, serves coffee worth lingering over. It's well worth a visit.",
  'Historians still argue about why the treaty failed so quickly. Some blame the negotiators, who were exhausted and eager ' +
    'to go home; others point to the harvest of that year, which left several provinces hungry and resentful. What is clear ' +
    'is that nobody expected the agreement to collapse within eighteen months, least of all the people who had signed it.',
  'Our volunteers collected litter along the river every Saturday morning throughout the summer. Altogether they filled ' +
    'more than four hundred bags, recovered two bicycles and a surprisingly intact armchair, and planted sixty young willows ' +
    'along the eroded bank. The council has offered to fund tools and gloves for next year, and new helpers are always welcome.',
].join('\n\n');

function corpus(): Record<string, string> {
  const b64 = randomBytes(150_000).toString('base64');
  return {
    'prose 3 KB': sized(PROSE, 3_000),
    'prose 40 KB': sized(PROSE, 40_000),
    'one-letter words 200 KB': 'a '.repeat(100_000),
    'digits 200 KB': Array.from({ length: 200_000 }, (_, i) => String((i * 7) % 10)).join(''),
    'code 100 KB': 'for (let i = 0; i < n; i++) { if (a[i] !== b[i]) return -1; }\n'.repeat(1_600),
    'CJK 150 KB': '自然言語処理の研究は急速に進んでいる。'.repeat(2_700),
    'emoji 100 KB': '😀🎉👍🏽👨‍👩‍👧🏳️‍🌈'.repeat(2_300),
    'base64 200 KB': b64,
    'one-letter words 1 MB': 'a '.repeat(500_000),
    'prose 1 MB': sized(PROSE, 1_000_000),
  };
}

/** `text` repeated (paragraphs apart) or cut, to about `bytes` bytes, at a word boundary. */
function sized(text: string, bytes: number): string {
  let out = text;
  while (Buffer.byteLength(out) < bytes) out += '\n\n' + text;
  const cut = out.lastIndexOf(' ', bytes);
  return out.slice(0, cut > 0 ? cut : bytes);
}

/** The providers' `countTokens` settings: Anthropic's and Bedrock's (`claude`) and OpenAI's. */
interface Counting {
  claude: 'true' | "'always'";
  openai: 'true' | "'always'";
}

const policyText = (a: FakeProviderServer, o: FakeProviderServer, b: FakeProviderServer, users: { key: string; user: string }[], limit: number, counting: Counting) => `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-bench, baseUrl: "${a.url}", countTokens: ${counting.claude}, timeoutMs: 60000 }
  openai: { kind: openai, apiKey: sk-bench, baseUrl: "${o.url}", countTokens: ${counting.openai}, timeoutMs: 60000 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDBENCH, secretAccessKey: secret, baseUrl: "${b.url}", countTokens: ${counting.claude}, timeoutMs: 60000 }
egress: { allow: ["127.0.0.1"] }
limits: { maxInputChars: 2000000 }
models:
${PROVIDERS.map((p) => `  ${p.ref}: { price: { inputPerMTok: 1, outputPerMTok: 1 } }`).join('\n')}
tiers:
${PROVIDERS.map((p) => `  ${p.kind}: [${p.ref}]`).join('\n')}
apiKeys:
${users.map((u) => `  - { id: ${u.user}, sha256: ${sha(u.key)}, user: ${u.user} }`).join('\n')}
budgets:
  - id: user-tight
    scope: user
    window: { calendar: week, timezone: UTC }
    limit: { tokens: ${limit} }
`;

interface Row {
  counting: string;
  provider: string;
  prompt: string;
  bytes: number;
  factor: number;
  limit: number;
  outcome: string;
  bound: number;
  reservedInput?: number;
  billedInput?: number;
  used: number;
  over: boolean;
}

type Fakes = { anthropic: FakeProviderServer; openai: FakeProviderServer; bedrock: FakeProviderServer };

/** One call through a gateway of its own, against a budget of `factor` times the call's real cost. */
async function runCall(fakes: Fakes, p: (typeof PROVIDERS)[number], name: string, prompt: string, factor: number, counting: Counting, n: number): Promise<Row> {
  // The real cost of the call on this provider, from the fake's own billing rule.
  const billed = await billedInputTokens(p.kind, 'bpe', { messages: [{ content: prompt }] });
  const limit = Math.floor((billed + MAX_TOKENS) * factor);
  const user = { key: `key-${p.kind}-${n}`, user: `u${n}` };
  const gw = await startTestGateway(policyText(fakes.anthropic, fakes.openai, fakes.bedrock, [user], limit, counting), { maxBodyBytes: 8 * 1024 * 1024 });
  let client: Client | undefined;
  try {
    client = await connectHttp(gw.mcpUrl, user.key);
    const r = await client.callTool({ name: 'complete', arguments: { model: p.ref, prompt, max_tokens: MAX_TOKENS } }, undefined, { timeout: 300_000 });
    await gw.idle();
    const e = gw.events.at(-1)!;
    const b = ((await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: { used: number; limit: number }[] }).budgets[0]!;
    const code = (r._meta as { 'io.tollgate/error'?: { code: string } } | undefined)?.['io.tollgate/error']?.code;
    return {
      counting: p.kind === 'openai' ? counting.openai : counting.claude,
      provider: p.kind,
      prompt: name,
      bytes: Buffer.byteLength(prompt),
      factor,
      limit,
      outcome: r.isError ? (code ?? 'error') : 'served',
      bound: e['tollgate.estimated_input_tokens'],
      reservedInput: e['tollgate.reserved_tokens']?.input,
      billedInput: r.isError ? undefined : e['gen_ai.usage.input_tokens'],
      used: b.used,
      over: b.used > b.limit,
    };
  } finally {
    await client?.close();
    await gw.close();
  }
}

const pad = (s: string | number, n: number) => String(s).padStart(n);

function printRows(rows: readonly Row[]): void {
  console.log(`${'provider'.padEnd(10)}${'countTokens'.padEnd(12)}${'prompt'.padEnd(26)}${pad('limit x', 8)}${pad('outcome', 18)}${pad('bound', 10)}${pad('reserved in', 13)}${pad('billed in', 11)}${pad('used', 9)}  over?`);
  for (const r of rows) {
    console.log(
      `${r.provider.padEnd(10)}${r.counting.replaceAll("'", '').padEnd(12)}${r.prompt.padEnd(26)}${pad(r.factor, 8)}${pad(r.outcome, 18)}${pad(r.bound, 10)}${pad(r.reservedInput ?? '-', 13)}${pad(r.billedInput ?? '-', 11)}${pad(r.used, 9)}  ${r.over ? 'OVER' : 'no'}`,
    );
  }
}

const ratio = (r: Row) => (r.reservedInput! / r.billedInput!).toFixed(2);

/** The admission grid and the prose on roomy budgets; exits 1 if a call left `used` above its limit. */
async function admission(): Promise<void> {
  const [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic({ billing: 'bpe' }), startFakeOpenAI({ billing: 'bpe' }), startFakeBedrock({ billing: 'bpe' })]);
  const fakes = { anthropic, openai, bedrock };
  const rows: Row[] = [];
  const roomy: Row[] = [];
  const texts = corpus();
  // The grid runs with each provider's counting as most policies will have it: OpenAI's default
  // ('always'), Anthropic and Bedrock counting when the bound does not fit (true).
  const grid: Counting = { claude: 'true', openai: "'always'" };
  try {
    for (const p of PROVIDERS) {
      for (const [name, prompt] of Object.entries(texts)) {
        for (const factor of [0.9, 1.02, 10]) rows.push(await runCall(fakes, p, name, prompt, factor, grid, rows.length));
      }
    }
    // Prose on roomy budgets (10x), where the byte bound fits: counting only when needed, then on every call.
    for (const counting of [{ claude: 'true', openai: 'true' }, { claude: "'always'", openai: "'always'" }] as const) {
      for (const p of PROVIDERS) {
        for (const name of ['prose 3 KB', 'prose 40 KB', 'prose 1 MB']) roomy.push(await runCall(fakes, p, name, texts[name]!, 10, counting, rows.length + roomy.length));
      }
    }
  } finally {
    await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  }

  printRows(rows);
  const all = [...rows, ...roomy];
  const over = all.filter((r) => r.over).length;
  const served = rows.filter((r) => r.outcome === 'served');
  const prose = served.filter((r) => r.prompt.startsWith('prose') && r.factor < 10);
  const ratios = prose.map((r) => r.reservedInput! / r.billedInput!);
  const wrongRefusals = rows.filter((r) => r.factor >= 1.02 && r.outcome !== 'served').length;
  const wrongAdmits = rows.filter((r) => r.factor < 1 && r.outcome === 'served').length;
  console.log('');
  console.log(`calls: ${rows.length}, served: ${served.length}, refused: ${rows.length - served.length}`);
  console.log(`admitted although the real cost exceeds the limit (0.9x): ${wrongAdmits}`);
  console.log(`refused although the real cost fits (1.02x, 10x): ${wrongRefusals}`);
  console.log(`prose admitted on a tight budget (1.02x): reserved input / billed input = ${ratios.map((x) => x.toFixed(3)).join(', ')} (max ${Math.max(...ratios).toFixed(3)})`);
  console.log('');
  console.log('prose on a roomy budget (10x, the byte bound fits):');
  printRows(roomy);
  for (const r of roomy) if (r.outcome !== 'served') console.log(`  NOT SERVED: ${r.provider} ${r.prompt}`);
  console.log('');
  console.log('reserved / billed on prose (3 KB, 40 KB, 1 MB), roomy budget:');
  for (const p of PROVIDERS) {
    for (const counting of ['true', "'always'"]) {
      const mine = roomy.filter((r) => r.provider === p.kind && r.counting === counting && r.outcome === 'served');
      console.log(`  ${p.kind.padEnd(10)} countTokens ${counting.replaceAll("'", '').padEnd(7)} ${mine.map(ratio).join(', ')}`);
    }
  }
  console.log('');
  console.log(`calls that left used above the limit: ${over} of ${all.length}`);
  if (over > 0 || wrongAdmits > 0 || roomy.some((r) => r.outcome !== 'served')) process.exitCode = 1;
}

/**
 * Process CPU (user + system) and wall time of `f`, in ms: the median of `runs` after one warm-up.
 * `f` gets the run's number (0 for the warm-up), to pick an input made before the clock starts.
 */
async function timed(f: (run: number) => Promise<unknown>, runs = 7): Promise<{ cpu: number; wall: number }> {
  await f(0);
  const cpu: number[] = [];
  const wall: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await f(i + 1);
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  return { cpu: median(cpu), wall: median(wall) };
}

/**
 * CPU per estimate on prose of 3 KB, 40 KB and 200 KB: the byte bound, the OpenAI vocabulary bound
 * (every call with countTokens 'always'), the exact local count, and one request to each count
 * API through the adapter and its SDK. The fakes run in this process and count whitespace words
 * here, so a count request's CPU is the SDK's and the HTTP exchange on both ends.
 */
async function cpuTable(proseText: string): Promise<void> {
  const [anthropic, bedrock] = await Promise.all([startFakeAnthropic(), startFakeBedrock()]);
  const common = { timeoutMs: 60_000, maxRetries: 0 };
  const counters: { name: string; provider: Provider; model: string }[] = [
    { name: 'anthropic count_tokens', provider: createAnthropicProvider('a', { kind: 'anthropic', apiKey: 'sk-ant-bench', baseUrl: anthropic.url, countTokens: true, ...common }), model: 'claude-sonnet-5-5' },
    {
      name: 'bedrock CountTokens',
      provider: createBedrockProvider('b', { kind: 'bedrock', region: 'us-east-1', accessKeyId: 'AKIDBENCH', secretAccessKey: 'secret', baseUrl: bedrock.url, countTokens: true, ...common }),
      model: 'anthropic.claude-sonnet-4-5-v1:0',
    },
  ];
  try {
    const sizes = [3_000, 40_000, 200_000];
    console.log('');
    console.log('CPU per estimate (process user+sys, ms, median of 7 after a warm-up; wall ms for the count APIs):');
    console.log(`${'method'.padEnd(34)}${sizes.map((n) => pad(`${n / 1000} KB`, 16)).join('')}`);
    // Through JSON, as a request's text arrives (a flat string, not the concatenation `sized` built).
    const prompts = sizes.map((n) => JSON.parse(JSON.stringify(sized(proseText, n))) as string);
    // A new messages array per run: the OpenAI bound remembers the texts of one array.
    const req = (text: string, model: string): CompletionRequest => ({ model, messages: [{ role: 'user', content: text }], maxTokens: MAX_TOKENS });
    // The vocabulary bound of a text is remembered by its hash: "new text" bounds a text never seen
    // (a number in front), "resent" the same text again (an equal string, as the history of a
    // conversation arrives again each turn); every input is made before the clock starts.
    const fresh = (t: string) => Array.from({ length: 8 }, (_, i) => JSON.parse(JSON.stringify(`${Math.random()} ${i} ${t}`)) as string);
    const copies = (t: string) => Array.from({ length: 8 }, () => JSON.parse(JSON.stringify(t)) as string);
    const local: [string, (text: string) => Promise<unknown>, boolean][] = [
      ['byte bound', async (t) => inputTokenBound(req(t, 'x')), false],
      ['openai vocabulary bound (o200k)', (t) => boundOpenAIInput(req(t, 'gpt-5-mini'), 'gpt-5-mini'), true],
      ['openai vocabulary bound (cl100k)', (t) => boundOpenAIInput(req(t, 'gpt-4-turbo'), 'gpt-4-turbo'), true],
      ['openai exact count (o200k)', (t) => countOpenAIInput(req(t, 'gpt-5-mini'), 'gpt-5-mini'), false],
    ];
    for (const [name, f, remembered] of local) {
      const cells: string[] = [];
      const resent: string[] = [];
      for (const t of prompts) {
        const texts = fresh(t);
        cells.push(pad((await timed((run) => f(texts[run]!))).cpu.toFixed(3), 16));
        const again = copies(t);
        if (remembered) resent.push(pad((await timed((run) => f(again[run]!))).cpu.toFixed(3), 16));
      }
      console.log(`${(remembered ? `${name}, new text` : name).padEnd(34)}${cells.join('')}`);
      if (remembered) console.log(`${`${name}, resent`.padEnd(34)}${resent.join('')}`);
    }
    for (const c of counters) {
      const cells: string[] = [];
      for (const t of prompts) {
        const m = await timed(() => c.provider.countTokens!(req(t, c.model)));
        cells.push(pad(`${m.cpu.toFixed(2)} / ${m.wall.toFixed(1)}w`, 16));
      }
      console.log(`${c.name.padEnd(34)}${cells.join('')}`);
    }
    const ratios: string[] = [];
    for (const t of prompts) {
      const exact = (await countOpenAIInput(req(t, 'gpt-5-mini'), 'gpt-5-mini'))!;
      const bound = (await boundOpenAIInput(req(t, 'gpt-5-mini'), 'gpt-5-mini'))!;
      ratios.push(`${(bound / exact).toFixed(3)} (bytes ${(inputTokenBound(req(t, 'x'), { perMessage: 4, perRequest: 3 }) / exact).toFixed(2)})`);
    }
    console.log(`${'o200k vocabulary bound / count'.padEnd(34)}${ratios.map((r) => pad(r, 16)).join('  ')}`);
  } finally {
    await Promise.all([anthropic.close(), bedrock.close()]);
  }
}

const { values: args } = parseArgs({ options: { 'prose-file': { type: 'string' }, 'cpu-only': { type: 'boolean' } } });
if (!args['cpu-only']) await admission();
await cpuTable(args['prose-file'] ? readFileSync(args['prose-file'], 'utf8') : PROSE);
