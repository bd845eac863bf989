/**
 * tollgate as an A2A agent: an Agent Card at /.well-known/agent-card.json (card.ts) and JSON-RPC at
 * /a2a, in A2A v1.0 (SendMessage, SendStreamingMessage, GetTask, CancelTask) and v0.3
 * (message/send, message/stream, tasks/get, tasks/cancel), which the SDK translates to and from
 * v1.0 around the same handler, executor and task store. Each message is one completion
 * through the same gateway as MCP, charged to the caller named by the bearer credential. The
 * reply is a task whose artifact is the text; a refusal is a failed task whose status message
 * starts with the tollgate code and whose metadata carries the error.
 */
import { Role, TaskState, type Message, type Part, type SendMessageRequest, type Task } from '@a2a-js/sdk';
import type { AgentExecutionEvent, AgentExecutor, ExecutionEventBus, RequestContext, ServerCallContext, TaskStore, User } from '@a2a-js/sdk/server';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { textArgument } from '../call/request.js';
import { asGatewayError, GatewayError } from '../errors.js';
import type { CallResult, Gateway } from '../gateway/gateway.js';
import { ownerKey, type Principal } from '../identity/principal.js';
import type { CallArguments, Credential } from '../pipeline/context.js';
import { A2A_PATH, agentCard, CARD_PATH, loadV03Card, RESULT_META_KEY, v03Card, v1Card } from './card.js';
import { checkEnvelope } from './envelope.js';
import { installSdkLog, withSdkLog, type SdkLogScope } from './sdkLog.js';
import { BoundedTaskStore, ERROR_META_KEY } from './taskStore.js';

export { A2A_PATH, ERROR_META_KEY, RESULT_META_KEY };

export interface A2AOptions {
  /** The app's bearer middleware for this transport: the same verifier, and so the same identities, as /mcp. */
  requireAuth: RequestHandler;
  /** The app's JSON body parser, with its size limit. */
  json: RequestHandler;
  /** Runs after the body parser: records and ends a request whose client left before its body was read. */
  unread: RequestHandler;
  /** Runs before the SDK's JSON-RPC handler: records each JSON-RPC error it answers as a refusal. */
  rpcErrors: RequestHandler;
  version: string;
  /** What the bearer middleware verified: the principal, and the credential to hand the gateway. */
  callerOf: (req: Request) => { principal: Principal; credential: Credential } | undefined;
  /** Where tasks are kept across restarts (`tasks.jsonl`); none keeps them in memory only. */
  dataDir?: string;
  /**
   * The task store, in place of the bounded one `dataDir` describes. The app never sets it; a test
   * passes a store that fails, to see what the route records when the SDK's stream faults midway.
   */
  taskStore?: TaskStore;
}

/** The verified caller, handed by the express layer to the executor through the SDK's context. */
class GatewayUser implements User {
  constructor(
    readonly principal: Principal,
    readonly credential: Credential,
    /** Aborted when the HTTP client goes away before its response is finished. */
    readonly disconnected: AbortSignal,
    /** The HTTP request's id (its `x-request-id`): the call it carries is recorded under it. */
    readonly requestId: string,
  ) {}

  get isAuthenticated(): boolean {
    return true;
  }

  /** Tasks are stored per owner (credential, user, actor chain), so one caller never reads another's. */
  get userName(): string {
    return ownerKey(this.principal);
  }
}

/** Execution events as the SDK's `AgentEvent` factories build them (kept local so the SDK's server loads lazily). */
const event = {
  task: (data: Task): AgentExecutionEvent => ({ kind: 'task', data }),
  statusUpdate: (data: Extract<AgentExecutionEvent, { kind: 'statusUpdate' }>['data']): AgentExecutionEvent => ({ kind: 'statusUpdate', data }),
  artifactUpdate: (data: Extract<AgentExecutionEvent, { kind: 'artifactUpdate' }>['data']): AgentExecutionEvent => ({ kind: 'artifactUpdate', data }),
};

function textPart(text: string): Part {
  return { content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' };
}

function agentMessage(text: string, taskId: string, contextId: string): Message {
  return { messageId: randomUUID(), contextId, taskId, role: Role.ROLE_AGENT, parts: [textPart(text)], metadata: undefined, extensions: [], referenceTaskIds: [] };
}

/**
 * The texts of a message's parts. A part of another kind (a file by `url` or `raw` bytes, `data`,
 * or none A2A v1.0 knows, such as a v0.3 `file`) is refused naming it, as the other ways in refuse
 * an image part: completing the text without it would answer another question than the one asked.
 */
function partTexts(parts: Part[]): string[] {
  return parts.map((part, i) => {
    if (part.content?.$case === 'text') return part.content.value;
    const kind = part.content ? `${part.content.$case} parts are` : 'a part with none of text, raw, url or data is';
    throw new GatewayError('INVALID_REQUEST', `message.parts.${i}: ${kind} not supported by tollgate; only text parts go through.`);
  });
}

/**
 * The call's arguments from an A2A message: its text parts are the prompt, its metadata (or the
 * request's) the options. Read by the pipeline's validate step, so a message without text, or
 * with a part that is not text, is refused with an event like any other bad request.
 */
function completionArgs(ctx: RequestContext): CallArguments {
  return {
    raw: ctx,
    modelNamesTier: true,
    decode: () => {
      const message = ctx.userMessage;
      const texts = partTexts(message.parts);
      if (!texts.join('').trim()) throw new GatewayError('INVALID_REQUEST', 'The message has no text part to complete.');
      const meta: Record<string, unknown> = { ...ctx.request.metadata, ...message.metadata };
      // Several text parts stay parts, so content rules read each seam between them.
      const prompt = textArgument(texts)!;
      const asked = typeof prompt === 'string' ? { prompt } : { messages: [{ role: 'user' as const, content: prompt }] };
      return { ...asked, system: meta.system, model: meta.model, tier: meta.tier, max_tokens: meta.max_tokens, temperature: meta.temperature };
    },
  };
}

/** Runs each A2A message through the gateway and reports it as task events. */
class CompletionExecutor implements AgentExecutor {
  private readonly running = new Map<string, AbortController>();

  constructor(private readonly gateway: Gateway) {}

  cancelTask = async (taskId: string): Promise<void> => {
    this.running.get(taskId)?.abort();
  };

  execute = async (ctx: RequestContext, bus: ExecutionEventBus): Promise<void> => {
    const { taskId, contextId } = ctx;
    const now = () => new Date().toISOString();
    const status = (state: TaskState, metadata?: Record<string, unknown>, text?: string) =>
      bus.publish(
        event.statusUpdate({ taskId, contextId, status: { state, message: text === undefined ? undefined : agentMessage(text, taskId, contextId), timestamp: now() }, metadata }),
      );
    if (!ctx.task) {
      const task: Task = { id: taskId, contextId, status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: now() }, artifacts: [], history: [ctx.userMessage], metadata: undefined };
      bus.publish(event.task(task));
    }
    const cancel = new AbortController();
    this.running.set(taskId, cancel);
    try {
      const user = ctx.context.user;
      if (!(user instanceof GatewayUser)) throw new GatewayError('AUTH_REQUIRED', 'No credential was presented; send an API key or token.');
      status(TaskState.TASK_STATE_WORKING);
      const artifactId = randomUUID();
      let chunks = 0;
      const result: CallResult = await this.gateway.complete({
        credential: user.credential,
        transport: 'a2a',
        requestId: user.requestId,
        args: completionArgs(ctx),
        signal: AbortSignal.any([user.disconnected, cancel.signal]),
        onText: (delta) => {
          const artifact = { artifactId, name: 'completion', description: '', parts: [textPart(delta)], metadata: undefined, extensions: [] };
          bus.publish(event.artifactUpdate({ taskId, contextId, artifact, append: chunks++ > 0, lastChunk: false, metadata: undefined }));
        },
      });
      // The last update replaces the streamed pieces with the whole text, so the stored task holds one part.
      const artifact = { artifactId, name: 'completion', description: '', parts: [textPart(result.text)], metadata: undefined, extensions: [] };
      bus.publish(event.artifactUpdate({ taskId, contextId, artifact, append: false, lastChunk: true, metadata: undefined }));
      const { text: _text, ...summary } = result;
      status(TaskState.TASK_STATE_COMPLETED, { [RESULT_META_KEY]: summary });
    } catch (err) {
      const ge = asGatewayError(err);
      const state = ge.code === 'CANCELLED' ? TaskState.TASK_STATE_CANCELED : TaskState.TASK_STATE_FAILED;
      status(state, { [ERROR_META_KEY]: ge.toJSON() }, `${ge.code}: ${ge.message}`);
    } finally {
      this.running.delete(taskId);
    }
  };
}

/**
 * Aborted when the client goes away before the response is finished, so the call is cancelled and
 * its upstream request aborted. Attached when the request arrives (`a2aRouter`), before the bearer
 * check, the body and the SDK's first load are awaited; one attached to a connection that closed
 * already is aborted from the start.
 */
function abortOnClose(res: Response): AbortSignal {
  const ac = new AbortController();
  const closed = (): void => {
    if (!res.writableFinished) ac.abort();
  };
  if (res.closed) closed();
  else res.once('close', closed);
  return ac.signal;
}

/** The request's disconnect signal, as the first middleware of the route made it. */
function disconnectedOf(res: Response): AbortSignal {
  return (res.locals.signal as AbortSignal | undefined) ?? abortOnClose(res);
}

/**
 * Where the SDK's output while serving this request goes: a child of the gateway's logger bound to
 * the request's id (the id its decision event carries, if it is refused), made only if the SDK
 * prints. A fault logged there is marked on the response (`faultLogged`), so that the edge records
 * the 500 that follows without logging it again (edgeRefusals.ts).
 */
function sdkLogScope(parent: Logger, res: Response): SdkLogScope {
  let log: Logger | undefined;
  return {
    get logger() {
      return (log ??= parent.child({ requestId: res.locals.requestId as string, transport: 'a2a' }));
    },
    faultLogged: () => {
      res.locals.faultLogged = true;
    },
  };
}

/**
 * Why a message naming a task (`message.taskId`) may not continue it, if it may not. A task takes
 * one message: tollgate never asks for more input, so a task is running or finished. The SDK
 * refuses a message to a finished task (-32004) but runs one to a running task as a second call on
 * it, charged again, racing the first for the task's state and leaving CancelTask waiting on the
 * call it cannot abort; that message is refused the same way.
 */
async function stillRunning(tasks: TaskStore, params: SendMessageRequest, context: ServerCallContext): Promise<string | undefined> {
  const taskId = params.message?.taskId;
  const state = taskId ? (await tasks.load(taskId, context))?.status?.state : undefined;
  if (state !== TaskState.TASK_STATE_SUBMITTED && state !== TaskState.TASK_STATE_WORKING) return undefined;
  return `Task ${taskId} is still running: tollgate takes one message per task. Send the message without a taskId to start a new task.`;
}

/** The SDK's JSON-RPC handler over our executor; its server code is imported on first use or by `prepare`. */
async function jsonRpc(gateway: Gateway, opts: A2AOptions): Promise<RequestHandler> {
  const [{ DefaultRequestHandler, JsonRpcTransportHandler }, { jsonRpcHandler }, { UnsupportedOperationError }] = await Promise.all([
    import('@a2a-js/sdk/server'),
    import('@a2a-js/sdk/server/express'),
    import('@a2a-js/sdk/errors'),
  ]);
  installSdkLog((error) => JsonRpcTransportHandler.mapToJSONRPCError(error));
  const warn = (message: string, fields?: Record<string, unknown>) => gateway.logger.warn({ ...fields, event: 'a2a_tasks' }, message);
  const tasks = opts.taskStore ?? new BoundedTaskStore(undefined, opts.dataDir ? { dir: opts.dataDir, warn } : undefined);
  const refuseRunning = async (params: SendMessageRequest, context: ServerCallContext) => {
    const running = await stillRunning(tasks, params, context);
    if (running) throw new UnsupportedOperationError(running);
  };
  const handler = new (class OneMessagePerTask extends DefaultRequestHandler {
    override async sendMessage(params: SendMessageRequest, context: ServerCallContext) {
      await refuseRunning(params, context);
      return super.sendMessage(params, context);
    }

    override async *sendMessageStream(params: SendMessageRequest, context: ServerCallContext) {
      await refuseRunning(params, context);
      yield* super.sendMessageStream(params, context);
    }
  })(agentCard(gateway.policy, '', opts.version), tasks, new CompletionExecutor(gateway));
  return jsonRpcHandler({
    requestHandler: handler,
    // A request without A2A-Version, or with 0.3, is A2A v0.3: the SDK translates it to and from v1.0 around the same handler.
    legacyCompat: { enabled: true },
    userBuilder: async (req) => {
      const caller = opts.callerOf(req);
      if (!caller) throw new GatewayError('AUTH_REQUIRED', 'No credential was presented; send an API key or token.');
      return new GatewayUser(caller.principal, caller.credential, disconnectedOf(req.res!), req.res!.locals.requestId as string);
    },
  });
}

/**
 * Serves the Agent Card (public) and the JSON-RPC endpoint (behind the app's bearer middleware).
 * `prepare` loads the SDK's server code (and its v0.3 card router) now rather than on the first A2A
 * request, whose load would stall every call in flight (about 0.2 s); a server calls it before it
 * listens (main.ts).
 */
export function a2aRouter(gateway: Gateway, opts: A2AOptions): Router & { prepare(): Promise<void> } {
  let rpc: Promise<RequestHandler> | undefined;
  const lazyRpc: RequestHandler = (req, res, next) => {
    rpc ??= jsonRpc(gateway, opts);
    // What the SDK prints while serving this request goes to the gateway's log, refusals without a stack (sdkLog.ts).
    rpc.then((h) => withSdkLog(sdkLogScope(gateway.logger, res), () => h(req, res, next)), next);
  };
  const router = Router();
  // The v0.3 card to a request without A2A-Version or asking for 0.3, else the v1.0 card (card.ts).
  router.use(CARD_PATH, v03Card(gateway.policy, opts.version));
  router.get(CARD_PATH, v1Card(gateway.policy, opts.version));
  // The request's id (its `x-request-id`, carried by its call's or its refusal's event and the SDK's log records) and its disconnect signal, before anything is awaited.
  const begin: RequestHandler = (_req, res, next) => {
    const id = randomUUID();
    res.locals.requestId = id;
    res.setHeader('x-request-id', id);
    res.locals.signal = abortOnClose(res);
    next();
  };
  // A body that is not a JSON-RPC request, or names no A2A method, gets JSON-RPC's code rather than the SDK's -32602 (envelope.ts).
  router.use(A2A_PATH, begin, opts.requireAuth, opts.json, opts.unread, opts.rpcErrors, checkEnvelope, lazyRpc);
  return Object.assign(router, { prepare: async () => void (await Promise.all([(rpc ??= jsonRpc(gateway, opts)), loadV03Card()])) });
}
