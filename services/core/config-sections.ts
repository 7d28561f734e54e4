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
