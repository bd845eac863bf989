/**
 * Screenshots of every console page for the docs (issue 20): starts a gateway on the embedded store
 * (a fresh data directory) with the shipped demo policy (policy/default.yaml) plus one admin API
 * key, makes a handful of calls as the demo users so the pages have data (one refused by a rule,
 * some stepped down by the small budget), signs in through the login form in Debian's headless
 * Chromium and saves a PNG of each page into docs/console/.
 *
 *   npm run screenshots [-- --out docs/console]
 *
 * Not part of `npm test`. Needs /usr/bin/chromium.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { chromium } from 'playwright-core';
import { consoleRoutes } from '../src/console/index.js';
import { buildRuntime, settingsFromEnv, startHttp } from '../src/main.js';
import { memorySink } from '../src/metering/sink.js';
import { parsePolicy } from '../src/policy/load.js';
import { FileJournal } from '../src/quota/fileJournal.js';
import { MemoryQuotaStore } from '../src/quota/memory.js';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'docs/console' } } });
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const adminKey = `tg_shots_${randomBytes(16).toString('hex')}`;
const demo = readFileSync(new URL('../policy/default.yaml', import.meta.url), 'utf8');
const adminEntry = `  - { id: console-admin, sha256: ${createHash('sha256').update(adminKey).digest('hex')}, user: admin, roles: [tollgate-admin] }\n`;
const policyText = demo.replace(/^apiKeys:.*\n/m, (line) => line + adminEntry);
if (policyText === demo) throw new Error('policy/default.yaml has no apiKeys: line to add the admin key to');

async function connect(url: string, key: string): Promise<Client> {
  const client = new Client({ name: 'tollgate-screenshots', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${key}` } } }));
  return client;
}

const work = mkdtempSync(join(tmpdir(), 'tollgate-screenshots-'));
const dataDir = join(work, 'data');
try {
  const { journal, replay } = FileJournal.open({ dir: dataDir });
  const store = new MemoryQuotaStore(Date.now, journal);
  store.restore(replay);
  journal.snapshotSource = () => store.snapshot();
  const settings = settingsFromEnv({ TOLLGATE_PORT: '0', TOLLGATE_LOG_LEVEL: 'silent' });
  settings.dataDir = dataDir;
  const runtime = await buildRuntime(settings, { policy: parsePolicy(policyText, 'policy/default.yaml'), store, sink: memorySink() });
  const routes = consoleRoutes({ gateway: runtime.gateway, host: settings.http.host, keyPrefix: settings.keyPrefix, dataDir, sessionSecret: settings.http.sessionSecret });
  const http = await startHttp(runtime, settings, [routes]);
  try {
    const calls: [string, string, string | undefined][] = [
      ['tg-demo-alice', 'Summarise the quarterly cost report in three bullet points.', 'premium'],
      ['tg-demo-alice', 'Draft a short reply to the vendor about the renewal.', undefined],
      ['tg-demo-alice', 'What is the capital of Australia?', 'economy'],
      ['tg-demo-bob', 'Explain the difference between TCP and UDP.', undefined],
      ['tg-demo-bob', 'Write a limerick about budgets.', 'premium'],
      ['tg-demo-ops', 'List five checks before a production deploy, with a sentence on each.', undefined],
      ['tg-demo-ops', 'Rewrite this runbook step so that a new engineer can follow it without help.', 'premium'],
      ['tg-demo-ops', 'Give me a long checklist for an incident review, with owners and deadlines for each item.', undefined],
      ['tg-demo-ops', 'And one more question after the budget is nearly gone.', undefined],
    ];
    for (const [key, prompt, tier] of calls) {
      const client = await connect(http.url, key);
      const result = await client.callTool({ name: 'complete', arguments: tier ? { prompt, tier } : { prompt } });
      process.stdout.write(`${key} ${tier ?? 'default'}: ${result.isError ? 'refused' : 'served'}\n`);
      await client.close();
    }
    await runtime.gateway.idle();

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    try {
      const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
      await page.goto(`${http.url}/console/login`);
      await page.fill('input[name=key]', adminKey);
      await Promise.all([page.waitForNavigation(), page.click('form.login button')]);
      if (new URL(page.url()).pathname !== '/console') throw new Error(`sign-in did not reach the overview (at ${page.url()})`);
      mkdirSync(values.out!, { recursive: true });
      const pages: [string, string][] = [
        ['overview', '/console?window=month'],
        ['budgets', '/console/budgets'],
        ['refusals', '/console/refusals?window=month'],
        ['keys', '/console/keys'],
        ['policy', '/console/policy'],
      ];
      for (const [name, path] of pages) {
        const response = await page.goto(`${http.url}${path}`);
        if (response?.status() !== 200) throw new Error(`${path} answered ${response?.status()}`);
        if (name === 'overview') await page.waitForSelector('html[data-charts=drawn]');
        const file = join(values.out!, `${name}.png`);
        await page.screenshot({ path: file, fullPage: true });
        process.stdout.write(`saved ${file}\n`);
      }
    } finally {
      await browser.close();
    }
  } finally {
    await http.close();
    await runtime.close();
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
