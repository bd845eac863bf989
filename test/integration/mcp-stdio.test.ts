import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { contractPolicy, mcpContract } from './mcp-contract.js';

mcpContract('stdio', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-stdio-'));
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, contractPolicy());
  return {
    async connect(key) {
      // Each client spawns its own gateway process, as a desktop assistant does. Both share nothing,
      // so each principal's budget is only exercised through its own client in the contract.
      const client = new Client({ name: 'tollgate-test', version: '1.0.0' });
      await client.connect(
        new StdioClientTransport({
          command: process.execPath,
          args: ['--import', 'tsx', 'src/cli.ts', 'stdio', '--policy', policy],
          env: { PATH: process.env.PATH ?? '', TOLLGATE_API_KEY: key, TOLLGATE_LOG_LEVEL: 'warn', TOLLGATE_EVENTS_FILE: join(dir, 'events.jsonl') },
          stderr: 'ignore',
        }),
      );
      return client;
    },
    async close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
