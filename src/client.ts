/**
 * `tollgate call`: a small MCP client for trying a running gateway from a terminal, and the
 * quickest way to see a decision (allow, tier_down, deny) with its reason.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

export interface CallOptions {
  url: string;
  apiKey: string;
  /** `complete` (with prompt), `list_models` or `my_budget`. */
  tool: 'complete' | 'list_models' | 'my_budget';
  prompt?: string;
  tier?: string;
  model?: string;
  maxTokens?: number;
  json: boolean;
}

interface ToolText {
  type: string;
  text?: string;
}

/** Calls one tool and returns what to print and the exit code (0 ok, 1 refused or failed). */
export async function callGateway(opts: CallOptions): Promise<{ out: string; code: number }> {
  const client = new Client({ name: 'tollgate-cli', version: '1' });
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
    requestInit: { headers: { Authorization: `Bearer ${opts.apiKey}` } },
  });
  await client.connect(transport);
  try {
    const args: Record<string, unknown> = {};
    if (opts.tool === 'complete') {
      args.prompt = opts.prompt;
      if (opts.tier) args.tier = opts.tier;
      if (opts.model) args.model = opts.model;
      if (opts.maxTokens) args.max_tokens = opts.maxTokens;
    }
    const result = await client.callTool({ name: opts.tool, arguments: args });
    const text = ((result.content ?? []) as ToolText[]).map((c) => c.text ?? '').join('\n');
    if (result.isError) return { out: text, code: 1 };
    const structured = result.structuredContent as Record<string, unknown> | undefined;
    if (opts.json || opts.tool !== 'complete' || !structured) return { out: JSON.stringify(structured ?? text, null, 2), code: 0 };
    return { out: `${text}\n\n${summary(structured)}`, code: 0 };
  } finally {
    // End the session on the gateway (DELETE) rather than leave it to the idle sweep.
    await transport.terminateSession().catch(() => undefined);
    await client.close();
  }
}

function summary(s: Record<string, unknown>): string {
  const usage = s.usage as { inputTokens: number; outputTokens: number };
  const decision = s.decision as { effect: string; reason: string };
  const budgets = (s.budgets as { id: string; subject: string; unit: string; remaining: number; limit: number; resetsAt: string }[]) ?? [];
  const lines = [
    `-- ${decision.effect}: ${decision.reason}`,
    `-- served by ${String(s.model)} (tier ${String(s.tier)}), ${usage.inputTokens} in / ${usage.outputTokens} out, $${Number(s.costUsd).toFixed(6)}`,
  ];
  for (const b of budgets) {
    const fmt = (n: number) => (b.unit === 'usd' ? `$${n.toFixed(6)}` : `${n} tokens`);
    lines.push(`-- budget ${b.id} (${b.subject}): ${fmt(b.remaining)} of ${fmt(b.limit)} left, resets ${b.resetsAt}`);
  }
  return lines.join('\n');
}
