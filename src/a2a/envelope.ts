/**
 * The JSON-RPC 2.0 envelope of an A2A request, checked before the A2A SDK's handler. The SDK
 * answers a body that is not a Request object (no `jsonrpc: "2.0"`, no method, an id that is an
 * object or a fraction, a batch) with -32602 "Invalid JSON-RPC Request.", echoing an id that is
 * not one, and an unknown method whose params are missing with -32602 as well, since it checks
 * params before the method. JSON-RPC 2.0 (section 5.1) and the A2A spec's error codes say -32600
 * Invalid Request and -32601 Method not found; this answers those cases so, in the SDK's 200.
 * Which methods are known depends on the protocol version the SDK reads the request as: v0.3
 * (`message/send`...) without an A2A-Version header or with 0.3, else v1.0 (`SendMessage`...).
 * A v1.0 method sent without the header is answered -32009, as before v0.3 was served: a v1.0
 * client that left the header out is told so, rather than that its method does not exist.
 * A request without an id (a JSON-RPC notification) is refused -32600 too, with id null: the SDK
 * ran it (a SendMessage was charged) and answered it anyway, where a notification gets no answer.
 * Everything else, and every request with well-formed params, is the SDK's to answer.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';

/** The methods of A2A v1.0 over JSON-RPC, as the SDK's JSON-RPC handler dispatches them. */
const METHODS = new Set([
  'SendMessage',
  'SendStreamingMessage',
  'GetTask',
  'ListTasks',
  'CancelTask',
  'SubscribeToTask',
  'CreateTaskPushNotificationConfig',
  'GetTaskPushNotificationConfig',
  'ListTaskPushNotificationConfigs',
  'DeleteTaskPushNotificationConfig',
  'GetExtendedAgentCard',
]);

/** The methods of A2A v0.3 over JSON-RPC, as the SDK's v0.3 handler dispatches them. */
const V03_METHODS = new Set([
  'message/send',
  'message/stream',
  'tasks/get',
  'tasks/cancel',
  'tasks/resubscribe',
  'tasks/pushNotificationConfig/set',
  'tasks/pushNotificationConfig/get',
  'tasks/pushNotificationConfig/list',
  'tasks/pushNotificationConfig/delete',
  'agent/getAuthenticatedExtendedCard',
]);

/** Whether the SDK's JSON-RPC handler reads a request with this A2A-Version header as v0.3: absent, empty or exactly 0.3. */
const readAsV03 = (version: string | undefined) => (version || '0.3') === '0.3';

const validId = (id: unknown): id is string | number | null => typeof id === 'string' || id === null || (typeof id === 'number' && Number.isInteger(id));

/** What the SDK accepts as params (its `paramsAreValid`): an object without an empty key. */
const validParams = (params: unknown) => typeof params === 'object' && params !== null && !Array.isArray(params) && !Object.keys(params).includes('');

/** The JSON-RPC error for a request (its body and A2A-Version header) the SDK would answer with the wrong code, if it is one. */
export function envelopeError(body: unknown, version?: string): { id: string | number | null; error: { code: number; message: string } } | undefined {
  const request = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
  const id = request && 'id' in request && validId(request.id) ? request.id : null;
  if (!request || request.jsonrpc !== '2.0' || ('id' in request && !validId(request.id)) || typeof request.method !== 'string' || !request.method) {
    return { id, error: { code: -32600, message: 'Invalid Request: not a JSON-RPC 2.0 request object.' } };
  }
  // A notification gets no answer (JSON-RPC), so a call in one would be run and charged for no one.
  if (!('id' in request)) return { id: null, error: { code: -32600, message: 'Invalid Request: an A2A request needs an id (A2A has no notifications); nothing was run.' } };
  const method = request.method.slice(0, 100);
  if (!version && METHODS.has(request.method)) {
    const message = `Version not supported: ${method} is an A2A v1.0 method; send the header A2A-Version: 1.0 (without it, a request is read as A2A v0.3).`;
    return { id, error: { code: -32009, message } };
  }
  if (!(readAsV03(version) ? V03_METHODS : METHODS).has(request.method) && !validParams(request.params)) {
    return { id, error: { code: -32601, message: `Method not found: ${method}` } };
  }
  return undefined;
}

/**
 * Answers a parsed JSON body whose envelope is wrong with its JSON-RPC error (through `res.json`,
 * so the route's refusal recording sees it); a body the parser left alone (not JSON) goes on to the
 * SDK, which answers it with its Content-Type error.
 */
export const checkEnvelope: RequestHandler = function checkEnvelope(req: Request, res: Response, next: NextFunction) {
  const refused = req.body === undefined ? undefined : envelopeError(req.body, req.get('a2a-version'));
  if (!refused) return next();
  res.json({ jsonrpc: '2.0', id: refused.id, error: refused.error });
};
