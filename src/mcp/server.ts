/**
 * The MCP face of the gateway: tools `complete`, `estimate`, `list_models` and `my_budget`. A Server is never
 * shared between clients (sharing leaks responses between them): stdio makes one for its one
 * client, the HTTP edge one per request. Refusals come back as tool errors (`isError`) with the
 * stable code first in the text and in `_meta`.
 */
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import {
  CallToolRequestParamsSchema,
  ErrorCode,
  ListToolsRequestSchema,
  McpError,
  type CallToolRequest,
  type CallToolResult,
  type ServerNotification,
  type ServerRequest,
  type Tool,
} from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { asGatewayError, GatewayError } from '../errors.js';
import type { BudgetView } from '../call/budget.js';
import type { EstimateResult, Gateway } from '../gateway/gateway.js';
import type { Credential, TransportName } from '../pipeline/context.js';
import type { StopReason } from '../providers/provider.js';
import { eitherSignal } from '../signals.js';
import { completeArgs, completeResult, estimateResult, listModelsResult, myBudgetResult } from './tools/schemas.js';

export type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

export interface McpServerOptions {
  gateway: Gateway;
  transport: TransportName;
  /**
   * What the caller presented: the bearer token with its edge verification (HTTP) or the start-up
   * credential (stdio). The gateway authenticates it under the call's policy snapshot.
   */
  credentialFor: (extra: ToolExtra) => Credential | undefined;
  version: string;
  /**
   * Called when a tool call has finished, before its answer is sent: with the budgets its result
   * reports (`complete`, `my_budget`), else undefined. The HTTP edge sets budget headers here.
   */
  onCallDone?: (budgets: BudgetView[] | undefined) => Promise<void>;
  /**
   * Aborted when the caller is gone (the HTTP edge: the request's connection closed, possibly before
   * this server was made). Cancels every call of this server, as a notifications/cancelled does one.
   */
  signal?: AbortSignal;
}

/** `_meta` key carrying the machine-readable error of a refused call. */
export const ERROR_META_KEY = 'io.tollgate/error';

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Tool['inputSchema'] {
  const out = z.toJSONSchema(schema, { target: 'draft-7', io }) as Record<string, unknown>;
  delete out.$schema;
  return out as Tool['inputSchema'];
}

const TOOLS: Tool[] = [
  {
    name: 'complete',
    title: 'Complete with a governed model',
    description:
      'Sends messages to a model through the company gateway. The call is charged to your budgets; when a budget runs low it is served one tier down, and it is refused when a budget is exhausted or a policy rule forbids it. Returns the text with the model served, usage, cost and budget remaining.',
    inputSchema: jsonSchema(completeArgs, 'input'),
    outputSchema: jsonSchema(completeResult, 'output'),
  },
  {
    name: 'estimate',
    title: 'Estimate a call before making it',
    description:
      'Takes the same arguments as complete and says what that call would get now, without making it or reserving anything: allowed, served one tier down or refused (with the rule or budget), the model and tier that would serve, the most output it could produce, what it would reserve on each budget, its cost range in USD and what each budget would have left. Plan before you spend.',
    inputSchema: jsonSchema(completeArgs, 'input'),
    outputSchema: jsonSchema(estimateResult, 'output'),
  },
  {
    name: 'list_models',
    title: 'List models and tiers',
    description: 'Lists the model tiers, which ones you may use, and each model\'s price per million tokens.',
    inputSchema: { type: 'object', properties: {} },
    outputSchema: jsonSchema(listModelsResult, 'output'),
  },
  {
    name: 'my_budget',
    title: 'Show my budgets',
    description: 'Shows every budget charged for your calls: used, reserved, remaining, and when the window resets.',
    inputSchema: { type: 'object', properties: {} },
    outputSchema: jsonSchema(myBudgetResult, 'output'),
  },
];

/** A tool result for a refused or failed call. */
export function toolError(err: GatewayError): CallToolResult {
  return {
    isError: true,
    content: [{ type: 'text', text: `${err.code}: ${err.message}` }],
    // A rate-limited call says when to try again where MCP clients look for hints: `_meta.retryAfterMs`.
    _meta: { [ERROR_META_KEY]: err.toJSON(), ...(err.code === 'RATE_LIMITED' ? { retryAfterMs: err.details.retryAfterMs } : {}) },
  };
}

/** The note a `complete` result carries after its text when the answer did not simply finish. */
const STOP_NOTES: Record<Exclude<StopReason, 'end_turn'>, string> = {
  max_tokens: '[stopReason: max_tokens] The answer was cut at max_tokens.',
  stop_sequence: '[stopReason: stop_sequence] The answer ended at a stop sequence.',
  refusal: '[stopReason: refusal] The provider refused to answer.',
};

function ok(data: Record<string, unknown>, text: string): CallToolResult {
  return { content: [{ type: 'text', text }], structuredContent: data };
}

/** On tools/call params whose `arguments` is not an object: the value sent, for the handler to refuse. */
const REJECTED_ARGUMENTS = Symbol('rejectedArguments');
const INVALID_PARAMS = Symbol('invalidParams');
type CallToolParams = CallToolRequest['params'] & { [REJECTED_ARGUMENTS]?: { value: unknown }; [INVALID_PARAMS]?: string };

/**
 * tools/call as the SDK reads it, except for params it would refuse without a call, so without an
 * event: its Protocol answers `arguments` that are not an object (a string, an array, null) with
 * JSON-RPC -32603 (an internal error, for a client's fault), and params without a tool name with
 * -32602, both with a multi-line dump of schema issues. Here such arguments are set aside under
 * REJECTED_ARGUMENTS, and the handler refuses them as INVALID_REQUEST through the pipeline, as it
 * does any other bad argument; params that fail otherwise are replaced by the first issue, under
 * INVALID_PARAMS, which the handler records and answers -32602 in one line.
 */
const callToolRequest = z.looseObject({
  method: z.literal('tools/call'),
  params: z.unknown().optional().transform((params): unknown => {
    const args = (params as { arguments?: unknown } | null | undefined)?.arguments;
    if (args !== undefined && (typeof args !== 'object' || args === null || Array.isArray(args))) {
      return { ...(params as object), arguments: undefined, [REJECTED_ARGUMENTS]: { value: args } };
    }
    const parsed = CallToolRequestParamsSchema.safeParse(params);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0]!;
    return { name: '', [INVALID_PARAMS]: `${['params', ...issue.path.map(String)].join('.')}: ${issue.message}` };
  }),
});

/**
 * The SDK's Server builds its own Ajv instance unless given one: about 90 µs and several KB per
 * session, for a validator a tools-only server never uses (it checks elicitation schemas). One is
 * shared by every session.
 */
let sharedValidator: AjvJsonSchemaValidator | undefined;

/** Builds a fresh MCP Server bound to the gateway. */
export function createMcpServer(opts: McpServerOptions): Server {
  sharedValidator ??= new AjvJsonSchemaValidator();
  const server = new Server({ name: 'tollgate', version: opts.version }, { capabilities: { tools: {} }, jsonSchemaValidator: sharedValidator });
  server.setRequestHandler(ListToolsRequestSchema, async (req) => {
    // Every tool fits one page, so no cursor is ever given out: one sent is not ours (MCP
    // pagination: invalid cursors SHOULD get -32602), and serving the first page again would
    // list the same tools twice to a client that follows it.
    const cursor = req.params?.cursor;
    if (cursor !== undefined) {
      const named = cursor.length > 100 ? `${cursor.slice(0, 100)}… (${cursor.length} characters)` : cursor;
      throw new McpError(ErrorCode.InvalidParams, `Invalid params: unknown cursor ${JSON.stringify(named)}; tools/list has one page, asked for without a cursor.`);
    }
    return { tools: TOOLS };
  });
  server.setRequestHandler(callToolRequest, async (req, extra): Promise<CallToolResult> => {
    const params = req.params as CallToolParams;
    const name = params.name;
    /** A refused call like any other: recorded as the caller's (the answer stays the protocol's -32602). */
    const refuseParams = (reason: string, answer: string): never => {
      let credential: Credential | undefined;
      try {
        credential = opts.credentialFor(extra);
      } catch {
        credential = undefined;
      }
      void opts.gateway.refuse(new GatewayError('INVALID_REQUEST', reason), { transport: opts.transport, credential });
      throw new McpError(ErrorCode.InvalidParams, answer);
    };
    const invalid = params[INVALID_PARAMS];
    if (invalid !== undefined) refuseParams(`Invalid tools/call params: ${invalid}.`, `Invalid params: ${invalid}`);
    if (!TOOLS.some((t) => t.name === name)) {
      const named = name.length > 200 ? `${name.slice(0, 200)}… (${name.length} characters)` : name;
      refuseParams(`Unknown tool: ${named}; the tools are ${TOOLS.map((t) => t.name).join(', ')}.`, `Unknown tool: ${name}`);
    }
    const rejected = params[REJECTED_ARGUMENTS];
    // list_models and my_budget take no arguments and run no call: there is nothing to record.
    if (rejected && name !== 'complete' && name !== 'estimate') throw new McpError(ErrorCode.InvalidParams, 'Invalid params: tools/call arguments must be an object.');
    const raw = rejected ? rejected.value : params.arguments;
    // The budgets the answer reports, when it reports any; handed to onCallDone before answering.
    let budgets: BudgetView[] | undefined;
    try {
      const credential = opts.credentialFor(extra);
      if (name === 'estimate') {
        const estimate = await opts.gateway.estimate({ credential, args: { raw }, transport: opts.transport, signal: extra.signal });
        return ok({ ...estimate }, estimateText(estimate));
      }
      if (name !== 'complete') {
        const { principal } = await opts.gateway.authenticate(credential, { transport: opts.transport });
        if (name === 'list_models') {
          const tiers = opts.gateway.listModels(principal);
          const lines = tiers.map((t) => `${t.tier}${t.allowed ? '' : ' (not for you)'}: ${t.models.map((m) => m.model).join(', ')}`);
          return ok({ tiers }, lines.join('\n'));
        }
        budgets = await opts.gateway.myBudget(principal);
        const lines = budgets.map((b) => `${b.id} (${b.scope} ${b.subject}): ${b.remaining} of ${b.limit} ${b.unit} left, resets ${b.resetsAt}`);
        return ok({ user: principal.user, budgets }, lines.length ? lines.join('\n') : 'No budget applies to you.');
      }
      const progressToken = extra._meta?.progressToken;
      let progress = 0;
      const onText =
        progressToken === undefined
          ? undefined
          : (delta: string) => {
              progress += 1;
              void extra
                .sendNotification({ method: 'notifications/progress', params: { progressToken, progress, message: delta } })
                .catch(() => undefined);
            };
      const signal = opts.signal ? eitherSignal(extra.signal, opts.signal) : extra.signal;
      const result = await opts.gateway.complete({ credential, args: { raw }, transport: opts.transport, signal, onText });
      budgets = result.budgets;
      const answer = ok({ ...result }, result.text);
      // An answer that did not simply finish says so next to its text, for hosts that show only text.
      if (result.stopReason !== 'end_turn') answer.content.push({ type: 'text', text: STOP_NOTES[result.stopReason] });
      return answer;
    } catch (err) {
      return toolError(asGatewayError(err));
    } finally {
      await opts.onCallDone?.(budgets).catch(() => undefined);
    }
  });
  return server;
}

/** The estimate in one line for the tool's text content. */
function estimateText(e: EstimateResult): string {
  const d = e.decision;
  if (d.effect === 'deny') return `Would be refused (${d.code}): ${d.reason}`;
  const cost = e.costUsd ? `, $${e.costUsd.min.toFixed(6)} to $${e.costUsd.max.toFixed(6)}` : '';
  return `Would be served by ${e.model} (tier ${d.tier}${d.effect === 'tier_down' ? ', one or more tiers down' : ''}), up to ${e.maxTokens} output tokens${cost}: ${d.reason}`;
}
