/**
 * GET /v1/models: the models and tiers this caller may use, authenticated like a call. In the
 * OpenAI list shape by default; in the Anthropic shape (with its pagination fields and `after_id`,
 * `before_id`, `limit`) when the request carries `anthropic-version`, as the Anthropic SDK's
 * `models.list` sends. Tier names are listed as model ids too, since the compatible endpoints take
 * a tier in `model`. A tier a rule closes to this caller, and its models, are left out.
 * GET /v1/models/{id} answers one entry of that list (the SDKs' `models.retrieve`), or 404.
 */
import type { Request, Response, RequestHandler } from 'express';
import { Router } from 'express';
import { asGatewayError, GatewayError } from '../errors.js';
import type { Gateway } from '../gateway/gateway.js';
import type { Principal } from '../identity/principal.js';
import type { Credential } from '../pipeline/context.js';
import { anthropicCodec } from './anthropicCompat.js';
import { presentedCredential } from './compat.js';
import { markRecorded } from './edgeRefusals.js';
import { openaiCodec } from './openaiCompat.js';
import { beginRequest, renderCodecError } from './dryRuns.js';

/** One entry of the list: a model ref or a tier name. */
interface Listed {
  id: string;
  kind: 'model' | 'tier';
  /** The provider for a model, `tollgate` for a tier. */
  owner: string;
  display: string;
  maxOutputTokens?: number;
}

/** What `principal` may ask for by name: each open tier, then each model of an open tier, once. */
export function modelsFor(gateway: Gateway, principal: Principal): Listed[] {
  const open = gateway.listModels(principal).filter((t) => t.allowed);
  const out: Listed[] = open.map((t) => ({ id: t.tier, kind: 'tier', owner: 'tollgate', display: `${t.tier} (tier: ${t.models.map((m) => m.model).join(', ')})` }));
  const seen = new Set<string>();
  for (const t of open) {
    for (const m of t.models) {
      if (seen.has(m.model)) continue;
      seen.add(m.model);
      out.push({ id: m.model, kind: 'model', owner: m.provider, display: m.model, maxOutputTokens: m.maxOutputTokens });
    }
  }
  return out;
}

/** One entry in the OpenAI shape. tollgate has no release dates to give: `created` is 0. */
const openaiModel = (m: Listed) => ({ id: m.id, object: 'model', created: 0, owned_by: m.owner });

/** One entry in the Anthropic shape. */
const anthropicModel = (m: Listed) => ({ type: 'model', id: m.id, display_name: m.display, created_at: '1970-01-01T00:00:00Z', max_tokens: m.maxOutputTokens ?? null });

/** The Anthropic list page: `limit` (1 to 1000, default 20) after `after_id` or before `before_id`. */
function anthropicPage(items: Listed[], req: Request) {
  const q = req.query;
  const limit = q.limit === undefined ? 20 : Number(q.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new GatewayError('INVALID_REQUEST', 'Invalid request: limit must be an integer from 1 to 1000.');
  let from = 0;
  let to = items.length;
  if (typeof q.after_id === 'string') from = items.findIndex((m) => m.id === q.after_id) + 1;
  if (typeof q.before_id === 'string') {
    to = Math.max(0, items.findIndex((m) => m.id === q.before_id));
    from = Math.max(0, to - limit);
  }
  const page = items.slice(from, Math.min(to, from + limit));
  const data = page.map(anthropicModel);
  return { data, has_more: typeof q.before_id === 'string' ? from > 0 : from + page.length < to, first_id: page[0]?.id ?? null, last_id: page.at(-1)?.id ?? null };
}

/** The entry `id` names, or UNKNOWN_MODEL, answered 404 as a missing resource (openaiCodec would answer it 400). */
function entry(items: Listed[], id: string): Listed {
  const found = items.find((m) => m.id === id);
  if (found) return found;
  throw new GatewayError('UNKNOWN_MODEL', `Model ${JSON.stringify(id)} is not one this caller may use; GET /v1/models lists them.`, { model: id });
}

const notFound = (err: GatewayError) => (err.code === 'UNKNOWN_MODEL' ? 404 : err.status);

/** A GET that answers from this caller's list, in the shape the request asks for (`anthropic-version`). */
function fromList(gateway: Gateway, answer: (items: Listed[], req: Request, anthropic: boolean) => unknown): RequestHandler {
  return async (req: Request, res: Response) => {
    markRecorded(res);
    const anthropic = req.headers['anthropic-version'] !== undefined;
    const codec = anthropic ? anthropicCodec : openaiCodec;
    const presented = presentedCredential(req, anthropicCodec.credentialOf);
    const requestId = res.locals.requestId as string;
    let credential: Credential | undefined;
    try {
      const edge = await gateway.authenticate(presented, { transport: codec.transport, requestId });
      credential = { secret: presented?.secret as string, verified: { policy: edge.policy, result: edge } };
      res.json(answer(modelsFor(gateway, edge.principal), req, anthropic));
    } catch (err) {
      const refusal = asGatewayError(err);
      // Authentication records its own refusals; one after it (a bad `limit`, an unknown id) is recorded here, as the caller's.
      if (credential) await gateway.refuse(refusal, { transport: codec.transport, credential, requestId });
      renderCodecError({ errorBody: codec.errorBody, statusOf: notFound }, gateway, res, refusal);
    }
  };
}

/** GET /v1/models and GET /v1/models/{id} in both shapes. */
export function modelsRouter(gateway: Gateway): Router {
  const router = Router();
  const list = fromList(gateway, (items, req, anthropic) => (anthropic ? anthropicPage(items, req) : { object: 'list', data: items.map(openaiModel) }));
  // A model ref holds a slash: the SDKs send it encoded (`demo%2Fmedium`, one segment), a hand-written
  // URL may not (`demo/medium`, two), so the id is every segment after /v1/models/.
  const one = fromList(gateway, (items, req, anthropic) => {
    const found = entry(items, (req.params.id as string[]).join('/'));
    return anthropic ? anthropicModel(found) : openaiModel(found);
  });
  router.get('/v1/models', beginRequest(anthropicCodec), list);
  router.get('/v1/models/*id', beginRequest(anthropicCodec), one);
  return router;
}
