import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { JsonSchema } from './catalog.js';
import { check } from './config-check.js';
import { applyEnv, applyOptIn, type ConfigEnv, defaultPoolsDoc, show } from './config-doc.js';
import {
  authSchema,
  batchSchema,
  fairQueueSchema,
  httpUrl,
  resultLinksSchema,
  scopeToken,
  statusPageSchema,
  tenantsSchema,
} from './config-sections.js';

export type { ConfigEnv } from './config-doc.js';
export { backendsVariable, ENV_OVERRIDES } from './config-doc.js';

import { promptsSchema, resourcesSchema, resourceTemplatesSchema } from './content-catalog.js';
import { ClusterError } from './errors.js';
import type { ToolFamilies } from './family.js';
import { ajvFor, schemaDialect } from './json-schema.js';
import { paramHeadersOf } from './param-headers.js';
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
  // Its `x-mcp-header` marks: refused at start, not at the first call that carries the header.
  const headers = paramHeadersOf(schema);
  return typeof headers === 'string' ? headers : undefined;
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
      resultLinks: resultLinksSchema,
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

/** The zod schema of the configuration file for `families` (the configuration reference walks it). */
export function configSchema(families: ConfigFamilies): ReturnType<typeof buildConfigSchema> {
  let schema = schemas.get(families);
  if (!schema) {
    schema = buildConfigSchema(families);
    schemas.set(families, schema);
  }
  return schema;
}

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

function valueAt(doc: unknown, path: PropertyKey[]): unknown {
  let node: unknown = doc;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** A stable id for this process, for logs and delivery (`<host>-<pid>`). */
export function processId(): string {
  return `${hostname()}-${process.pid}`;
}
