/**
 * What a request that no route answered is told: NOT_FOUND with the endpoints this gateway serves,
 * and the nearest one when the path looks like a typo of it (`/v1/chat/completion` ->
 * `/v1/chat/completions`) or the path is served for another method.
 */
import type { Request, RequestHandler } from 'express';
import { GatewayError } from '../errors.js';
import type { WireCodec } from './compat.js';
import { sendRefusal } from './respond.js';

/** One endpoint of the HTTP edge, as the 404 lists it. */
export interface Endpoint {
  methods: readonly string[];
  path: string;
}

/** Every endpoint the HTTP edge serves (/metrics only when enabled). */
export const SERVED_ENDPOINTS: readonly Endpoint[] = [
  { methods: ['POST', 'GET', 'DELETE'], path: '/mcp' },
  { methods: ['POST'], path: '/v1/chat/completions' },
  { methods: ['POST'], path: '/v1/responses' },
  { methods: ['POST'], path: '/v1/messages' },
  { methods: ['POST'], path: '/v1/messages/count_tokens' },
  { methods: ['GET'], path: '/v1/models' },
  { methods: ['GET'], path: '/v1/models/{id}' },
  { methods: ['POST'], path: '/v1/tollgate/estimate' },
  { methods: ['GET'], path: '/.well-known/agent-card.json' },
  { methods: ['POST'], path: '/a2a' },
  { methods: ['GET'], path: '/healthz' },
];

/** Levenshtein distance, for "did you mean" (paths are short). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** The served endpoint a request most likely meant, if one is close enough to suggest. */
export function nearestEndpoint(path: string, endpoints: readonly Endpoint[] = SERVED_ENDPOINTS): Endpoint | undefined {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, '') : path;
  let best: { e: Endpoint; d: number } | undefined;
  for (const e of endpoints) {
    const d = distance(trimmed.toLowerCase(), e.path);
    if (!best || d < best.d) best = { e, d };
  }
  // A few edits, and never most of the path: `/nope` is not a typo of `/mcp`.
  if (!best || best.d > Math.max(1, Math.min(3, Math.floor(best.e.path.length / 4)))) return undefined;
  return best.e;
}

/** The NOT_FOUND refusal for `method path`. */
export function notFoundError(method: string, path: string, endpoints: readonly Endpoint[] = SERVED_ENDPOINTS): GatewayError {
  const list = endpoints.map((e) => `${e.methods.join('|')} ${e.path}`).join(', ');
  const near = nearestEndpoint(path, endpoints);
  let hint = '';
  if (near && near.path === path && !near.methods.includes(method)) hint = ` ${near.path} takes ${near.methods.join(' or ')}, not ${method}.`;
  else if (near) hint = ` Did you mean ${near.methods[0]} ${near.path}?`;
  return new GatewayError('NOT_FOUND', `There is no ${method} ${path.slice(0, 200)} on this gateway.${hint} Served: ${list}.`, {
    ...(near ? { suggestion: near.path } : {}),
    endpoints: endpoints.map((e) => e.path),
  });
}

/**
 * The last handler of the app: NOT_FOUND naming the endpoint meant. A request `wireOf` places on a
 * compatible API (an SDK asking for `/v1/files`, say) is told in that API's error shape, with its
 * request id headers, so the SDK raises its own NotFoundError; any other in tollgate's body.
 */
export function answerNotFound(endpoints: readonly Endpoint[], wireOf: (req: Request) => Pick<WireCodec, 'errorBody' | 'prepare'> | undefined = () => undefined): RequestHandler {
  return (req, res) => {
    sendRefusal(res, wireOf(req), notFoundError(req.method, req.path, endpoints));
  };
}
