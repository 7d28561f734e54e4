import { randomBytes } from 'node:crypto';
import { families } from '../../services/cli/families.js';
import type { ResolvedConfig } from '../../services/core/index.js';
import { uniqueNamespace } from '../../test/support/brokers.js';

// The one configuration every system under test is derived from: the cluster systems run it as
// their config file, and the single-process servers (direct, peer) take their tools (model names,
// limits, deadlines) and pool settings (backend timeout) from the same file, so all five send the
// backend the same requests.

/** Calls one inference worker holds, and what its one endpoint admits (the config's upper bound). */
export const INFERENCE_IN_FLIGHT = 4096;

/** What the bench config is built from. */
export interface BenchConfigOptions {
  /** The simulated (or real) vLLM serving chat completions and embeddings. */
  backendUrl: string;
  /** `memory:`, `nats://…` or `redis://…`. Default `memory:`. */
  brokerUrl?: string;
  /** Default a fresh unique one, so runs never share streams or keys. */
  namespace?: string;
  /** Shared HMAC key of the ingress replicas. Default a fresh random one. */
  sessionSecret?: string;
  /** Embedding result cache of the cluster. Default false (direct and peer have none). */
  embedCache?: boolean;
  /** Calls one inference worker holds. Default INFERENCE_IN_FLIGHT. */
  inferenceInFlight?: number;
  /** More top-level YAML sections (`auth:` from auth.ts, `batch:`); default none. */
  extraYaml?: string;
  /** The embed tool's `batch.backgroundPause` (e.g. `0ms`); default the tool's own (200ms). */
  embedBackgroundPause?: string;
  /** More settings of the inference pool, YAML lines at the pool's indent (e.g. `fairQueue: { size: 64 }`). */
  inferencePoolYaml?: string[];
}

/**
 * The YAML of the bench cluster: two pools on `backendUrl` (no diffusion pool, so `up` starts no
 * simulated backend), the tools `generate_text` and `embed` with the catalog's defaults (embed
 * micro-batching included), short drain graces so a stop never waits long.
 */
export function benchConfigYaml(options: BenchConfigOptions): string {
  const inFlight = options.inferenceInFlight ?? INFERENCE_IN_FLIGHT;
  // One endpoint admits at most 4096 calls (config bound); more in flight means listing the same
  // backend several times, each entry its own actor.
  const entries = Math.max(1, Math.ceil(inFlight / INFERENCE_IN_FLIGHT));
  const per = Math.ceil(inFlight / entries);
  const url = JSON.stringify(options.backendUrl);
  const inferenceEndpoints = Array.from({ length: entries }, () => `{ url: ${url}, maxConcurrency: ${per} }`);
  return [
    'cluster:',
    `  namespace: ${options.namespace ?? uniqueNamespace('bench')}`,
    'broker:',
    `  url: ${JSON.stringify(options.brokerUrl ?? 'memory:')}`,
    'ingress:',
    '  host: 127.0.0.1',
    '  port: 0',
    `  sessionSecret: ${JSON.stringify(options.sessionSecret ?? randomBytes(16).toString('hex'))}`,
    '  drainGrace: 2s',
    'worker:',
    '  drainGrace: 2s',
    'pools:',
    '  inference:',
    '    backend: openai-chat',
    `    endpoints: [${inferenceEndpoints.join(', ')}]`,
    `    maxInFlight: ${inFlight}`,
    ...(options.inferencePoolYaml ?? []).map((line) => `    ${line}`),
    '  embeddings:',
    '    backend: openai-embeddings',
    `    endpoints: [{ url: ${url} }]`,
    'tools:',
    '  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm, deadline: 120s }',
    '  - name: embed',
    '    template: embed',
    '    pool: embeddings',
    '    model: sim-embed',
    '    deadline: 60s',
    `    cache: { enabled: ${options.embedCache === true} }`,
    ...(options.embedBackgroundPause
      ? [`    batch: { backgroundPause: ${options.embedBackgroundPause} }`]
      : []),
    ...(options.extraYaml ? [options.extraYaml] : []),
    '',
  ].join('\n');
}

/** The resolved bench configuration (for the single-process servers), environment ignored. */
export function benchConfig(options: BenchConfigOptions): ResolvedConfig {
  return families.resolveConfig(benchConfigYaml(options), {}, 'bench config');
}
