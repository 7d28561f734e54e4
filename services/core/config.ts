import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ClusterError } from './errors.js';
import { parseDurationMs, parseSizeBytes } from './units.js';

/** Longest duration a setting may have: 24 h (timers past 2^31 ms would fire at once). */
const MAX_DURATION_MS = 24 * 3_600_000;

const duration = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((value, ctx) => {
      const ms = parseDurationMs(value);
      if (ms === undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `"${value}" is not a duration; write e.g. 250ms, 30s, 2m or 1h`,
        });
        return z.NEVER;
      }
      if (ms > MAX_DURATION_MS) {
        ctx.addIssue({ code: 'custom', message: `"${value}" is longer than the 24h limit on durations` });
        return z.NEVER;
      }
      return ms;
    });

const size = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((value, ctx) => {
      const bytes = parseSizeBytes(value);
      if (bytes === undefined) {
        ctx.addIssue({ code: 'custom', message: `"${value}" is not a size; write e.g. 512kb, 1mb or 1gb` });
        return z.NEVER;
      }
      return bytes;
    });

const port = z.number().int().min(0).max(65535);
const name = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_", starting with a letter');
const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' });

/** Tool templates: each fixes the tool's argument schema and the adapter that runs it. */
export const TOOL_TEMPLATES = ['generate_text', 'chat', 'summarize', 'embed', 'generate_image'] as const;
export type ToolTemplate = (typeof TOOL_TEMPLATES)[number];

/**
 * Backend protocols a pool can speak: OpenAI-compatible chat completions and embeddings (vLLM,
 * OpenAI), Hugging Face TEI's `/embed`, and ComfyUI's HTTP and WebSocket API.
 */
export const BACKEND_KINDS = ['openai-chat', 'openai-embeddings', 'tei', 'comfyui'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

/** The backend kinds a pool must speak to serve a tool of each template. */
export const TEMPLATE_BACKENDS: Record<ToolTemplate, readonly BackendKind[]> = {
  generate_text: ['openai-chat'],
  chat: ['openai-chat'],
  summarize: ['openai-chat'],
  embed: ['openai-embeddings', 'tei'],
  generate_image: ['comfyui'],
};

const endpointSchema = z.strictObject({
  url: httpUrl,
  /**
   * Calls this endpoint takes at once. Default by the pool's backend: 16 on openai-chat (match
   * vLLM `--max-num-seqs`), 1 on comfyui (ComfyUI runs one prompt at a time; more would only
   * wait in its queue), 256 on openai-embeddings and tei (calls are merged into batches, so the
   * endpoint must admit enough of them for batches to fill).
   */
  maxConcurrency: z.number().int().min(1).max(4096).optional(),
});

const scalingSchema = z.strictObject({
  /** Fewest replicas; 0 lets an idle pool go to zero after `idleToZero`. */
  minReplicas: z.number().int().min(0).max(10_000).default(0),
  /** Most replicas. */
  maxReplicas: z.number().int().min(1).max(10_000).default(10),
  /** Queue wait the pool is sized for. */
  targetQueueWait: duration('1s'),
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

const gpuSchema = z.strictObject({
  /** Model size in billions of parameters. */
  modelParamsBillions: z.number().positive().max(100_000),
  /** Bytes per weight: 2 for fp16/bf16, 1 for fp8/int8, 0.5 for int4. */
  bytesPerParam: z.number().positive().max(8).default(2),
  /** KV cache bytes per token (e.g. 128kb for an 8B model in fp16), 0 for models without one. */
  kvCachePerToken: size('0b'),
  /** Context length the server is started with, in tokens. */
  contextTokens: z.number().int().min(0).max(10_000_000).default(0),
  /** Sequences one replica serves at once (vLLM --max-num-seqs). */
  concurrentSequences: z.number().int().min(0).max(100_000).default(1),
});

const poolSchema = z.strictObject({
  backend: z.enum(BACKEND_KINDS),
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
  /** What one replica needs on a GPU, for `mcp-cluster plan`; absent: the plan prints no GPU sizing. */
  gpu: gpuSchema.optional(),
});

const toolSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'tool names are 1-64 of A-Z a-z 0-9 _ . -'),
  template: z.enum(TOOL_TEMPLATES),
  description: z.string().min(1).optional(),
  pool: name,
  /** Model name sent to the backend. */
  model: z.string().min(1),
  /** Deadline of a call that gives none. */
  deadline: duration('60s'),
  /** Largest `max_tokens` a caller may ask for (generate_text). */
  maxTokens: z.number().int().min(1).max(1_000_000).default(4096),
  /** Most texts in one call (embed). */
  maxTexts: z.number().int().min(1).max(100_000).default(256),
  /** Longest text in characters (embed, summarize). */
  maxTextLength: z.number().int().min(1).max(10_000_000).default(100_000),
  /** Largest image width and height in pixels (generate_image). */
  maxImageSize: z.number().int().min(64).max(8192).default(1024),
  /** Most sampler steps (generate_image). */
  maxSteps: z.number().int().min(1).max(500).default(50),
  /** ComfyUI API-format workflow file (generate_image); default the one shipped in workers/diffusion. */
  workflow: z.string().min(1).optional(),
  /** Micro-batching across calls (embed): a batch closes at maxSize texts, maxTokens tokens or after maxWait. */
  batch: z
    .strictObject({
      // 32 is TEI's default --max-client-batch-size; raise it for vLLM or a TEI allowing more.
      maxSize: z.number().int().min(1).max(100_000).default(32),
      maxTokens: z.number().int().min(1).max(10_000_000).default(16_384),
      maxWait: duration('5ms'),
    })
    .prefault({}),
  /** Result cache (embed), keyed by model, normalisation and a hash of the text. */
  cache: z
    .strictObject({
      enabled: z.boolean().default(true),
      ttl: duration('1h'),
      maxEntries: z.number().int().min(1).max(100_000_000).default(100_000),
    })
    .prefault({}),
  /** Replaces the template's input schema (JSON Schema); it should only narrow what the template accepts. */
  inputSchema: z.record(z.string(), z.unknown()).optional(),
  /** Replaces the template's output schema (JSON Schema). */
  outputSchema: z.record(z.string(), z.unknown()).optional(),
});

const configSchema = z.strictObject({
  cluster: z.strictObject({ namespace: name.default('mcp') }).prefault({}),
  broker: z
    .strictObject({
      /** `memory:`, `nats://host:port` or `redis://host:port`. */
      url: z.string().min(1).default('memory:'),
    })
    .prefault({}),
  /** Where result caches live: a `redis://` URL, or empty for an in-process cache per worker. */
  cache: z.strictObject({ url: z.string().default('') }).prefault({}),
  ingress: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: port.default(3000),
      /** Delivery (gRPC) server of this replica; workers dial `advertise` (default host:bound port). */
      delivery: z
        .strictObject({
          host: z.string().min(1).default('127.0.0.1'),
          port: port.default(0),
          advertise: z.string().default(''),
        })
        .prefault({}),
      /** Host header values accepted (DNS-rebinding protection); hostnames, without port. */
      allowedHosts: z.array(z.string().min(1)).default(['localhost', '127.0.0.1', '[::1]']),
      /** Origin header values accepted, e.g. `https://app.example.com`; requests without Origin are allowed. */
      allowedOrigins: z.array(z.string().min(1)).default(['http://localhost', 'http://127.0.0.1']),
      maxBodySize: size('1mb'),
      /** HMAC key for session ids; every replica needs the same. Empty: random per process. */
      sessionSecret: z.string().default(''),
      /** Upper bound on a caller-given deadline. */
      maxDeadline: duration('10m'),
      /** How long SIGTERM waits for open calls before closing. */
      drainGrace: duration('30s'),
    })
    .prefault({}),
  worker: z
    .strictObject({
      /** Health and metrics HTTP port of a worker process (0: any free port). */
      port: port.default(0),
      host: z.string().min(1).default('127.0.0.1'),
      /** Time without heartbeat after which the broker redelivers a call. */
      ackWait: duration('30s'),
      /** Deliveries before a call is dead-lettered. */
      maxDeliveries: z.number().int().min(1).max(100).default(5),
      /** How long SIGTERM waits for running calls before handing them back. */
      drainGrace: duration('30s'),
      /** How long a worker tries to reach an ingress replica before calling the call undeliverable. */
      deliveryConnectTimeout: duration('5s'),
      /** How long a worker waits for the ingress to confirm a final chunk. */
      deliveryAckTimeout: duration('10s'),
    })
    .prefault({}),
  /** The built-in autoscaler (`mcp-cluster autoscaler`). */
  autoscaler: z
    .strictObject({
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
      kubernetes: z
        .strictObject({
          /** Namespace of the worker Deployments; empty: the pod's own namespace, else `default`. */
          namespace: z.string().default(''),
          /** Deployment of pool P is `<deploymentPrefix>P`. */
          deploymentPrefix: z.string().min(1).default('mcp-cluster-worker-'),
        })
        .prefault({}),
    })
    .prefault({}),
  /** Inputs of `mcp-cluster plan`. */
  planner: z
    .strictObject({
      /** Queue wait to plan for... */
      targetWait: duration('1s'),
      /** ...at this percentile of calls (0 < p < 1). */
      percentile: z.number().gt(0).lt(1).default(0.95),
      /** GPU price table; empty: the built-in example tiers (L4, L40S, A100-80GB, H100-80GB, H200). */
      gpuTiers: z
        .array(
          z.strictObject({
            name: z.string().min(1).max(64),
            memory: size('80gb'),
            pricePerHour: z.number().min(0).max(1_000_000),
          }),
        )
        .default([]),
    })
    .prefault({}),
  pools: z.record(name, poolSchema).default({
    inference: poolSchema.parse({ backend: 'openai-chat' }),
    embeddings: poolSchema.parse({ backend: 'openai-embeddings' }),
    diffusion: poolSchema.parse({ backend: 'comfyui' }),
  }),
  tools: z
    .array(toolSchema)
    .min(1)
    .default([
      toolSchema.parse({
        name: 'generate_text',
        template: 'generate_text',
        pool: 'inference',
        model: 'sim-llm',
        deadline: '120s',
      }),
      toolSchema.parse({
        name: 'chat',
        template: 'chat',
        pool: 'inference',
        model: 'sim-llm',
        deadline: '120s',
      }),
      toolSchema.parse({
        name: 'summarize',
        template: 'summarize',
        pool: 'inference',
        model: 'sim-llm',
        deadline: '120s',
      }),
      toolSchema.parse({
        name: 'embed',
        template: 'embed',
        pool: 'embeddings',
        model: 'sim-embed',
        deadline: '60s',
      }),
      toolSchema.parse({
        name: 'generate_image',
        template: 'generate_image',
        pool: 'diffusion',
        model: 'sim-diffusion',
        deadline: '300s',
      }),
    ]),
});

type Parsed = z.output<typeof configSchema>;

/** The configuration after parsing: every default applied, durations in `Ms`, sizes in `Bytes`. */
export interface ResolvedConfig {
  namespace: string;
  brokerUrl: string;
  /** `redis://` URL of the shared result cache; empty for an in-process cache. */
  cacheUrl: string;
  ingress: {
    host: string;
    port: number;
    deliveryHost: string;
    deliveryPort: number;
    deliveryAdvertise: string;
    allowedHosts: string[];
    allowedOrigins: string[];
    maxBodyBytes: number;
    sessionSecret: string;
    maxDeadlineMs: number;
    drainGraceMs: number;
  };
  worker: {
    host: string;
    port: number;
    ackWaitMs: number;
    maxDeliveries: number;
    drainGraceMs: number;
    deliveryConnectTimeoutMs: number;
    deliveryAckTimeoutMs: number;
  };
  pools: Record<string, PoolConfig>;
  tools: ToolConfig[];
  autoscaler: {
    provider: 'kubernetes' | 'local' | 'metrics';
    intervalMs: number;
    host: string;
    port: number;
    metricsUrls: string[];
    prometheusUrl: string;
    kubernetes: { namespace: string; deploymentPrefix: string };
  };
  planner: {
    targetWaitMs: number;
    percentile: number;
    gpuTiers: { name: string; memoryBytes: number; pricePerHour: number }[];
  };
}

/** Per-pool autoscaling settings, durations in ms. */
export interface PoolScaling {
  minReplicas: number;
  maxReplicas: number;
  targetQueueWaitMs: number;
  scaleDownStabilizationMs: number;
  idleToZeroMs: number;
  maxScaleUpFactor: number;
  maxScaleUpStep: number;
  /** Calls one replica serves at once (resolved: never undefined). */
  replicaConcurrency: number;
}

/** What one replica of a pool needs on a GPU (inputs of the GPU memory formula). */
export interface PoolGpu {
  modelParamsBillions: number;
  bytesPerParam: number;
  kvCacheBytesPerToken: number;
  contextTokens: number;
  concurrentSequences: number;
}

export interface PoolConfig {
  name: string;
  backend: BackendKind;
  endpoints: { url: string; maxConcurrency: number }[];
  maxInFlight: number | undefined;
  healthIntervalMs: number;
  backendTimeoutMs: number;
  scaling: PoolScaling;
  gpu: PoolGpu | undefined;
}

export interface ToolConfig {
  name: string;
  template: ToolTemplate;
  description: string | undefined;
  pool: string;
  model: string;
  deadlineMs: number;
  maxTokens: number;
  maxTexts: number;
  /** Longest text in characters (embed, summarize). */
  maxTextLength: number;
  /** Largest image width and height in pixels (generate_image). */
  maxImageSize: number;
  maxSteps: number;
  /** ComfyUI workflow file; undefined for the shipped default. */
  workflow: string | undefined;
  /** Micro-batching across calls (embed). */
  batch: { maxSize: number; maxTokens: number; maxWaitMs: number };
  /** Result cache (embed). */
  cache: { enabled: boolean; ttlMs: number; maxEntries: number };
  inputSchema: Record<string, unknown> | undefined;
  outputSchema: Record<string, unknown> | undefined;
}

/**
 * Environment variables that override the file, each naming the setting it replaces.
 * `MCP_CLUSTER_BACKENDS_<POOL>` takes a comma-separated list of endpoint URLs.
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
  MCP_CLUSTER_WORKER_HOST: ['worker', 'host'],
  MCP_CLUSTER_WORKER_PORT: ['worker', 'port'],
  MCP_CLUSTER_AUTOSCALER_PROVIDER: ['autoscaler', 'provider'],
  MCP_CLUSTER_AUTOSCALER_HOST: ['autoscaler', 'host'],
  MCP_CLUSTER_AUTOSCALER_PORT: ['autoscaler', 'port'],
  MCP_CLUSTER_PROMETHEUS_URL: ['autoscaler', 'prometheusUrl'],
  MCP_CLUSTER_ACK_WAIT: ['worker', 'ackWait'],
};

const NUMERIC_LEAVES = new Set(['port']);

/**
 * Reads, overrides and validates a configuration. `source` is the YAML text (empty for all
 * defaults), `env` the environment. Throws `ClusterError('INVALID_CONFIG')` whose message lists
 * every offending setting by path with the value found.
 */
export function resolveConfig(
  source: string,
  env: Record<string, string | undefined> = {},
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
  applyEnv(doc, env);

  const result = configSchema.safeParse(doc);
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
  return finish(parsed, origin);
}

/** Reads the file at `path` (or none) and resolves it with `env`. */
export function loadConfig(
  path: string | undefined,
  env: Record<string, string | undefined> = process.env,
): ResolvedConfig {
  if (!path) return resolveConfig('', env, 'defaults');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `cannot read config file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return resolveConfig(text, env, path);
}

function applyEnv(doc: Record<string, unknown>, env: Record<string, string | undefined>): void {
  for (const [variable, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[variable];
    if (value === undefined || value === '') continue;
    const leaf = path[path.length - 1] ?? '';
    setAt(doc, path, NUMERIC_LEAVES.has(leaf) && /^\d+$/.test(value) ? Number(value) : value);
  }
  for (const [variable, value] of Object.entries(env)) {
    const m = /^MCP_CLUSTER_BACKENDS_([A-Z0-9_]+)$/.exec(variable);
    if (!m?.[1] || !value) continue;
    const pool = m[1].toLowerCase();
    const pools = (doc.pools ?? defaultPoolsDoc()) as Record<string, Record<string, unknown>>;
    // Own keys only, so a pool named like `__proto__` is validated, not written onto Object.prototype.
    const found = isMapping(pools) && Object.hasOwn(pools, pool) ? pools[pool] : undefined;
    // A `pools` or pool entry that is not a mapping is left for validation to report by path.
    if (!isMapping(pools) || (found != null && !isMapping(found))) continue;
    doc.pools = pools;
    const existing = found ?? { backend: DEFAULT_POOL_BACKENDS[pool] ?? 'openai-chat' };
    existing.endpoints = value.split(',').map((url) => ({ url: url.trim() }));
    Object.defineProperty(pools, pool, {
      value: existing,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A found value for an error message; YAML aliases can make it circular (JSON.stringify throws). */
function show(value: unknown): string {
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** Calls an endpoint takes at once when its setting is absent (see `maxConcurrency`). */
export const DEFAULT_ENDPOINT_CONCURRENCY: Record<BackendKind, number> = {
  'openai-chat': 16,
  'openai-embeddings': 256,
  tei: 256,
  comfyui: 1,
};

/** Backends of the default pools, used when an override names a pool the file does not declare. */
const DEFAULT_POOL_BACKENDS: Record<string, BackendKind> = {
  inference: 'openai-chat',
  embeddings: 'openai-embeddings',
  diffusion: 'comfyui',
};

function defaultPoolsDoc(): Record<string, Record<string, unknown>> {
  return Object.fromEntries(
    Object.entries(DEFAULT_POOL_BACKENDS).map(([pool, backend]) => [pool, { backend }]),
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

/** Why a tool schema from the config cannot serve as an MCP tool schema, or undefined. */
function schemaProblem(schema: Record<string, unknown>): string | undefined {
  if (schema.type !== 'object')
    return `must be a JSON Schema with "type": "object" (MCP tool schemas describe an object)`;
  try {
    new Ajv({ strict: false }).compile(schema);
  } catch (err) {
    return `is not a valid JSON Schema: ${(err as Error).message}`;
  }
  return undefined;
}

function finish(c: Parsed, origin: string): ResolvedConfig {
  const problems: string[] = [];
  if (Object.keys(c.pools).length === 0) problems.push('  pools: declare at least one pool');
  if (c.tools.length === 0) {
    problems.push(
      '  tools: no tool to serve; declare tools, or pools named like the defaults (inference, embeddings, diffusion)',
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
    } else if (!TEMPLATE_BACKENDS[tool.template].includes(pool.backend)) {
      problems.push(
        `  tools.${i}.template: template "${tool.template}" needs a pool with backend ${TEMPLATE_BACKENDS[tool.template].join(' or ')}, but pool "${tool.pool}" has backend ${pool.backend}`,
      );
    }
    for (const key of ['inputSchema', 'outputSchema'] as const) {
      const schema = tool[key];
      if (!schema) continue;
      const problem = schemaProblem(schema);
      if (problem) problems.push(`  tools.${i}.${key}: ${problem}`);
    }
  });
  if (c.cache.url !== '' && !/^rediss?:\/\//.test(c.cache.url)) {
    problems.push(`  cache.url: "${c.cache.url}" must be a redis:// URL, or empty for an in-process cache`);
  }
  // Checked here so a bad URL is reported with the other settings, not at first connect.
  if (!/^(memory:|nats:\/\/|tls:\/\/|redis:\/\/|rediss:\/\/)/.test(c.broker.url)) {
    problems.push(
      `  broker.url: "${c.broker.url}" has an unknown scheme; use nats://host:port, redis://host:port or memory:`,
    );
  }
  for (const [poolName, p] of Object.entries(c.pools)) {
    if (p.scaling.targetQueueWait <= 0) {
      problems.push(`  pools.${poolName}.scaling.targetQueueWait: must be above 0 (e.g. 500ms)`);
    }
    if (p.scaling.minReplicas > p.scaling.maxReplicas) {
      problems.push(
        `  pools.${poolName}.scaling.minReplicas: ${p.scaling.minReplicas} is above maxReplicas ${p.scaling.maxReplicas}`,
      );
    }
  }
  // A shorter interval would only re-read the same broker figures; at 0 the loop would spin.
  if (c.autoscaler.interval < 100) {
    problems.push(
      `  autoscaler.interval: ${c.autoscaler.interval}ms is too short; use 100ms or more (e.g. 2s)`,
    );
  }
  if (problems.length > 0)
    throw new ClusterError('INVALID_CONFIG', `${origin} is invalid:\n${problems.join('\n')}`);

  return {
    namespace: c.cluster.namespace,
    brokerUrl: c.broker.url,
    cacheUrl: c.cache.url,
    ingress: {
      host: c.ingress.host,
      port: c.ingress.port,
      deliveryHost: c.ingress.delivery.host,
      deliveryPort: c.ingress.delivery.port,
      deliveryAdvertise: c.ingress.delivery.advertise,
      allowedHosts: c.ingress.allowedHosts,
      allowedOrigins: c.ingress.allowedOrigins,
      maxBodyBytes: c.ingress.maxBodySize,
      sessionSecret: c.ingress.sessionSecret,
      maxDeadlineMs: c.ingress.maxDeadline,
      drainGraceMs: c.ingress.drainGrace,
    },
    worker: {
      host: c.worker.host,
      port: c.worker.port,
      ackWaitMs: c.worker.ackWait,
      maxDeliveries: c.worker.maxDeliveries,
      drainGraceMs: c.worker.drainGrace,
      deliveryConnectTimeoutMs: c.worker.deliveryConnectTimeout,
      deliveryAckTimeoutMs: c.worker.deliveryAckTimeout,
    },
    pools: Object.fromEntries(
      Object.entries(c.pools).map(([poolName, p]) => [
        poolName,
        {
          name: poolName,
          backend: p.backend,
          // Copied: the default pools are parsed once, and callers must not share their arrays.
          endpoints: p.endpoints.map((e) => ({
            url: e.url,
            // A replica is usually one worker beside one GPU server (endpoints often come from
            // MCP_CLUSTER_BACKENDS_<POOL>, which cannot say more): it admits what a replica serves.
            maxConcurrency:
              e.maxConcurrency ?? p.scaling.replicaConcurrency ?? DEFAULT_ENDPOINT_CONCURRENCY[p.backend],
          })),
          maxInFlight: p.maxInFlight,
          healthIntervalMs: p.healthInterval,
          backendTimeoutMs: p.backendTimeout,
          scaling: {
            minReplicas: p.scaling.minReplicas,
            maxReplicas: p.scaling.maxReplicas,
            targetQueueWaitMs: p.scaling.targetQueueWait,
            scaleDownStabilizationMs: p.scaling.scaleDownStabilization,
            idleToZeroMs: p.scaling.idleToZero,
            maxScaleUpFactor: p.scaling.maxScaleUpFactor,
            maxScaleUpStep: p.scaling.maxScaleUpStep,
            replicaConcurrency: p.scaling.replicaConcurrency ?? DEFAULT_ENDPOINT_CONCURRENCY[p.backend],
          },
          gpu: p.gpu && {
            modelParamsBillions: p.gpu.modelParamsBillions,
            bytesPerParam: p.gpu.bytesPerParam,
            kvCacheBytesPerToken: p.gpu.kvCachePerToken,
            contextTokens: p.gpu.contextTokens,
            concurrentSequences: p.gpu.concurrentSequences,
          },
        },
      ]),
    ),
    autoscaler: {
      provider: c.autoscaler.provider,
      intervalMs: c.autoscaler.interval,
      host: c.autoscaler.host,
      port: c.autoscaler.port,
      metricsUrls: c.autoscaler.metricsUrls,
      prometheusUrl: c.autoscaler.prometheusUrl,
      kubernetes: { ...c.autoscaler.kubernetes },
    },
    planner: {
      targetWaitMs: c.planner.targetWait,
      percentile: c.planner.percentile,
      gpuTiers: c.planner.gpuTiers.map((t) => ({
        name: t.name,
        memoryBytes: t.memory,
        pricePerHour: t.pricePerHour,
      })),
    },
    tools: c.tools.map((t) => ({
      name: t.name,
      template: t.template,
      description: t.description,
      pool: t.pool,
      model: t.model,
      deadlineMs: t.deadline,
      maxTokens: t.maxTokens,
      maxTexts: t.maxTexts,
      maxTextLength: t.maxTextLength,
      maxImageSize: t.maxImageSize,
      maxSteps: t.maxSteps,
      workflow: t.workflow,
      batch: { maxSize: t.batch.maxSize, maxTokens: t.batch.maxTokens, maxWaitMs: t.batch.maxWait },
      cache: { enabled: t.cache.enabled, ttlMs: t.cache.ttl, maxEntries: t.cache.maxEntries },
      inputSchema: t.inputSchema,
      outputSchema: t.outputSchema,
    })),
  };
}

/** A stable id for this process, for logs and delivery (`<host>-<pid>`). */
export function processId(): string {
  return `${hostname()}-${process.pid}`;
}
