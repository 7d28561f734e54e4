import { z } from 'zod';
import { duration, resolvedAs, section, size } from './settings.js';

// The settings of who may call the ingress (`auth`) and of batch jobs (`batch`): sections of the
// configuration schema in config.ts, kept apart because each is a concern of its own.

/** An http:// or https:// URL setting. */
export const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' });
/** An OAuth scope (RFC 6749 `scope-token`): printable ASCII without space, double quote or backslash. */
export const scopeToken = z
  .string()
  .regex(
    /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/,
    'a scope is 1-128 printable ASCII characters without space, double quote or backslash',
  );

/**
 * Who may call the ingress. `none` (the default) trusts every caller and honours the
 * `Mcp-Cluster-Tenant` header; it is allowed only on a loopback `ingress.host` unless
 * `allowUnauthenticated` says otherwise. `oauth` takes bearer JWT access tokens from
 * `oauth.issuer`; `api-keys` takes the keys in `apiKeys.file`; `oauth+api-keys` takes both.
 */
export const authSchema = section({
  mode: z.enum(['none', 'oauth', 'api-keys', 'oauth+api-keys']).default('none'),
  /** Lets mode `none` listen on a non-loopback address (behind a gateway that authenticates); logs a warning. */
  allowUnauthenticated: z.boolean().default(false),
  /**
   * This server's canonical resource URI (RFC 8707, RFC 9728), the URL agents reach `/mcp` at,
   * e.g. `https://mcp.example.com/mcp`. Tokens must be issued for it. Required with `oauth`.
   */
  resource: z.union([httpUrl, z.literal('')]).default(''),
  /** Scopes every request needs, whatever it calls; named in the 401 challenge. Default none. */
  requiredScopes: z.array(scopeToken).default([]),
  /** Tenants named in metric labels; calls of any other tenant are counted as `other`. */
  tenants: z.array(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/)).default([]),
  oauth: section({
    /** The authorization server's issuer identifier; tokens must carry it as `iss`. */
    issuer: z.union([httpUrl, z.literal('')]).default(''),
    /** Where the issuer's signing keys are; empty: read from the issuer's metadata (RFC 8414, then OpenID discovery). */
    jwksUri: z.union([httpUrl, z.literal('')]).default(''),
    /** The `aud` tokens must carry; empty: `auth.resource`. */
    audience: z.string().default(''),
    /** The claim naming the caller's tenant; a token without it is refused. */
    tenantClaim: z.string().min(1).max(128).default('tenant'),
    /** Clock difference tolerated on `exp` and `nbf`. */
    clockSkew: duration('30s'),
    /** Signature algorithms accepted (never `none`). */
    algorithms: z
      .array(
        z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']),
      )
      .min(1)
      .default(['RS256', 'PS256', 'ES256', 'EdDSA']),
    /** Least time between two fetches of the JWKS (a token with an unknown `kid` triggers one). */
    jwksCooldown: duration('30s'),
    /** How long fetched keys are trusted before the JWKS is fetched again. */
    jwksMaxAge: duration('10m'),
    /** Timeout of one JWKS or metadata fetch. */
    fetchTimeout: duration('5s'),
  }).prefault({}),
  apiKeys: section({
    /** YAML file of API keys (see `mcp-cluster keys create`); re-read on SIGHUP and when it changes. */
    file: z.string().default(''),
    /** How often the keys file is checked for changes. */
    pollInterval: duration('2s'),
  }).prefault({}),
}).prefault({});

/**
 * The ingress's live status page (`/status`, its figures at `/status/data`): queues, workers and
 * backends, calls per tool, busiest tenants, batch jobs and the autoscaler, for operators.
 */
export const statusPageSchema = section({
  /** Serve the page; false: `/status` answers 404 like any unknown path. */
  enabled: z.boolean().default(true),
  /**
   * Scope a caller needs to read the figures when `auth.mode` is not `none` (besides
   * `auth.requiredScopes`); without it 403 `insufficient_scope`. The page's HTML, script and
   * style carry no figures and are served to anyone.
   */
  scope: scopeToken.default('mcp-cluster:admin'),
  /** How often the page asks for new figures; also how long one gathering is shared between viewers. */
  refreshInterval: duration('2s'),
}).prefault({});

/** Large media in tool results as resource links (see `ResultLinks` in services/ingress). */
export const resultLinksSchema = section({
  /**
   * Image and audio items of at least this size are kept in the job store and answered as a
   * `resource_link` (`mcp-cluster://results/<id>`, read with resources/read at any replica).
   * 0 (default): every item inline.
   */
  minSize: size('0b'),
  /** How long a linked item stays readable (at most 24h). */
  ttl: duration('1h'),
}).prefault({});

/** Batch embedding jobs (`mcp-cluster batch`, `/v1/batches`, the `embed_batch` tool). */
export const batchSchema = section({
  /** Pool whose embed tool runs a job that names no pool. */
  pool: z.string().default('embeddings'),
  /** Texts per chunk: one low-priority queued call, micro-batched like any embed call. */
  chunkSize: z.number().int().min(1).max(1024).default(64),
  /** Most input lines (texts) of one job. */
  maxLines: z.number().int().min(1).max(10_000_000).default(1_000_000),
  /** Largest input file or inline input of one job. */
  maxInputSize: resolvedAs('maxInputBytes', size('200mb')),
  /** How long a job may run before it expires (OpenAI's `completion_window`). */
  completionWindow: duration('24h'),
  /** How long a finished job's record, input and results are kept, in hours (default 7 days). */
  retentionHours: z
    .number()
    .min(0.01)
    .max(24 * 365)
    .default(168),
  /** `memory:` broker only: a directory for job blobs instead of the heap (empty: the heap). */
  directory: z.string().default(''),
}).prefault({});

/** A tenant name as callers carry it (the OAuth claim, the API key's tenant, the header in mode `none`). */
const TENANT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * One tenant's limits on one pool, enforced by the ingress replicas together (see the admission
 * layer, services/ingress/admission). Each is optional: absent, that limit does not apply.
 */
const poolLimitsSchema = section({
  /** Calls per second admitted (a token bucket's refill), summed over every ingress replica. */
  rate: z
    .number()
    .gt(0, 'must be above 0 calls/s; leave rate out for no rate limit')
    .max(1_000_000)
    .optional(),
  /**
   * Calls admitted at once above `rate` (the bucket's size), in calls. Default: `rate` rounded up
   * (one second's worth), at least 1. Needs `rate`.
   */
  burst: z
    .number()
    .int('must be a whole number of calls')
    .min(1, 'must be at least 1 call')
    .max(10_000_000)
    .optional(),
  /** Calls admitted and not yet answered at once (held, queued or running), over every replica. */
  concurrency: z
    .number()
    .int('must be a whole number of calls')
    .min(1, 'must be at least 1 call; leave concurrency out for no cap')
    .max(10_000_000)
    .optional(),
});

/**
 * A tenant's share and limits. `weight` is its relative share of a pool whose fair queue is full
 * (a backlogged pool): with weights 2 and 1, two backlogged tenants are served cost 2:1.
 */
const tenantSchema = section({
  /** Relative share of a backlogged pool, above 0 (default 1). */
  weight: z
    .number()
    .gt(0, 'must be above 0 (a relative share, e.g. 1 or 2)')
    .max(10_000, 'must be at most 10000 (weights are relative: scale them all down)')
    .default(1),
  /** Limits per pool name (the pool must be declared under `pools`). */
  limits: z.record(z.string(), poolLimitsSchema).default({}),
});

/**
 * Tenants by name. `default` applies to every tenant not named here, each on its own (its own
 * buckets and caps, not one shared between them). Default: `default: { weight: 1 }` and no limits.
 */
export const tenantsSchema = z
  .record(z.string(), tenantSchema)
  .default({})
  .superRefine((tenants, ctx) => {
    for (const name of Object.keys(tenants)) {
      if (!TENANT_NAME.test(name))
        ctx.addIssue({ code: 'custom', path: [name], message: 'tenant names are 1-64 of A-Z a-z 0-9 _ . -' });
    }
  })
  .transform((tenants) => ({
    ...tenants,
    default: tenants.default ?? { weight: 1, limits: {} },
  }));

/**
 * A pool's fair queue: the queued cost (work no worker took yet, in the pool's cost units:
 * inference tokens, embedding texts, diffusion megapixel-steps) the broker holds, shared out among
 * the tenants with work waiting by weight. A tenant at its share waits at the ingress instead.
 */
export const fairQueueSchema = section({
  /**
   * Cost units the broker queue holds for all tenants together; 0 turns fair queueing off for
   * the pool. Default the pool's backend kind's (see the admission layer's `DEFAULT_FAIR_QUEUE_SIZE`):
   * openai-chat 16384 tokens, openai-embeddings and tei 2048 texts, comfyui 200 megapixel-steps,
   * any other kind 64 calls.
   */
  size: z.number().min(0, 'must be 0 (off) or more cost units').max(1e12).optional(),
});
