/**
 * Secrets never reach a log line or a decision event. Two layers:
 * - pino `redact` paths for structured fields that carry credentials (Authorization headers,
 *   API keys, tokens), for the gateway logger;
 * - a scrub of free text (error messages, reasons, and prompts when `metering.logPrompts` is on)
 *   that replaces what looks like a credential, and every secret the policy itself holds
 *   (provider keys, the SIEM token), with `[REDACTED]`. Credentials are found by the same finder
 *   as the policy's `request.secrets` (src/policy/content.ts: secretlint's recommended rules on
 *   normalised and decoded text), then by the few shapes below that it does not cover.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { PromptContent, normalizeText, redactSecrets } from '../policy/content.js';
import type { Policy } from '../policy/load.js';
import { PIECE_SECRET_MIN, replaceRanges, widenMatch, withoutPieces } from '../secretPieces.js';

export const REDACTED = '[REDACTED]';

/** Structured fields pino censors in every gateway log line. */
export const LOG_REDACT_PATHS: readonly string[] = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'request.headers.authorization',
  '*.headers.authorization',
  'headers["x-api-key"]',
  'req.headers["x-api-key"]',
  '*.headers["x-api-key"]',
  'apiKey',
  '*.apiKey',
  'token',
  '*.token',
  'secretAccessKey',
  '*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  'password',
  '*.password',
];

/**
 * Looser shapes than the finder reports, as they appear in provider error messages: authorization
 * schemes with a short token, JWT-looking strings, short or non-standard `sk-` keys, Google API
 * keys, and `name=value` assignments of secret-sounding names. Each keeps the prefix that tells a
 * reader what was there.
 */
const PATTERNS: readonly [RegExp, string][] = [
  [/\b(Bearer|Splunk|Basic)\s+[A-Za-z0-9\-._~+/]{8,}=*/gi, `$1 ${REDACTED}`],
  [/\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*/g, REDACTED],
  [/\bsk-[A-Za-z0-9_-]{12,}/g, REDACTED],
  [/\bAIza[0-9A-Za-z_-]{35}\b/g, REDACTED],
  [/\b(api[_-]?key|x-api-key|apikey|access[_-]?token|secret[_-]?access[_-]?key|client[_-]?secret|password|passwd|secret|token)(["']?\s*[:=]\s*["']?)[^\s"',;&]{4,}/gi, `$1$2${REDACTED}`],
];

/**
 * Replaces credentials in `text`: known secrets first (exact), then what the content finder sees
 * (AWS, GitHub, Slack, private keys and the rest of secretlint's set, also when disguised), then
 * the shapes above. When a credential was only visible after normalising (a zero-width character
 * inside it, fullwidth letters), the normalised text is what comes back.
 */
export function scrubSecrets(text: string, known: readonly string[] = NO_SECRETS): string {
  // Most texts scrubbed are short and recur (a decision's reason, a log message): their result is
  // kept, per list of known secrets, so the finder does not analyse the same text on every call.
  if (text.length > SCRUBBED_MAX_CHARS) return scrub(text, known);
  let memo = scrubbed.get(known);
  if (!memo) {
    memo = new Map();
    scrubbed.set(known, memo);
  }
  let out = memo.get(text);
  if (out === undefined) {
    out = scrub(text, known);
    if (memo.size >= SCRUBBED_MAX_ENTRIES) memo.delete(memo.keys().next().value!);
    memo.set(text, out);
  }
  return out;
}

const NO_SECRETS: readonly string[] = Object.freeze([]);
/** Texts up to this length have their scrubbed form kept, at most this many per list of known secrets (about 2 MB at most). */
const SCRUBBED_MAX_CHARS = 512;
const SCRUBBED_MAX_ENTRIES = 1000;
const scrubbed = new WeakMap<readonly string[], Map<string, string>>();

/** The scrub itself (see scrubSecrets). */
const URL_LIKE = /^[a-z][a-z0-9+.-]*:\/\//i;

function scrub(text: string, known: readonly string[]): string {
  let out = text;
  for (const secret of known) if (secret.length >= 6) out = out.split(secret).join(REDACTED);
  // A URL's host and path are public, whole words: only keys are looked for in pieces.
  for (const secret of known) if (secret.length >= PIECE_SECRET_MIN && !URL_LIKE.test(secret)) out = withoutPieces(out, secret, REDACTED);
  out = redactSecrets(out, REDACTED);
  for (const [re, replacement] of PATTERNS) out = out.replace(re, replacement);
  return out;
}

/** Prompt text quoted in free text is looked for in runs of this many characters. */
const QUOTE_CHARS = 12;
/** What stands for prompt text quoted in free text. */
export const PROMPT_QUOTED = '[PROMPT]';

/**
 * `text` with what it quotes of `sources` (the prompt's messages) replaced by `[PROMPT]`: a
 * provider's error message may quote the request, which is not recorded unless prompts are logged.
 * Every quote of 2 x QUOTE_CHARS - 1 characters or more is found (it holds an aligned run that the
 * prompt holds), and widened as far as text and prompt agree; a shorter one may stay.
 */
export function withoutQuotes(text: string, sources: readonly string[]): string {
  const ranges: [number, number][] = [];
  for (let i = 0; i + QUOTE_CHARS <= text.length; i += QUOTE_CHARS) {
    if (ranges.length > 0 && i < ranges.at(-1)![1]) continue;
    const run = text.slice(i, i + QUOTE_CHARS);
    for (const source of sources) {
      const at = source.indexOf(run);
      if (at < 0) continue;
      ranges.push(widenMatch(text, i, source, at, QUOTE_CHARS));
      break;
    }
  }
  return ranges.length === 0 ? text : replaceRanges(text, ranges, PROMPT_QUOTED);
}

/**
 * A prompt's texts (system prompt, then each message) scrubbed as scrubSecrets scrubs one, and of
 * what the content finder sees only across them: a credential cut in two between messages, which
 * the content rules read whole (src/policy/content.ts), has both of its pieces replaced. A text
 * with such a piece comes back normalised, as redactSecrets returns it.
 */
export function scrubPrompt(texts: readonly string[], known: readonly string[] = NO_SECRETS): string[] {
  const findings = texts.length > 1 ? new PromptContent(texts).findings : [];
  const out = [...texts];
  if (findings.length > 0) {
    const normalized = texts.map(normalizeText);
    let offset = 0;
    normalized.forEach((t, i) => {
      const ranges: [number, number][] = [];
      for (const f of findings) {
        const start = Math.max(f.start, offset);
        const end = Math.min(f.end, offset + t.length);
        if (start < end) ranges.push([start - offset, end - offset]);
      }
      if (ranges.length > 0) out[i] = replaceRanges(t, ranges, REDACTED);
      offset += t.length + 1; // the "\n" between texts
    });
  }
  return out.map((t) => scrubSecrets(t, known));
}

/** Scrubs every string inside a JSON-like value (prompts are arrays of message objects). */
export function scrubValue<T>(value: T, known: readonly string[] = NO_SECRETS): T {
  if (typeof value === 'string') return scrubSecrets(value, known) as T;
  if (Array.isArray(value)) return value.map((v) => scrubValue(v, known)) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubValue(v, known)])) as T;
  }
  return value;
}

const secretsByPolicy = new WeakMap<Policy, readonly string[]>();

/** The secret values a policy holds after its bindings were resolved, for exact-match scrubbing. */
export function policySecrets(policy: Policy): readonly string[] {
  const cached = secretsByPolicy.get(policy);
  if (cached) return cached;
  const found: string[] = [];
  for (const p of Object.values(policy.config.providers)) {
    if (p.kind === 'anthropic' || p.kind === 'openai') found.push(p.apiKey);
    if (p.kind === 'bedrock') for (const s of [p.secretAccessKey, p.sessionToken, p.accessKeyId]) if (s) found.push(s);
  }
  const fgaToken = policy.config.identity.openfga?.apiToken;
  if (fgaToken) found.push(fgaToken);
  const siemToken = policy.config.metering.siem?.token;
  if (siemToken) found.push(siemToken);
  // An alert webhook's URL can be its credential (a Slack incoming-webhook URL is), and so can its headers.
  for (const w of policy.config.alerts.webhooks) found.push(w.url, ...Object.values(w.headers).filter((v) => v.length >= 8));
  // Longest first, so a secret that contains another is replaced whole.
  const secrets = Object.freeze([...new Set(found)].sort((a, b) => b.length - a.length));
  secretsByPolicy.set(policy, secrets);
  return secrets;
}

/**
 * The gateway logger: JSON lines with credential fields censored and error messages scrubbed.
 * `dest` defaults to stderr (stdout belongs to the stdio transport).
 */
export function createLogger(level: string, dest: DestinationStream = pino.destination({ dest: 2, sync: false })): Logger {
  return pino(
    {
      name: 'tollgate',
      level,
      redact: { paths: [...LOG_REDACT_PATHS], censor: REDACTED },
      serializers: {
        err: (err: unknown) => {
          const s = pino.stdSerializers.err(err as Error) as unknown as Record<string, unknown>;
          return scrubValue(s);
        },
      },
      hooks: {
        // A message string is free text too: scrub it as well.
        logMethod(args, method) {
          const scrubbed = args.map((a) => (typeof a === 'string' ? scrubSecrets(a) : a));
          return method.apply(this, scrubbed as Parameters<typeof method>);
        },
      },
    },
    dest,
  );
}
