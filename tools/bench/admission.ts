/**
 * Admission against a hostile corpus (issue 17 item 1): one-letter words, digits, code, CJK, emoji,
 * base64, 1 MB prompts and ordinary English prose, sent through a real gateway and the official
 * SDKs to the three fake providers billing with a real BPE tokenizer (tools/fake-providers/billing.ts),
 * each call against a tight token budget of its own. Prints, per provider and prompt, what was
 * reserved for the input, what the provider billed, and whether `used` ended above the limit.
 *
 *   npm run bench:admission
 *
 * Budgets: for each prompt, three limits around the call's real cost (billed input + max_tokens):
 * 0.9x (must be refused), 1.02x and 10x (should be admitted; at 10x the bound itself fits for most
 * prompts and no count is made). The policy raises limits.maxInputChars to 2,000,000 for the 1 MB prompts. The figures that matter: calls that left
 * `used` above the limit (must be 0), and over-reservation on prose when admitted (reserved input
 * over billed input, at most 1.3).
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { startFakeAnthropic } from '../fake-providers/anthropic.js';
import { startFakeBedrock } from '../fake-providers/bedrock.js';
import { startFakeOpenAI } from '../fake-providers/openai.js';
import type { FakeProviderServer } from '../fake-providers/types.js';
import { billedInputTokens } from '../fake-providers/billing.js';
import { sha } from '../../test/fixtures/policies.js';
import { connectHttp, startTestGateway } from '../../test/helpers/gateway.js';

const MAX_TOKENS = 16;
const PROVIDERS = [
  { kind: 'openai', ref: 'openai/gpt-5-mini', modelId: 'gpt-5-mini' },
  { kind: 'anthropic', ref: 'anthropic/claude-sonnet-5-5', modelId: 'claude-sonnet-5-5' },
  { kind: 'bedrock', ref: 'bedrock/anthropic.claude-sonnet-4-5-v1:0', modelId: 'anthropic.claude-sonnet-4-5-v1:0' },
] as const;

const PROSE =
  'The committee met on Tuesday to review the quarterly figures. Revenue grew modestly in the northern region, while costs ' +
  'rose faster than expected because of delayed shipments and higher energy prices. After a long discussion, members agreed ' +
  'to postpone the final decision until the external audit is complete, and asked the finance team to prepare two scenarios. ';

function corpus(): Record<string, string> {
  const b64 = randomBytes(150_000).toString('base64');
  return {
    'prose 3 KB': PROSE.repeat(8),
    'prose 40 KB': PROSE.repeat(110),
    'one-letter words 200 KB': 'a '.repeat(100_000),
    'digits 200 KB': Array.from({ length: 200_000 }, (_, i) => String((i * 7) % 10)).join(''),
    'code 100 KB': 'for (let i = 0; i < n; i++) { if (a[i] !== b[i]) return -1; }\n'.repeat(1_600),
    'CJK 150 KB': '自然言語処理の研究は急速に進んでいる。'.repeat(2_700),
    'emoji 100 KB': '😀🎉👍🏽👨‍👩‍👧🏳️‍🌈'.repeat(2_300),
    'base64 200 KB': b64,
    'one-letter words 1 MB': 'a '.repeat(500_000),
    'prose 1 MB': PROSE.repeat(2_750),
  };
}

const policyText = (a: FakeProviderServer, o: FakeProviderServer, b: FakeProviderServer, users: { key: string; user: string }[], limit: number) => `
version: 1
providers:
  anthropic: { kind: anthropic, apiKey: sk-ant-bench, baseUrl: "${a.url}", countTokens: true, timeoutMs: 60000 }
  openai: { kind: openai, apiKey: sk-bench, baseUrl: "${o.url}", timeoutMs: 60000 }
  bedrock: { kind: bedrock, region: us-east-1, accessKeyId: AKIDBENCH, secretAccessKey: secret, baseUrl: "${b.url}", countTokens: true, timeoutMs: 60000 }
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

async function main(): Promise<void> {
  const [anthropic, openai, bedrock] = await Promise.all([startFakeAnthropic({ billing: 'bpe' }), startFakeOpenAI({ billing: 'bpe' }), startFakeBedrock({ billing: 'bpe' })]);
  const rows: Row[] = [];
  const texts = corpus();
  try {
    for (const p of PROVIDERS) {
      for (const [name, prompt] of Object.entries(texts)) {
        // The real cost of the call on this provider, from the fake's own billing rule.
        const billed = await billedInputTokens(p.kind, 'bpe', { messages: [{ content: prompt }] });
        for (const factor of [0.9, 1.02, 10]) {
          const limit = Math.floor((billed + MAX_TOKENS) * factor);
          const user = { key: `key-${p.kind}-${rows.length}`, user: `u${rows.length}` };
          const gw = await startTestGateway(policyText(anthropic, openai, bedrock, [user], limit), { maxBodyBytes: 8 * 1024 * 1024 });
          let client: Client | undefined;
          try {
            client = await connectHttp(gw.mcpUrl, user.key);
            const r = await client.callTool({ name: 'complete', arguments: { model: p.ref, prompt, max_tokens: MAX_TOKENS } }, undefined, { timeout: 300_000 });
            await gw.idle();
            const e = gw.events.at(-1)!;
            const b = ((await client.callTool({ name: 'my_budget', arguments: {} })).structuredContent as { budgets: { used: number; limit: number }[] }).budgets[0]!;
            const code = (r._meta as { 'io.tollgate/error'?: { code: string } } | undefined)?.['io.tollgate/error']?.code;
            rows.push({
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
            });
          } finally {
            await client?.close();
            await gw.close();
          }
        }
      }
    }
  } finally {
    await Promise.all([anthropic.close(), openai.close(), bedrock.close()]);
  }

  const pad = (s: string | number, n: number) => String(s).padStart(n);
  console.log(`${'provider'.padEnd(10)}${'prompt'.padEnd(26)}${pad('limit x', 8)}${pad('outcome', 18)}${pad('bound', 10)}${pad('reserved in', 13)}${pad('billed in', 11)}${pad('used', 9)}  over?`);
  for (const r of rows) {
    console.log(
      `${r.provider.padEnd(10)}${r.prompt.padEnd(26)}${pad(r.factor, 8)}${pad(r.outcome, 18)}${pad(r.bound, 10)}${pad(r.reservedInput ?? '-', 13)}${pad(r.billedInput ?? '-', 11)}${pad(r.used, 9)}  ${r.over ? 'OVER' : 'no'}`,
    );
  }
  const over = rows.filter((r) => r.over).length;
  const served = rows.filter((r) => r.outcome === 'served');
  const prose = served.filter((r) => r.prompt.startsWith('prose') && r.factor < 10);
  const ratios = prose.map((r) => r.reservedInput! / r.billedInput!);
  const wrongRefusals = rows.filter((r) => r.factor >= 1.02 && r.outcome !== 'served').length;
  const wrongAdmits = rows.filter((r) => r.factor < 1 && r.outcome === 'served').length;
  console.log('');
  console.log(`calls: ${rows.length}, served: ${served.length}, refused: ${rows.length - served.length}`);
  console.log(`calls that left used above the limit: ${over}`);
  console.log(`admitted although the real cost exceeds the limit (0.9x): ${wrongAdmits}`);
  console.log(`refused although the real cost fits (1.02x, 10x): ${wrongRefusals}`);
  console.log(`prose admitted on a tight budget (1.02x): reserved input / billed input = ${ratios.map((x) => x.toFixed(3)).join(', ')} (max ${Math.max(...ratios).toFixed(3)})`);
  const bounded = served.filter((r) => r.prompt.startsWith('prose') && r.factor === 10);
  console.log(`prose on a roomy budget (10x; where the bound fits no count is made): reserved / billed = ${bounded.map((r) => (r.reservedInput! / r.billedInput!).toFixed(2)).join(', ')}`);
  if (over > 0 || wrongAdmits > 0) process.exitCode = 1;
}

await main();
