/**
 * `tollgate mcp-config --client <client>`: the entry an assistant's MCP configuration needs to
 * reach tollgate, in that client's own format. The stdio form names node and this installation's
 * dist/src/cli.js by absolute path (clients start servers from a directory of their choosing); the
 * HTTP form (`--http URL`) carries the key as a bearer token. Formats, as each client documents them:
 * - Claude Desktop (claude_desktop_config.json): `mcpServers`, stdio entries only;
 * - Cursor (.cursor/mcp.json): `mcpServers`, `command` or `url` + `headers`;
 * - VS Code (.vscode/mcp.json): `servers`, each with `type` (`stdio` or `http`), and `inputs` to
 *   prompt for the key;
 * - Claude Code (.mcp.json): `mcpServers`, each with `type` (`stdio` or `http`).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { packageRoot } from '../main.js';
import { CliError } from './exit.js';

export const MCP_CLIENTS = ['claude-desktop', 'cursor', 'vscode', 'claude-code'] as const;
export type McpClient = (typeof MCP_CLIENTS)[number];

/** Where each client reads the printed JSON from. */
export const CONFIG_FILE: Record<McpClient, string> = {
  'claude-desktop': 'claude_desktop_config.json (Settings > Developer > Edit Config), then restart Claude Desktop',
  cursor: '.cursor/mcp.json in the project, or ~/.cursor/mcp.json for every project',
  vscode: '.vscode/mcp.json in the workspace, or the user mcp.json (MCP: Open User Configuration)',
  'claude-code': '.mcp.json at the project root (or: claude mcp add-json <name> \'<the entry>\')',
};

export interface McpConfigOptions {
  client: McpClient;
  /** The gateway's MCP URL: the HTTP form instead of stdio. */
  http?: string;
  /** The caller's tollgate API key; without it VS Code prompts for it and the others get a placeholder. */
  key?: string;
  /** The server's name in the client (default tollgate). */
  name?: string;
  /** A policy for the stdio server (absolute in the entry). */
  policy?: string;
}

const PLACEHOLDER = '<your tollgate API key>';

/** The JSON to merge into the client's configuration file. */
export function mcpConfig(opts: McpConfigOptions): Record<string, unknown> {
  const name = opts.name ?? 'tollgate';
  const vscodePrompt = opts.client === 'vscode' && !opts.key;
  const key = opts.key ?? (vscodePrompt ? '${input:tollgate-api-key}' : PLACEHOLDER);
  let entry: Record<string, unknown>;
  if (opts.http) {
    if (opts.client === 'claude-desktop') {
      throw new CliError("Claude Desktop's configuration file takes stdio servers only: leave out --http to get the stdio entry (a remote server is added in Claude Desktop under Settings > Connectors instead)");
    }
    let url: URL;
    try {
      url = new URL(opts.http);
    } catch {
      throw new CliError(`--http ${opts.http} is not a URL: give the gateway's MCP endpoint, e.g. http://127.0.0.1:8787/mcp`);
    }
    const headers = { Authorization: `Bearer ${key}` };
    entry = opts.client === 'cursor' ? { url: url.href, headers } : { type: 'http', url: url.href, headers };
  } else {
    const cli = join(packageRoot(), 'dist', 'src', 'cli.js');
    if (!existsSync(cli)) throw new CliError(`${cli} does not exist yet: run npm run build in ${packageRoot()} first`);
    const env: Record<string, string> = { TOLLGATE_API_KEY: key };
    if (opts.policy) env.TOLLGATE_POLICY = resolve(opts.policy);
    const stdio = { command: process.execPath, args: [cli, 'stdio'], env };
    entry = opts.client === 'vscode' || opts.client === 'claude-code' ? { type: 'stdio', ...stdio } : stdio;
  }
  const servers = { [name]: entry };
  if (opts.client !== 'vscode') return { mcpServers: servers };
  return vscodePrompt ? { inputs: [{ type: 'promptString', id: 'tollgate-api-key', description: 'Your tollgate API key', password: true }], servers } : { servers };
}
