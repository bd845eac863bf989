/**
 * Assistant configurations that work (issue 18 item 7): the repo's mcp.json, as shipped, starts
 * tollgate from a clone after `npm run build` and the official MCP client lists its tools; and
 * `tollgate mcp-config` prints each client's own format, whose stdio entry starts tollgate from any
 * directory.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { mcpConfig } from '../../src/cli/mcpConfig.js';
import { packageRoot } from '../../src/main.js';

const root = packageRoot();
const cli = join(root, 'dist', 'src', 'cli.js');

interface StdioEntry {
  command: string;
  args: string[];
  env?: Record<string, string>;
}

/** Starts `entry` as a client would, from `cwd`, and lists the tools. */
async function toolsOf(entry: StdioEntry, cwd: string): Promise<string[]> {
  const client = new Client({ name: 'mcp-config-test', version: '1.0.0' });
  await client.connect(new StdioClientTransport({ command: entry.command, args: entry.args, env: { PATH: process.env.PATH ?? '', TOLLGATE_LOG_LEVEL: 'error', ...entry.env }, cwd, stderr: 'ignore' }));
  try {
    return (await client.listTools()).tools.map((t) => t.name);
  } finally {
    await client.close();
  }
}

// `npm run build` as the README says (incremental: a second build with nothing changed does nothing).
beforeAll(() => {
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'ignore', timeout: 600_000 });
}, 600_000);

describe("the repo's mcp.json", () => {
  it('starts tollgate over stdio from a clone, without edits, and the official client lists the tools', async () => {
    const shipped = JSON.parse(readFileSync(join(root, 'mcp.json'), 'utf8')) as { mcpServers: Record<string, StdioEntry & { type?: string; url?: string }> };
    const tools = await toolsOf(shipped.mcpServers.tollgate!, root);
    expect(tools).toEqual(expect.arrayContaining(['complete', 'list_models', 'my_budget']));
    expect(shipped.mcpServers['tollgate-http']).toEqual({ type: 'http', url: 'http://127.0.0.1:8787/mcp', headers: { Authorization: 'Bearer tg-demo-alice' } });
  }, 120_000);
});

describe('tollgate mcp-config', () => {
  it("prints a stdio entry with absolute paths that starts from any directory (Claude Desktop's format)", async () => {
    const config = mcpConfig({ client: 'claude-desktop', key: 'tg-demo-alice' }) as { mcpServers: { tollgate: StdioEntry } };
    expect(config).toEqual({ mcpServers: { tollgate: { command: process.execPath, args: [cli, 'stdio'], env: { TOLLGATE_API_KEY: 'tg-demo-alice' } } } });
    expect(await toolsOf(config.mcpServers.tollgate, tmpdir())).toEqual(expect.arrayContaining(['complete', 'list_models', 'my_budget']));
  }, 120_000);

  it("uses VS Code's servers with a type, and prompts for the key when none is given", () => {
    expect(mcpConfig({ client: 'vscode' })).toEqual({
      inputs: [{ type: 'promptString', id: 'tollgate-api-key', description: 'Your tollgate API key', password: true }],
      servers: { tollgate: { type: 'stdio', command: process.execPath, args: [cli, 'stdio'], env: { TOLLGATE_API_KEY: '${input:tollgate-api-key}' } } },
    });
    expect(mcpConfig({ client: 'vscode', http: 'http://127.0.0.1:8787/mcp', key: 'k' })).toEqual({ servers: { tollgate: { type: 'http', url: 'http://127.0.0.1:8787/mcp', headers: { Authorization: 'Bearer k' } } } });
  });

  it("gives Cursor url + headers and Claude Code type http, and refuses HTTP for Claude Desktop", () => {
    expect(mcpConfig({ client: 'cursor', http: 'https://gw.example.com/mcp', key: 'k' })).toEqual({ mcpServers: { tollgate: { url: 'https://gw.example.com/mcp', headers: { Authorization: 'Bearer k' } } } });
    expect(mcpConfig({ client: 'claude-code', http: 'https://gw.example.com/mcp', key: 'k', name: 'gateway' })).toEqual({
      mcpServers: { gateway: { type: 'http', url: 'https://gw.example.com/mcp', headers: { Authorization: 'Bearer k' } } },
    });
    expect(() => mcpConfig({ client: 'claude-desktop', http: 'https://gw.example.com/mcp' })).toThrow("Claude Desktop's configuration file takes stdio servers only");
  });
});
