/**
 * What making an object costs by the way it is written, on this Node (issue 21): a ledger line at
 * an amount made by a spread followed by a field, `{ ...line, amount }`, against the same object
 * written out, and the ways in between. On Node 20's V8 the spread-then-field objects get a hidden
 * class of their own each once the code is optimised, which is why the per-call modules do not write
 * them (test/unit/hidden-classes.test.ts). Each case makes the object and reads two fields of it,
 * in a Node of its own (so that no case's inline caches see another's objects).
 *
 *   npx tsx tools/bench/shapes.ts [--ops 1000000] [--rounds 3]
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { lineAt } from '../../src/quota/store.js';

const { values } = parseArgs({ options: { ops: { type: 'string', default: '1000000' }, rounds: { type: 'string', default: '3' }, case: { type: 'string' } } });
const OPS = Number(values.ops);
const ROUNDS = Number(values.rounds);
if (!(Number.isSafeInteger(OPS) && OPS > 0 && Number.isSafeInteger(ROUNDS) && ROUNDS > 0)) throw new Error('--ops and --rounds take whole numbers of at least 1');

const line = { budgetId: 'team-monthly', subject: 'platform', limit: 1_000_000, expiresAt: Date.now() + 40 * 86_400_000, usageKey: 'tg:{team-monthly|platform}:u:1', readKeys: ['tg:{team-monthly|platform}:u:1'], reservedKey: 'tg:{team-monthly|platform}:r', head: '{"budgetId":"team-monthly"' };

type Made = { budgetId: string; amount: number };
/** The line with an amount already, made once: a copy of it only changes a field it has. */
const priced = lineAt(line, 0);
const cases: [string, (i: number) => Made][] = [
  ['{ ...line, amount }', (i) => ({ ...line, amount: i & 7 })],
  ['{ amount, ...line }', (i) => ({ amount: i & 7, ...line })],
  ['Object.assign({}, line, { amount })', (i) => Object.assign({}, line, { amount: i & 7 })],
  ['{ ...priced }, then its amount set', (i) => {
    const o = { ...priced };
    o.amount = i & 7;
    return o;
  }],
  ['lineAt(line, amount): written out', (i) => lineAt(line, i & 7)],
];

/** One case, in this process: the time a make-and-read took, in ns. */
function measure(make: (i: number) => Made): number {
  let sink = 0;
  const t = process.hrtime.bigint();
  for (let i = 0; i < OPS; i++) {
    const o = make(i);
    sink += o.budgetId.length + o.amount;
  }
  const ns = Number(process.hrtime.bigint() - t) / OPS;
  if (sink < 0) throw new Error('unreachable');
  return ns;
}

if (values.case !== undefined) {
  process.stdout.write(`${measure(cases[Number(values.case)]![1]).toFixed(1)}\n`);
} else {
  for (let round = 1; round <= ROUNDS; round++) {
    process.stdout.write(`round ${round} (ns a make-and-read, ${OPS} each)\n`);
    cases.forEach(([name], i) => {
      const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, '--case', String(i), '--ops', String(OPS)], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`case ${name} failed: ${r.stderr}`);
      process.stdout.write(`  ${name.padEnd(40)} ${r.stdout.trim().padStart(8)}\n`);
    });
  }
}
