/**
 * The `identity` section of the policy: which OIDC issuers are trusted and how their claims become
 * a Principal, what the HTTP edge advertises (RFC 9728), who may act for users (RFC 8693), what
 * every caller must hold, and an optional OpenFGA check. Kept apart from policy/schema.ts so the
 * identity rules read in one place; the policy schema embeds it.
 */
import { z } from 'zod';

/**
 * Asymmetric JWS algorithms only. `none` and the HS* family are not representable: an HMAC key
 * would have to be a secret shared with the issuer, and accepting HS256 next to a JWKS is how the
 * classic RS/HS confusion lets a caller sign with the public key.
 */
export const JWS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export const DEFAULT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'] as const;

const claimName = z.string().min(1);

/** A regular expression source, checked to compile at load. */
const pattern = z
  .string()
  .min(1)
  .refine((src) => {
    try {
      new RegExp(src, 'u');
      return true;
    } catch {
      return false;
    }
  }, 'a valid regular expression (JavaScript syntax)');

/**
 * How values are picked out of a claim. Applied in this order to each value: `prefix` (keep only
 * values starting with it, without it), `match` (keep only values the expression matches; the
 * first capture group, when it has one, becomes the value), `strip` (drop this text from the start
 * when present, keep the value either way). What still starts with `/` then follows `groupPath`.
 */
const valueFilters = {
  /** Keep only values starting with this text, and drop it: `/teams/` makes `/teams/data` `data`. */
  prefix: z.string().min(1).optional(),
  /** Keep only values this expression matches; its first capture group, if any, is the value. */
  match: pattern.optional(),
  /** Drop this text from the start of a value that has it; values without it are kept as they are. */
  strip: z.string().min(1).optional(),
};

/** One claim path (dotted into nested objects) or several, whose values are pooled. */
const claimPaths = z.union([claimName, z.array(claimName).min(1)]);

/**
 * Where one principal field comes from: a claim path as a string (`groups`, `org.cost_center`),
 * or an object naming the claim(s) and how to filter their values.
 */
export const claimSourceSchema = z.union([claimName, z.object({ claim: claimPaths, ...valueFilters }).strict()]);
export type ClaimSource = z.infer<typeof claimSourceSchema>;

const rolesSchema = z.union([
  claimName,
  z
    .object({
      /** A plain roles claim (Entra ID, Auth0) or dotted path, when the issuer has one. */
      claim: claimPaths.optional(),
      /** Keycloak realm roles: `realm_access.roles`. */
      realm: z.boolean().default(true),
      /** Keycloak client roles: `resource_access.<client>.roles` for each client named. */
      clients: z.array(z.string().min(1)).default([]),
      ...valueFilters,
    })
    .strict(),
]);

const claimsSchema = z
  .object({
    /** Claim naming the user budgets are keyed by: `sub`, `preferred_username`, `email`, ... */
    user: claimName.default('sub'),
    /** Where the caller's teams come from (a list or a single string). */
    teams: claimSourceSchema.default('groups'),
    /** Where the caller's groups come from. */
    groups: claimSourceSchema.default('groups'),
    /**
     * How a Keycloak full-path group such as `/eng/platform` is read: `last` keeps `platform`,
     * `full` keeps `eng/platform` (leading slash dropped). Names without a slash are kept as they are.
     */
    groupPath: z.enum(['last', 'full']).default('last'),
    /** Where the cost centre comes from, e.g. a custom `cost_center` mapper; the first value kept. */
    costCenter: claimSourceSchema.optional(),
    /**
     * Where roles come from. A string is the one claim roles are read from; the object form pools
     * a claim, Keycloak realm roles and client roles, then filters them.
     */
    roles: rolesSchema.default({ realm: true, clients: [] }),
  })
  .strict();
export type ClaimsConfig = z.infer<typeof claimsSchema>;

const issuerSchema = z
  .object({
    /** Exact `iss` value of the tokens, e.g. `https://sso.example.com/realms/acme`. */
    issuer: z.url(),
    /** Where the signing keys are; default: `jwks_uri` from the issuer's OpenID configuration. */
    jwksUri: z.url().optional(),
    /** Accepted `aud` values; default: `identity.resource`. */
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    algorithms: z.array(z.enum(JWS_ALGORITHMS)).min(1).default([...DEFAULT_ALGORITHMS]),
    /** Allowed clock skew on exp/nbf/iat. */
    clockToleranceSeconds: z.number().int().min(0).max(300).default(30),
    /** How long fetched keys are trusted before they are fetched again. */
    jwksCacheSeconds: z.number().int().min(0).default(600),
    /**
     * After a fetch, an unknown `kid` triggers another fetch only once this has passed; after a
     * failed fetch (keys or OpenID configuration), nothing fetches again before it has passed.
     */
    jwksCooldownSeconds: z.number().int().min(0).default(30),
    claims: claimsSchema.default({ user: 'sub', teams: 'groups', groups: 'groups', groupPath: 'last', roles: { realm: true, clients: [] } }),
    /**
     * Put before the user its tokens name (`partner:` makes `alice` `partner:alice`): budgets,
     * limits and rules are keyed by the user, so two issuers naming a user alike name one user
     * unless their prefixes differ (`tollgate check` warns).
     */
    userPrefix: z.string().max(64).default(''),
  })
  .strict();
export type IssuerConfig = z.infer<typeof issuerSchema>;

const template = z.string().min(1);

const openFgaSchema = z
  .object({
    apiUrl: z.url(),
    /** OpenFGA ids are ULIDs. */
    storeId: z.string().regex(/^[0-7][0-9A-HJKMNP-TV-Z]{25}$/, 'an OpenFGA store id (ULID)'),
    authorizationModelId: z
      .string()
      .regex(/^[0-7][0-9A-HJKMNP-TV-Z]{25}$/, 'an OpenFGA model id (ULID)')
      .optional(),
    /** Bearer token for the OpenFGA API, when it requires one (use a binding, not the literal). */
    apiToken: z.string().min(1).optional(),
    /** Templates over `principal.*` and `request.tier` / `request.model`, e.g. `user:${principal.user}`. */
    check: z
      .object({
        user: template.default('user:${principal.user}'),
        relation: template.default('can_use'),
        object: template.default('model_tier:${request.tier}'),
      })
      .strict()
      .default({ user: 'user:${principal.user}', relation: 'can_use', object: 'model_tier:${request.tier}' }),
    /** How long an answer is reused for the same user, relation and object. */
    cacheSeconds: z.number().int().min(0).max(3600).default(10),
    /** When OpenFGA cannot be reached: refuse (closed) or let policy and budgets decide (open). */
    failMode: z.enum(['closed', 'open']).default('closed'),
    timeoutMs: z.number().int().positive().max(60_000).default(2000),
  })
  .strict();
export type OpenFgaConfig = z.infer<typeof openFgaSchema>;

export const identitySchema = z
  .object({
    oidc: z.array(issuerSchema).default([]),
    /** This gateway's resource identifier (RFC 8707/9728), e.g. `https://ai.example.com/mcp`. */
    resource: z.url().optional(),
    /** Authorization servers named in the protected resource metadata; default: the OIDC issuers. */
    authorizationServers: z.array(z.url()).optional(),
    /** Scopes listed in the protected resource metadata. */
    scopesSupported: z.array(z.string().min(1)).optional(),
    resourceName: z.string().optional(),
    /** Every caller must hold at least one of these roles (any credential kind). */
    requiredRoles: z.array(z.string().min(1)).default([]),
    /** Every caller must belong to at least one of these groups (any credential kind). */
    requiredGroups: z.array(z.string().min(1)).default([]),
    delegation: z
      .object({
        /** `sub` or `client_id` values of agents allowed to act for a user (the current `act`). */
        allowedActors: z.array(z.string().min(1)).default([]),
      })
      .strict()
      .default({ allowedActors: [] }),
    openfga: openFgaSchema.optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    v.oidc.forEach((iss, i) => {
      if (!iss.audience && !v.resource) {
        ctx.addIssue({ code: 'custom', path: ['oidc', i, 'audience'], message: 'give an audience, or identity.resource to use as the audience' });
      }
    });
  });
export type IdentityConfig = z.infer<typeof identitySchema>;

export const DEFAULT_IDENTITY: IdentityConfig = { oidc: [], requiredRoles: [], requiredGroups: [], delegation: { allowedActors: [] } };

/** One entry of the policy's `apiKeys` list. */
export const apiKeySchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, 'ids use letters, digits and _ . : -'),
    /** Hex SHA-256 of the key; the key itself never sits in the file (`tollgate hash-key`). */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex characters'),
    user: z.string().min(1),
    teams: z.array(z.string()).default([]),
    costCenter: z.string().optional(),
    groups: z.array(z.string()).default([]),
    roles: z.array(z.string()).default([]),
    /**
     * The application this key belongs to: budgets and limits of scope `application` are keyed by
     * it, and `user`, `teams` and `costCenter` are its owner's (`policy.applications.charge` says
     * whose budget lines its calls charge).
     */
    app: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, 'application names use letters, digits and _ . : -').optional(),
    disabled: z.boolean().default(false),
  })
  .strict();
export type ApiKeyConfig = z.infer<typeof apiKeySchema>;
