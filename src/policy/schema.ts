/**
 * The policy file's shape, validated once at load. The JSON Schema published for editors is
 * generated from these same zod schemas (tools/gen-schema.ts), so the two cannot drift.
 */
import { z } from 'zod';
import { alertsSchema, DEFAULT_ALERTS } from './alertsConfig.js';
import { apiKeySchema, DEFAULT_IDENTITY, identitySchema, type ApiKeyConfig } from '../identity/config.js';
import { providerSchema, type ProviderConfig } from '../providers/config.js';
import { isValidTimezone } from '../quota/windows.js';

const id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, 'ids use letters, digits and _ . : -');
/** `provider/model`, e.g. `anthropic/claude-sonnet-5-5`. */
export const modelRefSchema = z.string().regex(/^[a-z0-9][a-z0-9_-]*\/\S+$/, 'a model is named provider/model-id');
const timezone = z.string().refine(isValidTimezone, { message: 'not an IANA timezone name (e.g. Europe/Paris)' });
const positiveInt = z.number().int().positive();

export { apiKeySchema, providerSchema, type ApiKeyConfig, type ProviderConfig };



/**
 * Dollars per million tokens, up to a million (a dollar a token; the dearest model priced today is
 * under a thousand): past it a call's cost is no longer a number the ledger and the reports count
 * exactly in micro-dollars (a mistyped 1e300 was served and reported as `6e+294.240960`).
 */
const perMTok = z.number().nonnegative().max(1e6, 'at most 1000000 dollars per million tokens');

export const priceSchema = z
  .object({
    inputPerMTok: perMTok,
    outputPerMTok: perMTok,
    cachedInputPerMTok: perMTok.optional(),
  })
  .strict()
  // Admission reserves a call's input at the input price: cache reads priced above it would charge past it.
  .superRefine((p, ctx) => {
    if (p.cachedInputPerMTok !== undefined && p.cachedInputPerMTok > p.inputPerMTok) {
      ctx.addIssue({
        code: 'custom',
        path: ['cachedInputPerMTok'],
        message: `a cached-input price above the input price (${p.cachedInputPerMTok} > ${p.inputPerMTok}): admission reserves input at the input price, so cache reads could charge past a budget`,
      });
    }
  });

const modelSchema = z
  .object({
    price: priceSchema.optional(),
    maxOutputTokens: positiveInt.default(8192),
  })
  .strict();

const percent = z.union([
  z
    .number()
    .min(0)
    .max(100)
    // 0.2 looks like a fifth and would step calls down with 0.2 % left: a percentage under 1 is written with its sign.
    .refine((n) => n === 0 || n >= 1, 'under 1, a bare number reads as a fraction but is taken as per cent: write "20%" for a fifth, "0.2%" for 0.2 per cent'),
  z.string().regex(/^(100(\.0+)?|\d{1,2}(\.\d+)?)%$/, 'a percentage from 0% to 100%, like "20%"').transform((s) => Number(s.slice(0, -1))),
]);

const windowSchema = z.union([
  z.object({ calendar: z.enum(['day', 'week', 'month']), timezone: timezone.default('UTC') }).strict(),
  z
    .object({
      rolling: z
        .object({ hours: positiveInt.optional(), days: positiveInt.optional() })
        .strict()
        .refine((r) => (r.hours ?? 0) + (r.days ?? 0) > 0, 'give hours or days'),
      buckets: z.number().int().min(1).max(168).default(24),
    })
    .strict(),
]);

/** What a budget is kept per (the console's budgets filter offers the same). */
export const budgetScope = z.enum(['user', 'team', 'costCenter', 'application', 'global']);

/** A dollar amount the ledger holds exactly: at most six decimal places (whole micro-dollars). */
export const MICRO_USD = /^[0-9]+(\.[0-9]{1,6})?$/;

const budgetSchema = z
  .object({
    id,
    description: z.string().optional(),
    /** `application`: one line per application (a key issued with --app); a caller without one is not charged to it. */
    scope: budgetScope,
    /** CEL over `principal`: the budget applies only where it is true. */
    when: z.string().optional(),
    /**
     * The tiers this budget covers; without it, every tier. A call served by a tier it does not
     * cover is neither checked against it nor charged to it, so a call it cannot cover steps down
     * to the next tier that fits, a tier it does not cover included.
     */
    tiers: z.array(id).min(1).optional(),
    window: windowSchema,
    /**
     * The ledger counts dollars in millionths, and its sums stay exact below 2^53: so a dollar limit
     * from 0.000001 to one billion, a token limit up to 10^15.
     */
    limit: z.union([
      z.object({ tokens: positiveInt.max(1e15, 'at most 1000000000000000 (10^15 tokens)') }).strict(),
      z
        .object({
          usd: z
            .number()
            .min(0.000001, 'a dollar limit is counted in millionths of a dollar: give at least 0.000001')
            .max(1e9, 'at most 1000000000 (one billion dollars)')
            .refine((usd) => usd < 0.000001 || MICRO_USD.test(String(usd)), 'a dollar limit is counted in millionths of a dollar: give at most 6 decimal places'),
        })
        .strict(),
    ]),
    /** Under this share of the limit left, calls are served one tier down. */
    tierDown: z.object({ below: percent }).strict().optional(),
    /** What happens when the quota store is unreachable. */
    failMode: z.enum(['closed', 'open']).default('closed'),
  })
  .strict();
export type BudgetConfig = z.infer<typeof budgetSchema>;

/**
 * A rate limit or concurrency cap: exactly one of `requestsPerSecond`, `requestsPerMinute`,
 * `tokensPerMinute` or `concurrent`. Enforced in the same atomic store step as the budgets
 * (docs/rate-limits.md): request and token limits over a sliding window of `buckets` buckets,
 * the cap over the calls this scope has in flight.
 */
const rateLimitSchema = z
  .object({
    id,
    description: z.string().optional(),
    /**
     * Whose calls share the limit: one line per key, user, team (each team of the caller),
     * cost centre, application, tier or model served, or one for everyone (`global`).
     */
    scope: z.enum(['key', 'user', 'team', 'costCenter', 'application', 'tier', 'model', 'global']),
    /** CEL over `principal`: the limit applies only where it is true. */
    when: z.string().optional(),
    /** The tiers this limit covers; without it, every tier. */
    tiers: z.array(id).min(1).optional(),
    requestsPerSecond: positiveInt.optional(),
    requestsPerMinute: positiveInt.optional(),
    /** Input plus output tokens: the worst case is reserved at admission, the actual usage settled. */
    tokensPerMinute: positiveInt.max(1e15, 'at most 1000000000000000 (10^15 tokens)').optional(),
    /** Calls in flight at once. */
    concurrent: positiveInt.optional(),
    /** Buckets of the sliding window (default 10 for a second, 12 for a minute); more is finer and costs a key each. */
    buckets: z.number().int().min(1).max(60).optional(),
    /** The retry time a concurrency refusal suggests, ms (a call in flight has no known end). */
    retryAfterMs: positiveInt.max(3_600_000).default(1000),
    /** What happens when the quota store is unreachable. */
    failMode: z.enum(['closed', 'open']).default('closed'),
  })
  .strict()
  .refine((l) => [l.requestsPerSecond, l.requestsPerMinute, l.tokensPerMinute, l.concurrent].filter((v) => v !== undefined).length === 1, {
    message: 'give exactly one of requestsPerSecond, requestsPerMinute, tokensPerMinute, concurrent',
  });
export type RateLimitConfig = z.infer<typeof rateLimitSchema>;

const ruleSchema = z
  .object({
    id,
    description: z.string().optional(),
    /** CEL over `principal`, `request`, `budgets` and `now`. */
    when: z.string().min(1),
    effect: z.enum(['deny', 'allow', 'cap_tier']),
    message: z.string().optional(),
    /** For cap_tier: the most capable tier allowed when the rule matches. */
    tier: z.string().optional(),
  })
  .strict()
  .refine((r) => r.effect !== 'cap_tier' || r.tier, { message: 'cap_tier needs a tier', path: ['tier'] });
export type RuleConfig = z.infer<typeof ruleSchema>;



/** A SIEM that receives every decision event (Splunk HTTP Event Collector format). Its host must be on egress.allow. */
const siemSchema = z
  .object({
    /** The collector's base URL (`https://splunk.example.com:8088`) or its full event endpoint. */
    url: z.url(),
    /** The HEC token, sent as `Authorization: Splunk <token>`; bind it from a secret. */
    token: z.string().min(1),
    batchSize: positiveInt.max(10_000).default(100),
    flushIntervalMs: positiveInt.default(1000),
    /** Events held while the SIEM is unreachable; beyond it the oldest are dropped, counted and logged. */
    maxBuffer: positiveInt.default(10_000),
    source: z.string().default('tollgate'),
    sourcetype: z.string().default('tollgate:decision'),
    index: z.string().optional(),
  })
  .strict()
  .refine((s) => s.maxBuffer >= s.batchSize, { message: 'maxBuffer must be at least batchSize', path: ['maxBuffer'] });
export type SiemConfig = z.infer<typeof siemSchema>;

const roleList = z.array(z.string().min(1));

/**
 * The web console at /console (src/console): who may use it and how they sign in. Admins are
 * principals holding one of the roles below, from OIDC claims (the login flow of `oidc`) or from
 * an API key declared under `apiKeys`; both go through the policy's identity section.
 */
const consoleSchema = z
  .object({
    /**
     * `auto` (the default): on at a loopback address; elsewhere only once an admin identity is
     * configured (`oidc`, or an API key under `apiKeys` holding an admin role). `false` turns it
     * off everywhere; `true` serves it wherever tollgate listens.
     */
    enabled: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    roles: z
      .object({
        /** Roles that may read every page and act (issue and revoke keys). */
        readWrite: roleList.default(['tollgate-admin']),
        /** Roles that may read every page and act on nothing. */
        readOnly: roleList.default(['tollgate-viewer']),
      })
      .strict()
      .default({ readWrite: ['tollgate-admin'], readOnly: ['tollgate-viewer'] }),
    /** Sign-in with the authorization code flow and PKCE (S256) against one of `identity.oidc`'s issuers. */
    oidc: z
      .object({
        /** One of the issuers under identity.oidc; its claim mapping makes the principal. */
        issuer: z.url(),
        /** The console's client id at the issuer; the ID token's audience, so list it under that issuer's `audience`. */
        clientId: z.string().min(1),
        /** For a confidential client only (bind it from a secret); a public client sends none. */
        clientSecret: z.string().min(1).optional(),
        scopes: z.array(z.string().min(1)).default(['openid', 'profile', 'email']),
      })
      .strict()
      .optional(),
    /**
     * The console's origin as browsers reach it, e.g. `https://ai.example.com` behind a TLS proxy:
     * the OIDC redirect URI is built from it, and cookies get the Secure flag when it is https.
     */
    publicUrl: z.url().optional(),
    /** How long a console sign-in lasts. */
    sessionMinutes: positiveInt.max(10_080).default(480),
  })
  .strict();
export type ConsoleConfig = z.infer<typeof consoleSchema>;

export const DEFAULT_CONSOLE: ConsoleConfig = { enabled: 'auto', roles: { readWrite: ['tollgate-admin'], readOnly: ['tollgate-viewer'] }, sessionMinutes: 480 };

export const policySchema = z
  .object({
    version: z.literal(1),
    name: z.string().default('unnamed'),
    bindings: z.record(z.string(), z.string()).default({}),
    providers: z.record(id, providerSchema),
    egress: z
      .object({ allow: z.array(z.string().min(1)).default([]), proxy: z.string().optional() })
      .strict()
      .default({ allow: [] }),
    models: z.record(modelRefSchema, modelSchema).default({}),
    tiers: z.record(id, z.array(modelRefSchema).min(1)),
    defaultTier: id.optional(),
    apiKeys: z.array(apiKeySchema).default([]),
    /** OIDC issuers, protected resource metadata, delegation and OpenFGA (src/identity/config.ts). */
    identity: identitySchema.default(DEFAULT_IDENTITY),
    budgets: z.array(budgetSchema).default([]),
    rateLimits: z.array(rateLimitSchema).default([]),
    /**
     * Calls made with an application's key: which budget lines they charge. `both` (default): the
     * application's lines and its owner's (user, teams, cost centre); `application`: only the
     * application's; `owner`: only the owner's. Global budgets and every rate limit always apply.
     */
    applications: z.object({ charge: z.enum(['both', 'application', 'owner']).default('both') }).strict().default({ charge: 'both' }),
    rules: z.array(ruleSchema).default([]),
    limits: z
      .object({
        maxTokensCeiling: positiveInt.default(32_768),
        maxInputChars: positiveInt.default(400_000),
        reservationTtlSeconds: positiveInt.default(600),
        /** When the budgets left can pay for fewer output tokens than asked, max tokens is lowered to fit, but not below this. */
        minOutputTokens: positiveInt.default(16),
        /**
         * Whether the caller's answer waits until the quota store has recorded the charge. false
         * (the default): the answer goes as soon as the provider has answered and the charge is
         * known; the store write and the decision event follow a moment later. The reservation
         * holds until the charge replaces it, so no budget is overshot either way.
         */
        settleBeforeReply: z.boolean().default(false),
      })
      .strict()
      .default({ maxTokensCeiling: 32_768, maxInputChars: 400_000, reservationTtlSeconds: 600, minOutputTokens: 16, settleBeforeReply: false }),
    metering: z
      .object({ logPrompts: z.boolean().default(false), siem: siemSchema.optional() })
      .strict()
      .default({ logPrompts: false }),
    console: consoleSchema.default(DEFAULT_CONSOLE),
    /** Budget thresholds, refusal spikes and overruns, sent to webhooks (src/policy/alertsConfig.ts, docs/alerts.md). */
    alerts: alertsSchema.default(DEFAULT_ALERTS),
  })
  .strict();

export type PolicyInput = z.input<typeof policySchema>;
export type PolicyConfig = z.infer<typeof policySchema>;
