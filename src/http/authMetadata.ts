/**
 * The MCP authorization pieces of the HTTP edge, built from the policy's `identity` section:
 * OAuth Protected Resource Metadata (RFC 9728) naming the resource and its authorization servers,
 * and the bearer middleware whose 401/403 challenges point clients at that metadata. Both are
 * built once per policy, so a reloaded policy is served without a restart.
 */
import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { InsufficientScopeError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { metadataHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/metadata.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { OAuthProtectedResourceMetadata } from '@modelcontextprotocol/sdk/shared/auth.js';
import { GatewayError } from '../errors.js';
import type { EdgeAuthentication, Gateway } from '../gateway/gateway.js';
import type { Credential, TransportName } from '../pipeline/context.js';
import type { Policy } from '../policy/load.js';

/** How long a verified API key is trusted before it is looked up again. */
const API_KEY_AUTH_TTL_S = 300;
const PRM_ROOT = '/.well-known/oauth-protected-resource';

/** The RFC 9728 document for this gateway, or undefined when the policy names no resource. */
export function protectedResourceMetadata(policy: Policy): OAuthProtectedResourceMetadata | undefined {
  const id = policy.config.identity;
  if (!id.resource) return undefined;
  const servers = id.authorizationServers ?? id.oidc.map((i) => i.issuer);
  const doc: OAuthProtectedResourceMetadata = { resource: id.resource, bearer_methods_supported: ['header'] };
  if (servers.length > 0) doc.authorization_servers = servers;
  if (id.scopesSupported) doc.scopes_supported = id.scopesSupported;
  if (id.resourceName) doc.resource_name = id.resourceName;
  return doc;
}

/** Header values are quoted strings in WWW-Authenticate: keep a message from breaking out of one. */
function headerSafe(message: string): string {
  return message.replace(/["\\\r\n]/g, "'");
}

/**
 * A `WWW-Authenticate` challenge for an authentication refusal, in the form the SDK's bearer
 * middleware sends on /mcp, so every endpoint points clients at the same metadata.
 */
export function bearerChallenge(policy: Policy, err: GatewayError): string {
  const doc = protectedResourceMetadata(policy);
  const code = err.code === 'FORBIDDEN' ? 'insufficient_scope' : 'invalid_token';
  const meta = doc ? `, resource_metadata="${getOAuthProtectedResourceMetadataUrl(new URL(doc.resource))}"` : '';
  return `Bearer error="${code}", error_description="${headerSafe(err.message)}"${meta}`;
}

/** Verifies bearer credentials through the gateway (a refusal is recorded there); throws the SDK's errors so it answers 401/403. */
function verifierFor(gateway: Gateway, transport: TransportName, requestId: string | undefined) {
  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      try {
        const edge = await gateway.authenticate({ secret: token }, { transport, requestId });
        const { principal, expiresAt } = edge;
        return {
          token,
          clientId: principal.actors?.[0] ?? principal.credentialId ?? principal.user,
          scopes: [],
          expiresAt: expiresAt ?? Math.floor(Date.now() / 1000) + API_KEY_AUTH_TTL_S,
          extra: { principal, edge },
        };
      } catch (err) {
        if (err instanceof GatewayError && err.code === 'FORBIDDEN') throw new InsufficientScopeError(headerSafe(err.message));
        throw new InvalidTokenError(err instanceof GatewayError ? headerSafe(err.message) : 'The credential could not be verified.');
      }
    },
  };
}

/**
 * The SDK's bearer middleware refuses a missing Authorization header before asking the verifier;
 * this records that refusal through the gateway first, so it leaves an event. What the client sees
 * is still the SDK's answer.
 */
function recordMissingHeader(gateway: Gateway, transport: TransportName, requestId: string | undefined): void {
  gateway.authenticate(undefined, { transport, requestId }).catch(() => undefined);
}

const MALFORMED = 'The Authorization header must be "Bearer <API key or token>".';

/**
 * Refuses an Authorization header that is not `Bearer <credential>` (no scheme, another scheme, or
 * more after the credential), whatever it holds, as the /v1 routes do: AUTH_INVALID, answered as
 * the SDK's guard answers an invalid token, and recorded by the fingerprint of what it presented.
 * The SDK's guard itself splits on one space and would take `Bearer <key> <more>` as the key; and
 * authenticating a bare key would record its owner for a request nobody proved to be theirs.
 */
function refuseMalformedHeader(gateway: Gateway, transport: TransportName, header: string, requestId: string | undefined, res: Response): void {
  const refusal = new GatewayError('AUTH_INVALID', MALFORMED);
  res.locals.refusalRecorded = true;
  void gateway.refuse(refusal, { transport, credential: { secret: secretOfHeader(header), malformed: MALFORMED }, requestId });
  sendBearerRefusal(res, gateway.policy, refusal);
}

/**
 * A refusal answered as the SDK's bearer guard answers one: 401 `invalid_token`, or 403
 * `insufficient_scope` for FORBIDDEN, with its challenge and the refusal's message.
 */
function sendBearerRefusal(res: Response, policy: Policy, refusal: GatewayError): void {
  const forbidden = refusal.code === 'FORBIDDEN';
  res
    .status(forbidden ? 403 : 401)
    .set('WWW-Authenticate', bearerChallenge(policy, refusal))
    .json({ error: forbidden ? 'insufficient_scope' : 'invalid_token', error_description: refusal.message });
}

/**
 * --dev-anonymous: a request without an Authorization header is served as the declared principal,
 * attached as the bearer middleware attaches a verified one (no token). When the policy names no
 * such principal any more, it is refused as a missing credential would be.
 */
function serveAnonymous(gateway: Gateway, transport: TransportName, req: Request, res: Response, next: NextFunction): void {
  res.locals.refusalRecorded = true;
  gateway.authenticate(undefined, { transport, requestId: res.locals.requestId as string | undefined }).then(
    (edge) => {
      res.locals.refusalRecorded = false;
      req.auth = { token: '', clientId: edge.principal.user, scopes: [], expiresAt: Math.floor(Date.now() / 1000) + API_KEY_AUTH_TTL_S, extra: { principal: edge.principal, edge } };
      next();
    },
    (err: unknown) => {
      sendBearerRefusal(res, gateway.policy, err instanceof GatewayError ? err : new GatewayError('INTERNAL', 'The caller could not be identified.'));
    },
  );
}

/** The principal and edge authentication the bearer middleware attached to a request. */
export function edgeAuthOf(req: Request): EdgeAuthentication | undefined {
  return req.auth?.extra?.edge as EdgeAuthentication | undefined;
}

/** The credential a request carried, with its edge verification, for the call the transport hands the gateway. */
export function credentialOf(req: Request): Credential | undefined {
  const edge = edgeAuthOf(req);
  if (!req.auth || !edge) return undefined;
  return { secret: req.auth.token, verified: { policy: edge.policy, result: edge } };
}

/** `Bearer <credential>`, the whole header: the scheme in any case, one or more spaces after it (RFC 9110, 11.4). */
const BEARER_HEADER = /^bearer +([^ ]+)$/i;

/** The credential of an Authorization header in the Bearer form, undefined for a header in any other form (or none). */
export function bearerCredential(header: string | undefined): string | undefined {
  return header === undefined ? undefined : BEARER_HEADER.exec(header)?.[1];
}

/** `Bearer <token>` at the header's start, whatever follows it. */
const BEARER_START = /^bearer +([^ ]+)/i;

/** The secret an Authorization header presents, for the record: its bearer token, else the header as sent. */
export function secretOfHeader(header: string): string {
  return BEARER_START.exec(header)?.[1] ?? header;
}

/** Serves the protected resource metadata (root and path-suffixed forms) and guards the routes of each transport. */
export function authEdge(gateway: Gateway): { metadata: RequestHandler; requireAuth: (transport: TransportName) => RequestHandler } {
  const routers = new WeakMap<Policy, Router>();

  const metadata: RequestHandler = (req, res, next) => {
    const policy = gateway.policy;
    let router = routers.get(policy);
    if (!router) {
      router = Router();
      const doc = protectedResourceMetadata(policy);
      if (doc) {
        const suffixed = new URL(getOAuthProtectedResourceMetadataUrl(new URL(doc.resource))).pathname;
        if (suffixed !== PRM_ROOT) router.use(suffixed, metadataHandler(doc));
        router.use(PRM_ROOT, metadataHandler(doc));
      }
      routers.set(policy, router);
    }
    router(req, res, next);
  };

  const requireAuth = (transport: TransportName): RequestHandler => {
    // Per policy: where the protected resource metadata is, and the guard for requests without an id of their own (/mcp).
    const guards = new WeakMap<Policy, { resourceMetadataUrl: string | undefined; guard: RequestHandler }>();
    return (req, res, next) => {
      const policy = gateway.policy;
      let cached = guards.get(policy);
      if (!cached) {
        const doc = protectedResourceMetadata(policy);
        const resourceMetadataUrl = doc ? getOAuthProtectedResourceMetadataUrl(new URL(doc.resource)) : undefined;
        cached = { resourceMetadataUrl, guard: requireBearerAuth({ verifier: verifierFor(gateway, transport, undefined), resourceMetadataUrl }) };
        guards.set(policy, cached);
      }
      // The request's id, where its route gave it one (/a2a, answered as x-request-id): a refusal here is recorded under it.
      const requestId = res.locals.requestId as string | undefined;
      if (!req.headers.authorization && gateway.anonymousEnabled) {
        serveAnonymous(gateway, transport, req, res, next);
        return;
      }
      const header = req.headers.authorization;
      if (header) {
        // `Bearer` then one or more spaces, as the /v1 routes read it; the SDK's guard splits on one.
        const bearer = bearerCredential(header);
        if (bearer === undefined) {
          refuseMalformedHeader(gateway, transport, header, requestId, res);
          return;
        }
        req.headers.authorization = `Bearer ${bearer}`;
      } else recordMissingHeader(gateway, transport, requestId);
      const guard =
        requestId === undefined
          ? cached.guard
          : requireBearerAuth({ verifier: verifierFor(gateway, transport, requestId), resourceMetadataUrl: cached.resourceMetadataUrl });
      // Until the guard lets the request through, a refusal it answers is the gateway's to record (and is recorded).
      res.locals.refusalRecorded = true;
      void guard(req, res, (err?: unknown) => {
        res.locals.refusalRecorded = false;
        next(err);
      });
    };
  };

  return { metadata, requireAuth };
}
