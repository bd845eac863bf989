/**
 * tollgate's Agent Card, in the two shapes its callers read. The card lists one JSON-RPC interface
 * at /a2a for A2A v1.0 and one for v0.3: the same endpoint, whose SDK handler answers a request by
 * its A2A-Version header (agent.ts). A card request whose A2A-Version is absent or in [0.3, 1.0)
 * gets the v0.3 card (top-level `url`, `preferredTransport`, `protocolVersion`), as a v0.3 client
 * sends no such header; the v1.0 client asks with `A2A-Version: 1.0` and gets the v1.0 card. The
 * v0.3 card also carries the v1.0 `supportedInterfaces`, so a v1.0 client that asks without the
 * header still picks the v1.0 interface.
 */
import { AgentCard } from '@a2a-js/sdk';
import type { Request, RequestHandler } from 'express';
import type { Policy } from '../policy/load.js';

/** Where the JSON-RPC endpoint is mounted. */
export const A2A_PATH = '/a2a';
/** Where the Agent Card is served. */
export const CARD_PATH = '/.well-known/agent-card.json';
/** Metadata key on a task: the call's result. */
export const RESULT_META_KEY = 'io.tollgate/result';
/** How long a cache may keep the card, in seconds. */
const CARD_MAX_AGE = 300;

/** The Agent Card for this gateway, served at `baseUrl`. */
export function agentCard(policy: Policy, baseUrl: string, version: string): AgentCard {
  const issuers = policy.config.identity.oidc.map((i) => i.issuer);
  const securitySchemes: AgentCard['securitySchemes'] = {
    bearer: {
      scheme: {
        $case: 'httpAuthSecurityScheme',
        value: { scheme: 'Bearer', bearerFormat: '', description: 'A tollgate API key, or an access token from an issuer the gateway trusts.' },
      },
    },
  };
  if (issuers[0]) {
    const url = `${issuers[0].replace(/\/$/, '')}/.well-known/openid-configuration`;
    securitySchemes.oidc = { scheme: { $case: 'openIdConnectSecurityScheme', value: { openIdConnectUrl: url, description: 'Sign in with the company identity provider.' } } };
  }
  const text = ['text/plain'];
  const rpcUrl = `${baseUrl}${A2A_PATH}`;
  return {
    name: 'tollgate',
    description: 'Enterprise AI gateway: completes text with a governed model, charged to your budgets, stepped down a tier when a budget runs low and refused with the reason when a budget or policy says no.',
    // v1.0 first: the v1.0 client takes the 1.0 interface of a binding, a v0.3 card the first v0.3 one.
    supportedInterfaces: [
      { url: rpcUrl, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: '1.0' },
      { url: rpcUrl, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: '0.3' },
    ],
    provider: undefined,
    version,
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes,
    // Requirements are alternatives: any one scheme is enough.
    securityRequirements: Object.keys(securitySchemes).map((name) => ({ schemes: { [name]: { list: [] } } })),
    defaultInputModes: text,
    defaultOutputModes: text,
    skills: [
      {
        id: 'complete',
        name: 'Complete with a governed model',
        description: `The text parts of the message are the prompt. Optional message metadata: model (a model such as ${policy.config.tiers[policy.defaultTier]![0]} or a tier: ${policy.tiers.join(', ')}), tier, max_tokens, temperature, system. The reply is a task whose artifact is the text; its metadata "${RESULT_META_KEY}" has the model served, usage, cost and budgets left.`,
        tags: ['completion', 'llm', 'governed'],
        examples: ['Summarise this incident report in three bullet points.'],
        inputModes: text,
        outputModes: text,
        securityRequirements: [],
      },
    ],
    signatures: [],
  };
}

/** The card's base URL: the address the caller used (Host is checked by the app before this). */
function baseUrlOf(req: Request): string {
  return `${req.protocol}://${req.get('host')}`;
}

let compatSdk: Promise<typeof import('@a2a-js/sdk/compat/v0_3/server/express')> | undefined;

/** Loads the SDK's v0.3 card router (on the first card request, or earlier through the router's `prepare`, agent.ts). */
export const loadV03Card = () => (compatSdk ??= import('@a2a-js/sdk/compat/v0_3/server/express'));

/**
 * The v0.3 card, for a request that asks for it, through the SDK's `legacyAgentCardRouter` (which
 * picks by A2A-Version, translates the card with `toCompatAgentCard` and sets its ETag, Vary and
 * Cache-Control); any other request goes on to `v1Card`. Mounted with `use` at CARD_PATH, as the
 * SDK's router serves its own root.
 */
export function v03Card(policy: Policy, version: string): RequestHandler {
  return function v03Card(req, res, next) {
    loadV03Card().then(({ legacyAgentCardRouter }) => {
      // A router per request: the card names the address the caller used, which the SDK's provider is not told.
      const card = legacyAgentCardRouter({ agentCardProvider: async () => agentCard(policy, baseUrlOf(req), version), cache: { maxAge: CARD_MAX_AGE } });
      card(req, res, next);
    }, next);
  };
}

/** The v1.0 card, for every card request `v03Card` passed on. */
export function v1Card(policy: Policy, version: string): RequestHandler {
  return function v1Card(req, res) {
    res.setHeader('cache-control', `public, max-age=${CARD_MAX_AGE}`);
    res.append('vary', 'A2A-Version');
    res.json(AgentCard.toJSON(agentCard(policy, baseUrlOf(req), version)));
  };
}
