/**
 * The MCP authorization pieces of the HTTP edge, built from the policy's `identity` section:
 * OAuth Protected Resource Metadata (RFC 9728) naming the resource and its authorization servers,
 * and the bearer middleware whose 401/403 challenges point clients at that metadata. Both are
 * built once per policy, so a reloaded policy is served without a restart.
 */
import { Router, type RequestHandler } from 'express';
import { InsufficientScopeError, InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { metadataHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/metadata.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { OAuthProtectedResourceMetadata } from '@modelcontextprotocol/sdk/shared/auth.js';
import { GatewayError } from '../errors.js';
import type { Gateway } from '../gateway.js';
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

/** Verifies bearer credentials through the gateway; throws the SDK's errors so it answers 401/403. */
function verifierFor(gateway: Gateway) {
  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      try {
        const { principal, expiresAt } = await gateway.authenticate(token);
        return {
          token,
          clientId: principal.actors?.[0] ?? principal.credentialId ?? principal.user,
          scopes: [],
          expiresAt: expiresAt ?? Math.floor(Date.now() / 1000) + API_KEY_AUTH_TTL_S,
          extra: { principal },
        };
      } catch (err) {
        if (err instanceof GatewayError && err.code === 'FORBIDDEN') throw new InsufficientScopeError(headerSafe(err.message));
        throw new InvalidTokenError(err instanceof GatewayError ? headerSafe(err.message) : 'The credential could not be verified.');
      }
    },
  };
}

/** Serves the protected resource metadata (root and path-suffixed forms) and guards /mcp. */
export function authEdge(gateway: Gateway): { metadata: RequestHandler; requireAuth: RequestHandler } {
  const routers = new WeakMap<Policy, Router>();
  const guards = new WeakMap<Policy, RequestHandler>();

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

  const requireAuth: RequestHandler = (req, res, next) => {
    const policy = gateway.policy;
    let guard = guards.get(policy);
    if (!guard) {
      const doc = protectedResourceMetadata(policy);
      guard = requireBearerAuth({
        verifier: verifierFor(gateway),
        resourceMetadataUrl: doc ? getOAuthProtectedResourceMetadataUrl(new URL(doc.resource)) : undefined,
      });
      guards.set(policy, guard);
    }
    void guard(req, res, next);
  };

  return { metadata, requireAuth };
}
