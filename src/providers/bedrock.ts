/**
 * Amazon Bedrock through the official SDK's Converse and ConverseStream commands, so one adapter
 * serves every Bedrock model that speaks messages. Requests go over HTTP/1.1 (NodeHttpHandler):
 * the SDK's HTTP/2 default is spoken by neither a node:http fake nor many corporate proxies.
 *
 * With `countTokens: true` in the policy, admission can count a call's input before the call
 * through the CountTokens command (POST /model/{modelId}/count-tokens).
 *
 * Usage: Bedrock's `inputTokens` counts only the input that was neither read from nor written to
 * the prompt cache (AWS prompt-caching guide: total input = inputTokens + cacheReadInputTokens +
 * cacheWriteInputTokens). The gateway's `inputTokens` is the whole prompt, so the cache fields are
 * added back, and `cachedInputTokens` is the cache reads.
 */
import { Agent as HttpAgent, type ClientRequestArgs } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import {
  BedrockRuntimeClient,
  BedrockRuntimeServiceException,
  ConverseCommand,
  ConverseStreamCommand,
  CountTokensCommand,
  type ConverseRequest,
  type TokenUsage,
} from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { messageParts } from '../call/request.js';
import { GatewayError } from '../errors.js';
import type { ProviderConfig } from './config.js';
import { assertEgress, providerEndpoint } from './egress.js';
import { afterAnswer, cancelledError, upstreamError } from './errors.js';
import { headGuard, streamAbort } from './fetchSdk.js';
import { atLeastOutput, FRAMING, outputTokenBound, sumOfCounts, unreportedInputTokens } from './estimate.js';
import type { CompletionRequest, CompletionResult, Provider, StopReason, TextListener, Usage, ProviderBuildOptions } from './provider.js';

export type BedrockConfig = Extract<ProviderConfig, { kind: 'bedrock' }>;

/**
 * The HTTP status the Bedrock API reference gives each error. An exception that arrives as an
 * event inside a 200 stream carries no status of its own, so it gets the documented one.
 * ModelStreamErrorException (documented 424, "retry your request") is left out on purpose: it
 * is a stream that broke midway and is reported like a cut stream, which the pipeline retries.
 */
const STATUS_OF: Record<string, number> = {
  AccessDeniedException: 403,
  ValidationException: 400,
  ResourceNotFoundException: 404,
  ModelTimeoutException: 408,
  ModelErrorException: 424,
  ThrottlingException: 429,
  ModelNotReadyException: 429,
  InternalServerException: 500,
  ServiceUnavailableException: 503,
};

/** Socket-level failures: the upstream never answered, or stopped answering. */
const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

function toUsage(u: TokenUsage | undefined): Usage {
  // Figures from the wire: one absent or not a count is not reported (NaN), and chargeableUsage
  // charges it at its bound; an answer whose text came whole is served, not failed, for it.
  if (u === undefined || u === null) return { inputTokens: Number.NaN, outputTokens: Number.NaN };
  const usage: Usage = { inputTokens: sumOfCounts(u.inputTokens, u.cacheReadInputTokens, u.cacheWriteInputTokens), outputTokens: u.outputTokens ?? Number.NaN };
  const read = u.cacheReadInputTokens;
  if (typeof read === 'number' && read > 0 && Number.isFinite(usage.inputTokens)) usage.cachedInputTokens = read;
  return usage;
}

/**
 * A failure after the answer's 2xx head, carried past the SDK's retry strategy: no code, status or
 * cause it would read as transient (the failure itself is `failure`, not `cause`, which it reads too).
 */
class AnsweredFailure extends Error {
  constructor(readonly failure: unknown) {
    super('the answer failed after its head');
    this.name = 'AnsweredFailure';
  }
}

/**
 * Bedrock's stop reason in the gateway's words: it spells end_turn, max_tokens and stop_sequence
 * the same; content_filtered and guardrail_intervened are refusals; a context window reached is a
 * cut; a tool-use turn (never asked for) a finished one.
 */
function stopReasonOf(reason: string | undefined): StopReason | undefined {
  switch (reason) {
    case undefined:
      return undefined;
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return 'max_tokens';
    case 'stop_sequence':
      return 'stop_sequence';
    case 'content_filtered':
    case 'guardrail_intervened':
      return 'refusal';
    default:
      return 'end_turn';
  }
}

function converseInput(req: CompletionRequest): ConverseRequest {
  return {
    modelId: req.model,
    ...(req.system ? { system: [{ text: req.system }] } : {}),
    messages: req.messages.map((m) => ({ role: m.role, content: messageParts(m).map((text) => ({ text })) })),
    inferenceConfig: { maxTokens: req.maxTokens, ...(req.temperature !== undefined ? { temperature: req.temperature } : {}) },
  };
}

export function createBedrockProvider(name: string, config: BedrockConfig, opts: ProviderBuildOptions = {}): Provider {
  const { accessKeyId, secretAccessKey, sessionToken } = config;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new GatewayError('POLICY_INVALID', `Provider "${name}": accessKeyId and secretAccessKey must be given together.`);
  }
  const agents = opts.proxy ? proxyAgents(opts.proxy) : undefined;
  const client = new BedrockRuntimeClient({
    region: config.region,
    // Without keys in the policy the SDK's default chain applies (env, profile, SSO, instance role).
    ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } } : {}),
    // Always an endpoint of the policy's own (the base URL, else the region's): given none, the SDK
    // would take one from AWS_ENDPOINT_URL_BEDROCK_RUNTIME, AWS_ENDPOINT_URL or the FIPS and
    // dual-stack switches of the environment.
    endpoint: providerEndpoint(config),
    maxAttempts: config.maxRetries + 1,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: config.timeoutMs,
      // requestTimeout bounds the wait for response headers; without throwOnRequestTimeout this
      // SDK version only logs a warning. socketTimeout bounds silence inside a long stream.
      requestTimeout: config.timeoutMs,
      throwOnRequestTimeout: true,
      socketTimeout: config.timeoutMs,
      ...(agents ?? {}),
    }),
  });

  const allow = opts.egressAllow;
  if (allow) {
    // Checked on the signed request about to leave, so an endpoint resolved by the SDK (region,
    // FIPS, dual-stack variants) is held to the allowlist as well as the configured one.
    client.middlewareStack.add(
      (next) => async (args) => {
        const r = args.request as { protocol?: string; hostname?: string; port?: number };
        if (r.hostname) assertEgress(name, `${r.protocol ?? 'https:'}//${r.hostname}${r.port ? `:${r.port}` : ''}`, allow);
        return next(args);
      },
      { step: 'finalizeRequest', name: 'tollgateEgressGuard' },
    );
  }

  function fail(err: unknown, req: CompletionRequest, usage?: Usage): GatewayError {
    if (err instanceof GatewayError) return err;
    if (req.signal?.aborted) return cancelledError(name, usage);
    const e = err as { name?: string; message?: string; code?: string };
    const message = (e.message ?? String(err)).split('\n')[0] ?? '';
    if (err instanceof BedrockRuntimeServiceException) {
      const status = err.$metadata?.httpStatusCode ?? STATUS_OF[err.name];
      return upstreamError({ provider: name, status, network: status === undefined, type: err.name, message, usage }, err);
    }
    if (e.name === 'TimeoutError' || (e.code !== undefined && NETWORK_CODES.has(e.code)) || message === 'aborted') {
      return upstreamError({ provider: name, network: true, type: e.name === 'TimeoutError' ? 'timeout' : (e.code ?? 'connection lost'), message, usage }, err);
    }
    // Anything else means Bedrock answered with something the SDK could not read. Another
    // provider may well answer, so it is reported as unavailable rather than a client fault.
    return upstreamError({ provider: name, network: true, type: 'MalformedResponse', message: `unreadable response from Bedrock: ${message}`, usage }, err);
  }

  function checkNotAborted(req: CompletionRequest): void {
    if (req.signal?.aborted) throw cancelledError(name);
  }

  // CountTokens takes the Converse request's messages and system prompt and answers the
  // input tokens Converse would bill. Models without token counting answer ValidationException.
  async function countInput(req: CompletionRequest): Promise<number> {
    checkNotAborted(req);
    const { modelId, messages, system } = converseInput(req);
    let out;
    try {
      out = await client.send(new CountTokensCommand({ modelId, input: { converse: { messages, ...(system ? { system } : {}) } } }), { abortSignal: req.signal });
    } catch (err) {
      throw fail(err, req);
    }
    if (typeof out.inputTokens !== 'number' || !Number.isFinite(out.inputTokens) || out.inputTokens < 0) {
      throw fail(new Error('the CountTokens answer has no inputTokens'), req);
    }
    return out.inputTokens;
  }

  return {
    name,
    kind: 'bedrock',
    baseUrl: providerEndpoint(config),

    ...(config.countTokens ? { countTokens: countInput } : {}),
    ...(config.countTokens === 'always' ? { estimateInput: async (req: CompletionRequest) => ({ tokens: await countInput(req), exact: true }) } : {}),

    async complete(req): Promise<CompletionResult> {
      checkNotAborted(req);
      // A caller who leaves aborts the request until the answer's head arrives; after it, the body is read anyway.
      const upstream = headGuard(req.signal, config.timeoutMs);
      const command = new ConverseCommand(converseInput(req));
      // Below the deserializer: the raw response, its head in and its body not yet read. Only a 2xx
      // head is an answer the provider bills; an error status is read as such.
      command.middlewareStack.add(
        (next) => async (args) => {
          const raw = await next(args);
          const status = (raw.response as { statusCode?: number } | undefined)?.statusCode;
          if (status !== undefined && status >= 200 && status < 300) upstream.answered();
          return raw;
        },
        { step: 'deserialize', priority: 'low', name: 'tollgateAnswered' },
      );
      // Inside the SDK's retry loop, above the deserializer: a body that failed after a 2xx head is
      // an answer Bedrock bills, and is not sent again (a retry would be billed too, and charged once).
      command.middlewareStack.add(
        (next) => async (args) => {
          try {
            return await next(args);
          } catch (err) {
            throw upstream.wasAnswered ? new AnsweredFailure(err) : err;
          }
        },
        { step: 'finalizeRequest', priority: 'low', name: 'tollgateNoRetryAfterAnswer' },
      );
      let out;
      try {
        out = await client.send(command, { abortSignal: upstream.signal });
      } catch (thrown) {
        const err = thrown instanceof AnsweredFailure ? thrown.failure : thrown;
        // No usage on a failed Converse call: Bedrock reports usage only inside a whole answer.
        if (!(err instanceof GatewayError) && req.signal?.aborted) throw cancelledError(name, undefined, upstream.wasAnswered);
        const failure =
          !(err instanceof GatewayError) && upstream.signal.aborted
            ? upstreamError({ provider: name, network: true, type: 'timeout', message: `the answer's body did not arrive within ${config.timeoutMs} ms` }, err)
            : fail(err, req);
        // After the head the answer had been generated whole: Bedrock bills it (dispatch charges its bound).
        throw upstream.wasAnswered ? afterAnswer(failure) : failure;
      } finally {
        upstream.stop();
      }
      const usage = toUsage(out.usage);
      const blocks = out.output?.message?.content;
      // Charged what it reported, else (dispatch) its bound: the answer came, whatever its shape.
      if (!blocks) throw afterAnswer(fail(new Error('the Converse answer has no output message'), req, out.usage ? usage : undefined));
      return {
        text: blocks.map((b) => b.text ?? '').join(''),
        model: req.model,
        usage,
        stopReason: stopReasonOf(out.stopReason),
      };
    },

    async stream(req, onText: TextListener): Promise<CompletionResult> {
      checkNotAborted(req);
      let opened = false;
      let text = '';
      let stopReason: string | undefined;
      let usage: Usage | undefined;
      let listenerError: unknown;
      // What was consumed so far: nothing before the stream opened; afterwards the input (as
      // reported, else bounded) and the output's bound: one token per UTF-8 byte received (a delta
      // may carry many tokens), at most max_tokens.
      // A usage figure before messageStop (a look-alike server's early metadata) is not the last word
      // on the output: the text that arrived is charged at least its bound.
      let usageFinal = false;
      const partial = (): Usage | undefined => {
        if (!opened) return undefined;
        const bound = outputTokenBound(text, req.maxTokens);
        if (!usage) return { inputTokens: unreportedInputTokens(req, FRAMING.bedrock), outputTokens: bound };
        return usageFinal ? usage : atLeastOutput(usage, bound);
      };
      // Our own abort as well as the caller's: a listener that throws must not leave Bedrock generating.
      // The caller's reaches a stream not yet opened a moment late, so a head on the wire is read (streamAbort).
      const ours = new AbortController();
      const caller = streamAbort(req.signal);
      const abortSignal = AbortSignal.any([caller.signal, ours.signal]);
      try {
        const out = await client.send(new ConverseStreamCommand(converseInput(req)), { abortSignal });
        opened = true;
        caller.begin();
        if (!out.stream) throw new Error('the ConverseStream answer has no event stream');
        for await (const event of out.stream) {
          const delta = event.contentBlockDelta?.delta?.text;
          if (delta !== undefined) {
            // Events already buffered keep coming after the caller gave up: their text reaches no one, their stop and usage count.
            if (req.signal?.aborted) continue;
            text += delta;
            try {
              onText(delta);
            } catch (err) {
              listenerError = err;
              ours.abort();
              throw err;
            }
          } else if (event.messageStop) {
            stopReason = event.messageStop.stopReason;
          } else if (event.metadata) {
            usage = toUsage(event.metadata.usage);
            usageFinal = stopReason !== undefined;
          }
        }
      } catch (err) {
        if (listenerError !== undefined && err === listenerError) throw err;
        if (req.signal?.aborted && !(err instanceof GatewayError)) {
          if (stopReason !== undefined && usage !== undefined) return { text, model: req.model, usage: partial()!, stopReason: stopReasonOf(stopReason) };
          throw cancelledError(name, usage && partial(), opened);
        }
        throw fail(err, req, partial());
      } finally {
        caller.stop();
      }
      // A provider that had finished answered the call, whenever the caller left; otherwise it is
      // charged what it reported (the pipeline adds the input bound when that is nothing).
      if (req.signal?.aborted && (stopReason === undefined || usage === undefined)) throw cancelledError(name, usage && partial(), true);
      if (stopReason === undefined || usage === undefined) {
        throw upstreamError({ provider: name, network: true, type: 'IncompleteStream', message: 'the stream ended before its messageStop and metadata events', usage: partial() });
      }
      return { text, model: req.model, usage: partial()!, stopReason: stopReasonOf(stopReason) };
    },
  };
}

/**
 * Agents that reach Bedrock through an HTTP proxy (HTTPS_PROXY style, `http://user:pass@host:port`)
 * by opening a CONNECT tunnel per connection; TLS to Bedrock then runs inside the tunnel, so the
 * proxy never sees the request or the credentials that sign it.
 */
export function proxyAgents(proxyUrl: string): { httpAgent: HttpAgent; httpsAgent: HttpsAgent } {
  const proxy = new URL(proxyUrl);
  if (proxy.protocol !== 'http:') {
    throw new GatewayError('POLICY_INVALID', `The proxy must be an http:// URL (CONNECT tunnel); got ${proxy.protocol}//${proxy.host}.`);
  }
  const tunnel = (options: ClientRequestArgs, done: (err: Error | null, socket: Socket) => void): void =>
    openTunnel(proxy, options.host ?? options.hostname ?? 'localhost', Number(options.port), done);

  class TunnelHttpAgent extends HttpAgent {
    override createConnection(options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): undefined {
      tunnel(options, (err, socket) => callback?.(err, socket));
      return undefined;
    }
  }
  class TunnelHttpsAgent extends HttpsAgent {
    override createConnection(options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): undefined {
      tunnel(options, (err, socket) => {
        if (err) return callback?.(err, socket);
        const host = options.host ?? options.hostname ?? 'localhost';
        callback?.(null, tlsConnect({ ...(options as object), socket, servername: isIP(host) ? undefined : host }));
      });
      return undefined;
    }
  }
  return {
    httpAgent: new TunnelHttpAgent({ keepAlive: true, maxSockets: 50 }),
    httpsAgent: new TunnelHttpsAgent({ keepAlive: true, maxSockets: 50 }),
  };
}

function openTunnel(proxy: URL, host: string, port: number, done: (err: Error | null, socket: Socket) => void): void {
  const target = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
  const socket = netConnect({ host: proxy.hostname.replace(/^\[|\]$/g, ''), port: Number(proxy.port || 80) });
  const auth = proxy.username
    ? `Proxy-Authorization: Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}\r\n`
    : '';
  let head = Buffer.alloc(0);
  const finish = (err: Error | null): void => {
    socket.off('data', onData);
    socket.off('error', finish);
    socket.off('close', onClose);
    if (err) socket.destroy();
    done(err, socket);
  };
  const onClose = (): void => finish(Object.assign(new Error(`proxy ${proxy.host} closed the connection during CONNECT`), { code: 'ECONNRESET' }));
  const onData = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end === -1) return;
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString('latin1'))?.[1];
    const rest = head.subarray(end + 4);
    if (status !== '200') {
      // The proxy's status only: its URL may carry a password.
      return finish(Object.assign(new Error(`proxy ${proxy.host} refused CONNECT to ${target} (HTTP ${status ?? 'garbled'})`), { code: 'ECONNREFUSED' }));
    }
    if (rest.length > 0) socket.unshift(rest);
    finish(null);
  };
  socket.once('connect', () => socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`));
  socket.on('data', onData);
  socket.on('error', finish);
  socket.on('close', onClose);
}
