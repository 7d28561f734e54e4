import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { JsonSchema } from './catalog.js';
import {
  authSchema,
  batchSchema,
  fairQueueSchema,
  httpUrl,
  scopeToken,
  statusPageSchema,
  tenantsSchema,
} from './config-sections.js';
import { promptsSchema, resourcesSchema, resourceTemplatesSchema } from './content-catalog.js';
import { ClusterError } from './errors.js';
import type { ToolFamilies } from './family.js';
import { ajvFor, schemaDialect } from './json-schema.js';
import { duration, type Resolved, resolvedAs, resolvedKeys, section, size } from './settings.js';

const port = z.number().int().min(0).max(65535);
const name = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_", starting with a letter');

/** Why a tool schema from the config cannot serve as an MCP tool schema, or undefined. */
function schemaProblem(schema: Record<string, unknown>): string | undefined {
  if (schema.type !== 'object')
    return `must be a JSON Schema with "type": "object" (MCP tool schemas describe an object)`;
  try {
    ajvFor(schemaDialect(schema), { strict: false }).compile(schema);
  } catch (err) {
    return `is not a valid JSON Schema: ${(err as Error).message}`;
  }
  return undefined;
}

const toolJsonSchema = z
  .record(z.string(), z.unknown())
  .superRefine((schema, ctx) => {
    const problem = schemaProblem(schema);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .transform((schema) => schema as JsonSchema)
  .optional();

/** A template name or backend kind: what registered families declare (checked when resolving). */
export type ToolTemplate = string;
/** A backend protocol a pool speaks, e.g. `openai-chat`; declared by a tool family. */
export type BackendKind = string;

/** What resolving a configuration needs of the registered tool families (see family.ts). */
export type ConfigFamilies = Pick<
  ToolFamilies,
  | 'families'
  | 'templates'
  | 'backendKinds'
  | 'template'
  | 'family'
  | 'backend'
  | 'defaultPools'
  | 'defaultTools'
> &
  Partial<Pick<ToolFamilies, 'optInPools'>>;

/** Names a family declares, as a zod enum whose message lists them. */
const oneOf = (names: readonly string[]) => z.enum(names as [string, ...string[]]);

const endpointSchema = section({
  /** The backend's base URL; without a user name or password (fetch refuses them, and URLs reach logs). */
  url: httpUrl.refine((url) => !/^[a-z]+:\/\/[^/?#]*@/i.test(url), {
    error: 'must not carry a user name or password: put the backend behind a network policy instead',
  }),
  /**
   * Calls this endpoint takes at once. Default the pool's `scaling.replicaConcurrency`, else the
   * backend kind's endpoint concurrency: 16 on openai-chat (match vLLM `--max-num-seqs`), 1 on
   * comfyui (ComfyUI runs one prompt at a time; more would only wait in its queue), 256 on
   * openai-embeddings and tei (calls are merged into batches, so the endpoint must admit enough
   * of them for batches to fill).
   */
  maxConcurrency: z.number().int().min(1).max(4096).optional(),
});

const scalingSchema = section({
  /** Fewest replicas; 0 lets an idle pool go to zero after `idleToZero`. */
  minReplicas: z.number().int().min(0).max(10_000).default(0),
  /** Most replicas. */
  maxReplicas: z.number().int().min(1).max(10_000).default(10),
  /** Queue wait the pool is sized for: calls of priority high and normal (interactive). */
  targetQueueWait: duration('1s'),
  /**
   * Time in which the pool should work off its low-priority (batch) backlog, queued and in flight.
   * Batch chunks are not sized like interactive calls: a job of a million texts waiting an hour is
   * on plan, so the autoscaler adds the replicas that finish the backlog within this time at the
   * measured per-replica rate, not the ones that would start every chunk within `targetQueueWait`.
   */
  batchDrainTarget: duration('1h'),
  /** Scale down only to the highest recommendation seen within this trailing window. */
  scaleDownStabilization: duration('5m'),
  /** Without arrivals, queued or running calls for this long, a pool with minReplicas 0 goes to zero. */
  idleToZero: duration('10m'),
  /** Growth cap per decision: multiply replicas by at most this... */
  maxScaleUpFactor: z.number().min(1).max(100).default(2),
  /** ...or add at most this many, whichever is larger. */
  maxScaleUpStep: z.number().int().min(0).max(10_000).default(4),
  /**
   * Calls one replica serves at once; default the backend kind's endpoint concurrency (16 chat, 256
   * embeddings, 1 comfyui). Also the default `maxConcurrency` of the pool's endpoints.
   */
  replicaConcurrency: z.number().int().min(1).max(100_000).optional(),
});

const gpuSchema = section({
  /** Model size in billions of parameters. */
  modelParamsBillions: z.number().positive().max(100_000),
  /** Bytes per weight: 2 for fp16/bf16, 1 for fp8/int8, 0.5 for int4. */
  bytesPerParam: z.number().positive().max(8).default(2),
  /** KV cache bytes per token (e.g. 128kb for an 8B model in fp16), 0 for models without one. */
  kvCachePerToken: resolvedAs('kvCacheBytesPerToken', size('0b')),
  /** Context length the server is started with, in tokens. */
  contextTokens: z.number().int().min(0).max(10_000_000).default(0),
  /** Sequences one replica serves at once (vLLM --max-num-seqs). */
  concurrentSequences: z.number().int().min(0).max(100_000).default(1),
});

const poolShape = {
  /** The protocol the endpoints speak: a backend kind a registered tool family declares. */
  backend: z.string(),
  /** GPU backend endpoints; empty means simulated backends under `mcp-cluster up`. */
  endpoints: z.array(endpointSchema).default([]),
  /** Calls one worker holds at once; default the sum of its endpoints' concurrency. */
  maxInFlight: z.number().int().min(1).max(100_000).optional(),
  /** Interval of the backend health probe. */
  healthInterval: duration('5s'),
  /** Timeout of one backend request's connection and first byte. */
  backendTimeout: duration('30s'),
  /** How the autoscaler sizes this pool (replicas = worker processes/pods, each with its GPU backend). */
  scaling: scalingSchema.prefault({}),
  /**
   * OAuth scopes (or API-key scopes) a caller needs for every tool of this pool when `auth.mode` is
   * not `none`, e.g. `[pool:embeddings]`; a tool's own `scopes` replace these. Default none: any
   * authenticated caller may call the pool's tools.
   */
  scopes: z.array(scopeToken).default([]),
  /** What one replica needs on a GPU, for `mcp-cluster plan`; absent: the plan prints no GPU sizing. */
  gpu: gpuSchema.optional(),
  /** Fair queueing among tenants in this pool (see `fairQueueSchema`). */
  fairQueue: fairQueueSchema.prefault({}),
};

/**
 * What every tool has, whatever its template. A tool's other keys are its family's settings
 * (`ToolFamily.settings`), validated against the family of its template; the kernel declares none.
 */
const toolShape = {
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'tool names are 1-64 of A-Z a-z 0-9 _ . -'),
  /** What the tool does: a template a registered tool family declares. */
  template: z.string(),
  /** Default the template's. */
  description: z.string().min(1).optional(),
  pool: name,
  /** Model name sent to the backend. */
  model: z.string().min(1),
  /** Deadline of a call that gives none. */
  deadline: duration('60s'),
  /**
   * Replaces the template's input schema (JSON Schema with `"type": "object"`); it should only
   * narrow what the template accepts. Resolved: the schema in effect, the template's by default.
   */
  inputSchema: toolJsonSchema,
  /** Replaces the template's output schema (JSON Schema). Resolved: the one in effect, if any. */
  outputSchema: toolJsonSchema,
  /**
   * Scopes a caller needs to see and call this tool when `auth.mode` is not `none`, e.g.
   * `[tools:embed]`. Absent: the pool's `scopes`. Resolved: the scopes in effect.
   */
  scopes: z.array(scopeToken).optional(),
};

/** Keys every tool has in the file; a family's settings cannot take these names. */
export const TOOL_KEYS: readonly string[] = Object.keys(toolShape);
/** Keys every tool has once resolved (`deadline` becomes `deadlineMs`). */
export const RESOLVED_TOOL_KEYS: readonly string[] = [...resolvedKeys(toolShape).values()];

/**
 * What every tool has, as parsed, before its template fills in description and schemas. The
 * resolved tool also holds its family's settings, read typed with the family's
 * `ToolSettingsSpec.of` (see settings.ts).
 */
export type ToolSettings = Resolved<typeof toolShape>;

/**
 * The schema of one tool entry: the keys every tool has, plus the settings of its template's
 * family, chosen by `template`. An unknown key is reported with what the tool takes, and with the
 * families whose setting it is when it belongs to another family.
 */
function toolEntrySchema(families: ConfigFamilies): z.ZodType<ToolSettings> {
  // Setting name → the families declaring it, for keys given to a tool of another family.
  const owners = new Map<string, string[]>();
  for (const family of families.families) {
    const names = Object.keys(family.templates);
    const templates = `template${names.length === 1 ? '' : 's'} ${names.join(', ')}`;
    for (const key of Object.keys(family.settings?.shape ?? {})) {
      owners.set(key, [...(owners.get(key) ?? []), `family ${family.name} (${templates})`]);
    }
  }
  const options = families.templates.map((template) => {
    const family = families.family(template);
    const own = family?.settings?.shape ?? {};
    const takes = `${TOOL_KEYS.join(', ')}${
      Object.keys(own).length > 0
        ? `, and the settings of family ${family?.name}: ${Object.keys(own).join(', ')}`
        : ` (family ${family?.name} declares no settings)`
    }`;
    const unknownKeys = (keys: readonly string[]) => {
      const named = keys.map((key) => {
        const elsewhere = owners.get(key);
        return elsewhere ? `"${key}" (a setting of ${elsewhere.join(' and ')})` : `"${key}"`;
      });
      return `Unrecognized key${keys.length > 1 ? 's' : ''}: ${named.join(', ')}; a tool of template ${template} takes ${takes}`;
    };
    return section({ ...toolShape, ...own, template: z.literal(template) }, unknownKeys);
  });
  const expected = families.templates.map((t) => JSON.stringify(t)).join('|');
  const byTemplate = z.discriminatedUnion('template', options as unknown as [z.ZodObject, ...z.ZodObject[]], {
    error: (issue) =>
      issue.code === 'invalid_union' && issue.note === 'No matching discriminator'
        ? `Invalid option: expected one of ${expected}`
        : undefined,
  });
  return byTemplate as unknown as z.ZodType<ToolSettings>;
}

/** A pool: its settings, its name, and what its backend kind implies. */
function resolvePool(families: ConfigFamilies, poolName: string, p: Resolved<typeof poolShape>) {
  const kind = families.backend(p.backend);
  // The enum admits only declared kinds, so `kind` is there.
  const concurrency = p.scaling.replicaConcurrency ?? kind?.endpointConcurrency ?? 1;
  return {
    name: poolName,
    ...p,
    // A replica is usually one worker beside one GPU server (endpoints often come from
    // MCP_CLUSTER_BACKENDS_<POOL>, which cannot say more): an endpoint admits what a replica serves.
    endpoints: p.endpoints.map((e) => ({ url: e.url, maxConcurrency: e.maxConcurrency ?? concurrency })),
    scaling: { ...p.scaling, replicaConcurrency: concurrency },
    /** Path of the backend health probe, the backend kind's (ComfyUI has no /health). */
    healthPath: kind?.healthPath ?? '/health',
  };
}

/** A tool: its settings, with the description and schemas in effect (its template's by default). */
function resolveTool(families: ConfigFamilies, t: ToolSettings) {
  const template = families.template(t.template);
  return {
    ...t,
    description: t.description ?? template?.description ?? t.name,
    inputSchema: t.inputSchema ?? template?.inputSchema(t) ?? ({ type: 'object' } as JsonSchema),
    outputSchema: t.outputSchema ?? template?.outputSchema?.(t),
  };
}

function buildConfigSchema(families: ConfigFamilies) {
  const poolSchema = section({ ...poolShape, backend: oneOf(families.backendKinds) });
  const toolSchema = toolEntrySchema(families);
  return section({
    cluster: section({ namespace: name.default('mcp') }).prefault({}),
    broker: section({
      /** `memory:`, `nats://host:port` or `redis://host:port`. */
      url: z.string().min(1).default('memory:'),
    }).prefault({}),
    /** Where result caches live: a `redis://` URL, or empty for an in-process cache per worker. */
    cache: section({ url: z.string().default('') }).prefault({}),
    ingress: section({
      host: z.string().min(1).default('127.0.0.1'),
      port: port.default(3000),
      /** Delivery (gRPC) server of this replica; workers dial `advertise` (default host:bound port). */
      delivery: section({
        host: z.string().min(1).default('127.0.0.1'),
        port: port.default(0),
        advertise: z.string().default(''),
      }).prefault({}),
      /** Host header values accepted (DNS-rebinding protection); hostnames, without port. */
      allowedHosts: z.array(z.string().min(1)).default(['localhost', '127.0.0.1', '[::1]']),
      /** Origin header values accepted, e.g. `https://app.example.com`; requests without Origin are allowed. */
      allowedOrigins: z.array(z.string().min(1)).default(['http://localhost', 'http://127.0.0.1']),
      maxBodySize: resolvedAs('maxBodyBytes', size('1mb')),
      /**
       * Deepest nesting of arrays and objects a request body may have, counting the JSON-RPC
       * message as level 1 (its `params` is level 2, a `tools/call`'s `arguments` level 3, one more
       * in a batch). Deeper bodies get HTTP 400 with a JSON-RPC Invalid Request error, found by a
       * scan of the raw text before it is parsed: code that recurses on the parsed value (schema
       * validation, serialisation) would overflow the stack a few thousand levels down. Below 8 the
       * MCP envelope itself (client capabilities in `_meta`) may not fit; above 1000 that recursion
       * comes within reach of the stack again.
       */
      maxJsonDepth: z.number().int().min(8).max(1000).default(64),
      /**
       * Time a client has to send a request's headers, from its first byte; then it gets HTTP 408 and
       * the connection is closed (a slowloris client holds no socket longer). At most `requestTimeout`.
       */
      headersTimeout: duration('10s'),
      /**
       * Time a client has to send a whole request, headers and body, from its first byte; then it
       * gets HTTP 408 and the connection is closed (a client trickling its body holds no socket
       * longer). Only receiving counts: the response streams for as long as the call runs.
       */
      requestTimeout: duration('30s'),
      /** HMAC key for session ids; every replica needs the same. Empty: random per process. */
      sessionSecret: z.string().default(''),
      /** Upper bound on a caller-given deadline. */
      maxDeadline: duration('10m'),
      /** How long SIGTERM waits for open calls before closing. */
      drainGrace: duration('30s'),
      statusPage: statusPageSchema,
    })
      // Read flat (`deliveryHost`) where the ingress starts its delivery server.
      .transform(({ delivery, ...ingress }) => ({
        ...ingress,
        deliveryHost: delivery.host,
        deliveryPort: delivery.port,
        deliveryAdvertise: delivery.advertise,
      }))
      .prefault({}),
    auth: authSchema,
    /** Per-tenant weights and limits (see `tenantsSchema`); `default` applies to unnamed tenants. */
    tenants: tenantsSchema,
    batch: batchSchema,
    /** Resources, resource templates and prompts every ingress serves from this file (see content-catalog.ts). */
    resources: resourcesSchema,
    resourceTemplates: resourceTemplatesSchema,
    prompts: promptsSchema,
    worker: section({
      /** Health and metrics HTTP port of a worker process (0: any free port). */
      port: port.default(0),
      host: z.string().min(1).default('127.0.0.1'),
      /** Time without heartbeat after which the broker redelivers a call. */
      ackWait: duration('30s'),
      /** Deliveries before a call is dead-lettered. */
      maxDeliveries: z.number().int().min(1).max(100).default(5),
      /**
       * Batch chunks (priority low) one worker runs at once, apart from its interactive room
       * (`maxInFlight`): a few keep the backend busy when no interactive call waits.
       */
      batchInFlight: z.number().int().min(1).max(1024).default(4),
      /**
       * How long SIGTERM waits for running calls before handing them back to the queue. Below 30 s
       * because a spot node's preemption notice is 30 s: with a 5 s preStop this leaves 5 s for the
       * hand-back and the exit (keep terminationGracePeriodSeconds above preStop + drainGrace).
       */
      drainGrace: duration('20s'),
      /** How long a worker tries to reach an ingress replica before calling the call undeliverable. */
      deliveryConnectTimeout: duration('5s'),
      /** How long a worker waits for the ingress to confirm a final chunk. */
      deliveryAckTimeout: duration('10s'),
    }).prefault({}),
    /** The built-in autoscaler (`mcp-cluster autoscaler`). */
    autoscaler: section({
      /**
       * What a decision changes: `kubernetes` patches each pool's Deployment scale, `local` starts and
       * stops worker processes on this machine, `metrics` only publishes the desired replicas as a gauge.
       */
      provider: z.enum(['kubernetes', 'local', 'metrics']).default('metrics'),
      /** How often every pool is observed and decided. */
      interval: duration('2s'),
      /** Health and metrics HTTP server of the autoscaler (0: any free port). */
      host: z.string().min(1).default('127.0.0.1'),
      port: port.default(0),
      /** `/metrics` URLs of ingress and worker processes, read for arrival and service rates. */
      metricsUrls: z.array(httpUrl).default([]),
      /** A Prometheus server to read rates from instead of `metricsUrls`, e.g. http://prometheus:9090. */
      prometheusUrl: z.union([httpUrl, z.literal('')]).default(''),
      kubernetes: section({
        /** Namespace of the worker Deployments; empty: the pod's own namespace, else `default`. */
        namespace: z.string().default(''),
        /** Deployment of pool P is `<deploymentPrefix>P`. */
        deploymentPrefix: z.string().min(1).default('mcp-cluster-worker-'),
      }).prefault({}),
    }).prefault({}),
    /** Inputs of `mcp-cluster plan`. */
    planner: section({
      /** Queue wait to plan for... */
      targetWait: duration('1s'),
      /** ...at this percentile of calls (0 < p < 1). */
      percentile: z.number().gt(0).lt(1).default(0.95),
      /** GPU price table; empty: the built-in example tiers (L4, L40S, A100-80GB, H100-80GB, H200). */
      gpuTiers: z
        .array(
          section({
            name: z.string().min(1).max(64),
            memory: size('80gb'),
            pricePerHour: z.number().min(0).max(1_000_000),
          }),
        )
        .default([]),
    }).prefault({}),
    /** Worker pools by name; default one pool per registered family (inference, embeddings, diffusion). */
    pools: z
      .record(name, poolSchema)
      .prefault(() => defaultPoolsDoc(families))
      .transform((pools) =>
        Object.fromEntries(Object.entries(pools).map(([n, p]) => [n, resolvePool(families, n, p)])),
      ),
    /** The tools served; default the families' built-in tools whose pool is declared. */
    tools: z
      .array(toolSchema)
      .min(1)
      .prefault(() => families.defaultTools.map((t) => ({ ...t })))
      .transform((tools) => tools.map((t) => resolveTool(families, t))),
  }).transform(({ cluster, broker, cache, tools, ...rest }) => ({
    namespace: cluster.namespace,
    brokerUrl: broker.url,
    /** `redis://` URL of the shared result cache; empty for an in-process cache. */
    cacheUrl: cache.url,
    ...rest,
    // A tool without scopes of its own takes its pool's (an unknown pool is reported by `check`).
    tools: tools.map((t) => ({ ...t, scopes: t.scopes ?? rest.pools[t.pool]?.scopes ?? [] })),
  }));
}

/** The configuration after parsing: every default applied, durations in `…Ms`, sizes in `…Bytes`. */
export type ResolvedConfig = z.output<ReturnType<typeof buildConfigSchema>>;
export type PoolConfig = ResolvedConfig['pools'][string];
/** Per-pool autoscaling settings, durations in ms. */
export type PoolScaling = PoolConfig['scaling'];
/** What one replica of a pool needs on a GPU (inputs of the GPU memory formula). */
export type PoolGpu = NonNullable<PoolConfig['gpu']>;
export type ToolConfig = ResolvedConfig['tools'][number];

/** The schema of each registered set of families, built on first use. */
const schemas = new WeakMap<ConfigFamilies, ReturnType<typeof buildConfigSchema>>();

function configSchema(families: ConfigFamilies): ReturnType<typeof buildConfigSchema> {
  let schema = schemas.get(families);
  if (!schema) {
    schema = buildConfigSchema(families);
    schemas.set(families, schema);
  }
  return schema;
}

/**
 * Environment variables that override the file, each naming the setting it replaces.
 * `MCP_CLUSTER_BACKENDS_<POOL>` takes a comma-separated list of endpoint URLs ({@link backendsVariable}).
 */
export const ENV_OVERRIDES: Record<string, string[]> = {
  MCP_CLUSTER_NAMESPACE: ['cluster', 'namespace'],
  MCP_CLUSTER_BROKER_URL: ['broker', 'url'],
  MCP_CLUSTER_CACHE_URL: ['cache', 'url'],
  MCP_CLUSTER_INGRESS_HOST: ['ingress', 'host'],
  MCP_CLUSTER_INGRESS_PORT: ['ingress', 'port'],
  MCP_CLUSTER_DELIVERY_HOST: ['ingress', 'delivery', 'host'],
  MCP_CLUSTER_DELIVERY_PORT: ['ingress', 'delivery', 'port'],
  MCP_CLUSTER_DELIVERY_ADVERTISE: ['ingress', 'delivery', 'advertise'],
  MCP_CLUSTER_SESSION_SECRET: ['ingress', 'sessionSecret'],
  MCP_CLUSTER_AUTH_MODE: ['auth', 'mode'],
  MCP_CLUSTER_AUTH_ALLOW_UNAUTHENTICATED: ['auth', 'allowUnauthenticated'],
  MCP_CLUSTER_AUTH_RESOURCE: ['auth', 'resource'],
  MCP_CLUSTER_OAUTH_ISSUER: ['auth', 'oauth', 'issuer'],
  MCP_CLUSTER_API_KEYS_FILE: ['auth', 'apiKeys', 'file'],
  MCP_CLUSTER_WORKER_HOST: ['worker', 'host'],
  MCP_CLUSTER_WORKER_PORT: ['worker', 'port'],
  MCP_CLUSTER_AUTOSCALER_PROVIDER: ['autoscaler', 'provider'],
  MCP_CLUSTER_AUTOSCALER_HOST: ['autoscaler', 'host'],
  MCP_CLUSTER_AUTOSCALER_PORT: ['autoscaler', 'port'],
  MCP_CLUSTER_PROMETHEUS_URL: ['autoscaler', 'prometheusUrl'],
  MCP_CLUSTER_ACK_WAIT: ['worker', 'ackWait'],
  /** `true` switches on the opt-in `conformance` pool and its fixture tools (`up --conformance`). */
  MCP_CLUSTER_CONFORMANCE: ['conformance', 'enabled'],
};

/**
 * The variable that sets the endpoints of `pool`: `MCP_CLUSTER_BACKENDS_` and the name upper-cased,
 * with `-` as `_` (environment variable names are C identifiers).
 */
export function backendsVariable(pool: string): string {
  return `MCP_CLUSTER_BACKENDS_${pool.toUpperCase().replace(/-/g, '_')}`;
}

/** The environment: variable name → value. */
export type ConfigEnv = Record<string, string | undefined>;

const NUMERIC_LEAVES = new Set(['port']);
/** Settings whose environment override is `true` or `false`. */
const BOOLEAN_LEAVES = new Set(['allowUnauthenticated', 'enabled']);

/**
 * Reads, overrides and validates a configuration against the registered tool `families` (they
 * say which templates and backend kinds exist). `source` is the YAML text (empty for all
 * defaults), `env` the environment. Throws `ClusterError('INVALID_CONFIG')` whose message lists
 * every offending setting by path with the value found.
 */
export function resolveConfig(
  families: ConfigFamilies,
  source: string,
  env: ConfigEnv = {},
  origin = 'config',
): ResolvedConfig {
  let raw: unknown;
  try {
    raw = source.trim() === '' ? {} : parseYaml(source);
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `${origin}: not valid YAML: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ClusterError('INVALID_CONFIG', `${origin}: the top level must be a mapping of settings`);
  }
  const doc = raw as Record<string, unknown>;
  applyEnv(doc, env, families);
  applyOptIn(doc, families, origin);

  const result = configSchema(families).safeParse(doc);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const path = issue.path.join('.') || '(top level)';
      const found = valueAt(doc, issue.path);
      const shown = found === undefined ? '' : ` (found ${show(found)})`;
      return `  ${path}: ${issue.message}${shown}`;
    });
    throw new ClusterError('INVALID_CONFIG', `${origin} is invalid:\n${lines.join('\n')}`);
  }
  const parsed = result.data;
  if (doc.tools === undefined) {
    // The default catalog offers each default tool whose pool the file declares, so a file that
    // only lists its own pools is not rejected for tools it never asked for.
    parsed.tools = parsed.tools.filter((tool) => parsed.pools[tool.pool] !== undefined);
  }
  check(families, parsed, origin);
  return parsed;
}

/** Reads the file at `path` (or none) and resolves it with `env`. */
export function loadConfig(
  families: ConfigFamilies,
  path: string | undefined,
  env: ConfigEnv = process.env,
): ResolvedConfig {
  if (!path) return resolveConfig(families, '', env, 'defaults');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `cannot read config file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return resolveConfig(families, text, env, path);
}

function applyEnv(doc: Record<string, unknown>, env: ConfigEnv, families: ConfigFamilies): void {
  for (const [variable, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[variable];
    if (value === undefined || value === '') continue;
    const leaf = path[path.length - 1] ?? '';
    const typed =
      NUMERIC_LEAVES.has(leaf) && /^\d+$/.test(value)
        ? Number(value)
        : BOOLEAN_LEAVES.has(leaf) && /^(true|false)$/.test(value)
          ? value === 'true'
          : value;
    setAt(doc, path, typed);
  }
  for (const [variable, value] of Object.entries(env)) {
    const m = /^MCP_CLUSTER_BACKENDS_([A-Z0-9_]+)$/.exec(variable);
    if (!m?.[1] || !value) continue;
    const pools = (doc.pools ?? defaultPoolsDoc(families)) as Record<string, Record<string, unknown>>;
    // A declared pool whose name has a `-` (Deployment names cannot have `_`) is reached with `_`.
    const declared = isMapping(pools)
      ? Object.keys(pools).filter((name) => backendsVariable(name) === variable)
      : [];
    if (declared.length > 1) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `${variable} matches pools ${declared.join(' and ')}; rename one of them (a "-" in a pool name reads as "_" here)`,
      );
    }
    const pool = declared[0] ?? m[1].toLowerCase();
    // Own keys only, so a pool named like `__proto__` is validated, not written onto Object.prototype.
    const found = isMapping(pools) && Object.hasOwn(pools, pool) ? pools[pool] : undefined;
    // A `pools` or pool entry that is not a mapping is left for validation to report by path.
    if (!isMapping(pools) || (found != null && !isMapping(found))) continue;
    doc.pools = pools;
    // A pool only the environment names runs on the first registered kind (openai-chat).
    const existing = found ?? {
      backend: families.defaultPools[pool] ?? families.optInPools?.[pool] ?? families.backendKinds[0],
    };
    existing.endpoints = value.split(',').map((url) => ({ url: url.trim() }));
    Object.defineProperty(pools, pool, {
      value: existing,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
}

/**
 * Opt-in pools (a family's `defaults.optIn`, e.g. `conformance`) switched on by a top-level
 * `<pool>: { enabled: true }`: the pool is added to the declared (or built-in) pools with its
 * backend kind, and when the file lists `tools`, the pool's tools it does not name are added.
 * The switch itself is removed before validation; anything but `{ enabled: boolean }` is refused.
 */
function applyOptIn(doc: Record<string, unknown>, families: ConfigFamilies, origin: string): void {
  for (const [pool, backend] of Object.entries(families.optInPools ?? {})) {
    if (!Object.hasOwn(doc, pool)) continue;
    const value = doc[pool];
    const keys = isMapping(value) ? Object.keys(value) : [];
    if (!isMapping(value) || typeof value.enabled !== 'boolean' || keys.some((k) => k !== 'enabled')) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `${origin} is invalid:\n  ${pool}: expected { enabled: true } or { enabled: false } (found ${show(value)})`,
      );
    }
    delete doc[pool];
    if (!value.enabled) continue;
    const pools = doc.pools ?? defaultPoolsDoc(families);
    // A `pools` that is not a mapping is left for validation to report by path.
    if (!isMapping(pools)) continue;
    if (!Object.hasOwn(pools, pool)) {
      Object.defineProperty(pools, pool, {
        value: { backend },
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    doc.pools = pools;
    if (Array.isArray(doc.tools)) {
      const named = new Set(doc.tools.map((t) => (isMapping(t) ? t.name : undefined)));
      for (const tool of families.defaultTools) {
        if (tool.pool === pool && !named.has(tool.name)) doc.tools.push({ ...tool });
      }
    }
  }
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A found value for an error message; YAML aliases can make it circular (JSON.stringify throws). A
 * URL's user name and password are shown as `***`: errors reach logs.
 */
function show(value: unknown): string {
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (typeof value === 'string') value = value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#@\s]*@/i, '$1***@');
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** The `pools` of the built-in configuration, as a file would write them. */
function defaultPoolsDoc(families: ConfigFamilies): Record<string, { backend: string }> {
  return Object.fromEntries(
    Object.entries(families.defaultPools).map(([pool, backend]) => [pool, { backend }]),
  );
}

function setAt(doc: Record<string, unknown>, path: string[], value: unknown): void {
  let node = doc;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] ?? ''] = value;
}

function valueAt(doc: unknown, path: PropertyKey[]): unknown {
  let node: unknown = doc;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** Checks across settings (a tool's pool, its backend kind, scaling bounds) that the schema cannot. */
function check(families: ConfigFamilies, c: ResolvedConfig, origin: string): void {
  const problems: string[] = [];
  if (Object.keys(c.pools).length === 0) problems.push('  pools: declare at least one pool');
  if (c.tools.length === 0) {
    problems.push(
      `  tools: no tool to serve; declare tools, or pools named like the defaults (${Object.keys(families.defaultPools).join(', ')})`,
    );
  }
  const toolNames = new Set<string>();
  c.tools.forEach((tool, i) => {
    if (toolNames.has(tool.name)) problems.push(`  tools.${i}.name: tool "${tool.name}" is declared twice`);
    toolNames.add(tool.name);
    const pool = c.pools[tool.pool];
    if (!pool) {
      problems.push(
        `  tools.${i}.pool: no pool "${tool.pool}" under pools (have: ${Object.keys(c.pools).join(', ') || 'none'})`,
      );
    } else {
      const backends = families.template(tool.template)?.backends ?? [];
      if (!backends.includes(pool.backend)) {
        problems.push(
          `  tools.${i}.template: template "${tool.template}" needs a pool with backend ${backends.join(' or ')}, but pool "${tool.pool}" has backend ${pool.backend}`,
        );
      }
    }
  });
  const { auth } = c;
  if (auth.mode === 'oauth' || auth.mode === 'oauth+api-keys') {
    if (auth.resource === '')
      problems.push(
        `  auth.resource: mode ${auth.mode} needs this server's canonical URL, e.g. https://mcp.example.com/mcp (tokens are checked to be issued for it)`,
      );
    if (auth.oauth.issuer === '')
      problems.push(`  auth.oauth.issuer: mode ${auth.mode} needs the authorization server's issuer URL`);
  }
  if ((auth.mode === 'api-keys' || auth.mode === 'oauth+api-keys') && auth.apiKeys.file === '') {
    problems.push(
      `  auth.apiKeys.file: mode ${auth.mode} needs the keys file (create keys with \`mcp-cluster keys create\`)`,
    );
  }
  if (c.cacheUrl !== '' && !/^rediss?:\/\//.test(c.cacheUrl)) {
    problems.push(`  cache.url: "${c.cacheUrl}" must be a redis:// URL, or empty for an in-process cache`);
  }
  // Checked here so a bad URL is reported with the other settings, not at first connect.
  if (!/^(memory:|nats:\/\/|tls:\/\/|redis:\/\/|rediss:\/\/)/.test(c.brokerUrl)) {
    problems.push(
      `  broker.url: "${c.brokerUrl}" has an unknown scheme; use nats://host:port, redis://host:port or memory:`,
    );
  }
  for (const [poolName, p] of Object.entries(c.pools)) {
    if (p.scaling.targetQueueWaitMs <= 0) {
      problems.push(`  pools.${poolName}.scaling.targetQueueWait: must be above 0 (e.g. 500ms)`);
    }
    if (p.scaling.batchDrainTargetMs <= 0) {
      problems.push(`  pools.${poolName}.scaling.batchDrainTarget: must be above 0 (e.g. 1h)`);
    }
    if (p.scaling.minReplicas > p.scaling.maxReplicas) {
      problems.push(
        `  pools.${poolName}.scaling.minReplicas: ${p.scaling.minReplicas} is above maxReplicas ${p.scaling.maxReplicas}`,
      );
    }
  }
  for (const [tenant, t] of Object.entries(c.tenants)) {
    for (const [poolName, limits] of Object.entries(t.limits)) {
      if (!c.pools[poolName]) {
        problems.push(
          `  tenants.${tenant}.limits.${poolName}: no pool "${poolName}" under pools (have: ${Object.keys(c.pools).join(', ') || 'none'})`,
        );
      } else if (limits.burst !== undefined && limits.rate === undefined) {
        problems.push(
          `  tenants.${tenant}.limits.${poolName}.burst: a burst needs a rate (calls/s) to refill it; set rate too`,
        );
      }
    }
  }
  // 0 would turn Node's timeout off, and Node refuses a headers timeout above the request timeout.
  const { headersTimeoutMs, requestTimeoutMs } = c.ingress;
  for (const [key, ms] of [
    ['headersTimeout', headersTimeoutMs],
    ['requestTimeout', requestTimeoutMs],
  ] as const) {
    if (ms <= 0)
      problems.push(
        `  ingress.${key}: must be above 0 (e.g. 10s), or a slow client holds its socket forever`,
      );
  }
  if (headersTimeoutMs > requestTimeoutMs && requestTimeoutMs > 0) {
    problems.push(
      `  ingress.headersTimeout: ${headersTimeoutMs}ms is above ingress.requestTimeout (${requestTimeoutMs}ms), which includes the headers; lower headersTimeout or raise requestTimeout`,
    );
  }
  // Each refresh reads the broker's queue figures once: faster than this only loads the broker.
  if (c.ingress.statusPage.refreshIntervalMs < 250) {
    problems.push(
      `  ingress.statusPage.refreshInterval: ${c.ingress.statusPage.refreshIntervalMs}ms is too short; use 250ms or more (e.g. 2s)`,
    );
  }
  // A shorter interval would only re-read the same broker figures; at 0 the loop would spin.
  if (c.autoscaler.intervalMs < 100) {
    problems.push(
      `  autoscaler.interval: ${c.autoscaler.intervalMs}ms is too short; use 100ms or more (e.g. 2s)`,
    );
  }
  if (problems.length > 0)
    throw new ClusterError('INVALID_CONFIG', `${origin} is invalid:\n${problems.join('\n')}`);
}

/** A stable id for this process, for logs and delivery (`<host>-<pid>`). */
export function processId(): string {
  return `${hostname()}-${process.pid}`;
}
